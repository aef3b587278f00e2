"""The controller's notifications: a page with no Sequestration behind it points at the policy."""

from __future__ import annotations

import json

from sequestra.controller.notifications import Notifications
from sequestra.model.workload import WorkloadRef
from sequestra.notify.pager import PageReason
from sequestra.notify.receiver import WebhookReceiver
from sequestra.settings import Settings


def test_a_policy_wide_page_names_the_policy_and_offers_no_release() -> None:
    with WebhookReceiver() as receiver:
        notifications = Notifications(Settings(pager_alertmanager_url=receiver.url("").rstrip("/")))
        notifications.page_workload(None, "default", "shop", PageReason.CIRCUIT_BREAKER_OPEN, "breaker open")
        notifications.page_workload(WorkloadRef("shop", "Deployment", "payments"), "default", "shop",
                                    PageReason.PROTECTED_WORKLOAD, "protected workload misbehaves")
        posted = [json.dumps(item.body) for item in receiver.wait_for(2)]
        notifications.close()
    assert all("kubectl get sequestrationpolicy default -n shop" in body for body in posted), posted
    assert not any("sequestra release" in body for body in posted), posted
    assert "payments" in posted[1]
