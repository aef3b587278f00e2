"""Prometheus' targets among the real node's pods, served as HTTP service discovery (`http_sd_configs`).

Debian's Prometheus is built without `kubernetes_sd_configs`, so this small service does what that would:
it follows the pods of one node (one LIST, then a watch, with a field selector: KWOK's pods run nothing) and
answers `GET /targets` in http_sd's format with every container port named `metrics` of a Running pod, at
the pod's IP, which this machine routes to over the node's bridge. The chart's operator pods name their
metrics port so; a pod deleted and replaced (the leader's, in a failover) is followed to its new address
at Prometheus' next refresh.

    GET /targets   [{"targets": ["10.234.0.5:19102"], "labels": {"namespace": "ns", "pod": "name"}}, ...]
    GET /healthz
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sequestra.sandbox.pod_watch import follow_pods
from sequestra.sandbox.standin_http import StandInHandler

METRICS_PORT_NAME = "metrics"
Target = dict[str, Any]


def scrape_targets(pod: dict[str, Any]) -> list[Target]:
    """The http_sd target groups of one pod as the API server serves it (JSON): one per container port
    named `metrics`, none unless the pod is Running with an address."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ip:
        return []
    labels = {"namespace": meta["namespace"], "pod": meta["name"]}
    return [{"targets": [f"{ip}:{port['containerPort']}"], "labels": labels}
            for container in spec.get("containers") or [] for port in container.get("ports") or []
            if port.get("name") == METRICS_PORT_NAME]


class Targets:
    """The current target groups per pod, replaced from a LIST and updated from the watch's events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_pod: dict[tuple[str, str], list[Target]] = {}

    def relist(self, pods: list[dict[str, Any]]) -> None:
        fresh = {(p["metadata"]["namespace"], p["metadata"]["name"]): scrape_targets(p) for p in pods}
        with self._lock:
            self._by_pod = {key: groups for key, groups in fresh.items() if groups}

    def event(self, kind: str, pod: dict[str, Any]) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        groups = [] if kind == "DELETED" else scrape_targets(pod)
        with self._lock:
            if groups:
                self._by_pod[key] = groups
            else:
                self._by_pod.pop(key, None)

    def groups(self) -> list[Target]:
        with self._lock:
            return [group for key in sorted(self._by_pod) for group in self._by_pod[key]]


def make_handler(targets: Targets) -> type[BaseHTTPRequestHandler]:
    class Handler(StandInHandler):
        def do_GET(self) -> None:
            if self.path == "/targets":
                self._reply(200, json.dumps(targets.groups()))
            elif self.path == "/healthz":
                self._reply(200, "ok", "text/plain")
            else:
                self._reply(404, json.dumps({"error": f"no such path {self.path}"}))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True, help="the Node whose pods are followed")
    parser.add_argument("--state-dir", help="the sandbox directory (marks the process as the sandbox's)")
    args = parser.parse_args()
    targets = Targets()
    stop = threading.Event()
    following = {"field_selector": f"spec.nodeName={args.node}", "what": f"the pods of {args.node}"}
    threading.Thread(target=follow_pods, args=(targets, args.kubeconfig, stop), kwargs=following,
                     daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(targets))
    print(f"pod discovery for {args.node} on http://{args.host}:{args.port}/targets", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        stop.set()


if __name__ == "__main__":
    main()
