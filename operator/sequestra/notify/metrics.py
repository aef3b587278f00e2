"""Notify's metrics (`sequestra_<noun>_<unit>`), served on the operator's /metrics with the rest.

Labels are small fixed sets (sink name, page target, page reason), never a workload or incident."""

from __future__ import annotations

from prometheus_client import Counter

DIGESTS_SENT = Counter("sequestra_digests_sent_total", "Digest messages delivered, per sink.", ["sink"])
DIGESTS_FAILED = Counter(
    "sequestra_digests_failed_total", "Digest messages given up on after retries, per sink.", ["sink"])
DIGEST_UPDATES = Counter(
    "sequestra_digest_updates_total", "Incident updates offered to the digest batcher (merged per window).")
PAGES_SENT = Counter("sequestra_pages_sent_total", "Pages delivered, per target and reason.", ["target", "reason"])
PAGES_FAILED = Counter("sequestra_pages_failed_total", "Pages given up on after retries, per target.", ["target"])
PAGES_RESOLVED = Counter("sequestra_pages_resolved_total", "Pages resolved, per target.", ["target"])
SILENCES_CREATED = Counter("sequestra_silences_created_total", "Alertmanager silences created.")
SILENCES_EXPIRED = Counter("sequestra_silences_expired_total", "Alertmanager silences expired on release.")
