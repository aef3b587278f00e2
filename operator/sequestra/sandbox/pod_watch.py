"""Following the API server's pods from a stand-in: a list, then watches resumed from the last version seen,
and a fresh list when a watch fails (the API server not up yet, or the version expired: 410). Shared by the
kubelet stand-in (workload_metrics) and the real node's pod discovery."""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol


class PodFollower(Protocol):
    def relist(self, pods: list[dict[str, Any]]) -> None: ...

    def event(self, kind: str, pod: dict[str, Any]) -> None: ...


def follow_pods(follower: PodFollower, kubeconfig: str, stop: threading.Event, *,
                field_selector: str | None = None, what: str = "pods") -> None:
    """Feed `follower` every pod (matching `field_selector`) until `stop`, as raw JSON: client models of 10k
    pods cost seconds to build."""
    from kubernetes import client, config, watch

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    while not stop.is_set():
        try:
            response: Any = api.list_pod_for_all_namespaces(field_selector=field_selector, _preload_content=False,
                                                            _request_timeout=60)
            listing = json.loads(response.data)
            follower.relist(listing["items"])
            version = listing["metadata"]["resourceVersion"]
            while not stop.is_set():  # each watch ends after a while; resumed from the last version seen
                stream = watch.Watch()
                for event in stream.stream(api.list_pod_for_all_namespaces, field_selector=field_selector,
                                           resource_version=version, timeout_seconds=30,
                                           allow_watch_bookmarks=True, deserialize=False):
                    version = event["object"]["metadata"].get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        follower.event(event["type"], event["object"])
                    if stop.is_set():
                        stream.stop()
        except Exception as exc:  # not up yet, or the version expired (410): list again
            print(f"following {what} failed, listing again: {exc}", flush=True)
            stop.wait(1.0)
