"""Notify's parts as the settings switch them on: a part whose URL is unset is off."""

from __future__ import annotations

import pytest


def test_settings_switch_parts_on_by_url() -> None:
    from sequestra.notify.setup import from_settings
    from sequestra.settings import Settings

    off = from_settings(Settings(alertmanager_url=None, digest_webhook_url=None, digest_slack_webhook_url=None,
                                 pager_alertmanager_url=None, pagerduty_url=None), start=False)
    assert (off.silences, off.digests, off.pager) == (None, None, None)
    on = from_settings(Settings(alertmanager_url="http://am:9093", digest_webhook_url="http://hook/json",
                                digest_slack_webhook_url="https://hooks.slack.example/services/T/B/secret",
                                pagerduty_url="http://pd/v2/enqueue", pagerduty_routing_key="key"), start=False)
    assert on.silences is not None and on.pager is not None and on.digests is not None
    assert [s.name for s in on.digests.sinks] == ["slack", "generic"]
    with pytest.raises(ValueError, match="routing key"):
        from_settings(Settings(pagerduty_url="http://pd/v2/enqueue", pagerduty_routing_key=None), start=False)
    on.close()
