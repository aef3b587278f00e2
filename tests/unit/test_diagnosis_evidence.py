"""The evidence pack: bounded, deterministic, cited, and free of credentials."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from sequestra.diagnosis import build_evidence, redact, redact_text
from sequestra.model.workload import ChangeEvent, WorkloadRef

WORKLOAD = WorkloadRef("shop", "Deployment", "web")
SINCE = 1_763_900_000.0


def _signals() -> list[dict]:
    return [
        {"name": "cpu_usage_cores", "baseline": 0.5, "now": 1.0, "deviation": 3.0, "direction": "up", "since": SINCE},
        {"name": "kafka_producer_byte_rate", "baseline": 1e6, "now": 9e6, "deviation": 12.0, "direction": "up",
         "since": SINCE - 60},
    ]


def test_items_have_ids_and_a_fixed_order_whatever_the_input_order() -> None:
    changes = [ChangeEvent(SINCE - 600, WORKLOAD, "config", "ConfigMap web: A=1"),
               ChangeEvent(SINCE - 120, WORKLOAD, "revision", "web revision 3 -> 4")]
    events = [{"reason": "BackOff", "message": "restarting", "count": 2},
              {"reason": "Unhealthy", "message": "probe failed", "count": 9}]
    one = build_evidence("i", WORKLOAD, signals=_signals(), changes=changes, events=events,
                         spec={"replicas": 3}, kafka={"consumerGroups": [{"group": "g", "status": "STALL"}]})
    two = build_evidence("i", WORKLOAD, signals=_signals()[::-1], changes=changes[::-1], events=events[::-1],
                         spec={"replicas": 3}, kafka={"consumerGroups": [{"group": "g", "status": "STALL"}]})
    assert one == two
    assert [i.id for i in one.items] == ["sig:kafka_producer_byte_rate", "sig:cpu_usage_cores", "chg:1", "chg:2",
                                         "kafka:group:g", "evt:1", "evt:2", "spec"]
    assert one.get("chg:1").data["kind"] == "revision"  # newest change first
    assert one.get("chg:1").data["minutesBeforeAnomaly"] == 1.0  # anomaly began at the earliest signal
    assert one.get("evt:1").data["reason"] == "Unhealthy"  # most frequent event first
    assert one.get("sig:kafka_producer_byte_rate").data["ratio"] == 9.0
    assert "9.0x baseline" in one.get("sig:kafka_producer_byte_rate").summary


def test_credentials_are_redacted_by_name_and_by_shape() -> None:
    spec = {
        "env": [{"name": "DB_PASSWORD", "value": "correct-horse"}, {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "DATABASE_URL", "value": "postgres://app:s3cret@db:5432/app"}],
        "annotations": {"deploy/token": "abc", "owner": "team-a"},
        "images": ["registry.local/web@sha256:" + "a" * 64],
    }
    logs = ["auth header Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlc2lnbg",
            "using key AKIAABCDEFGHIJKLMNOP and password=hunter2 and sk-proj-abcdefghijklmnopqrstuv"]
    pack = build_evidence("i", WORKLOAD, spec=spec, logs=logs)
    text = json.dumps([i.model_dump() for i in pack.items])
    for secret in ("correct-horse", "s3cret", "hunter2", "AKIAABCDEFGHIJKLMNOP", "eyJhbGciOiJIUzI1NiJ9",
                   "sk-proj-abcdefghijklmnopqrstuv"):
        assert secret not in text, secret
    assert pack.get("spec").data["annotations"] == {"deploy/token": "[REDACTED]", "owner": "team-a"}
    assert {"name": "LOG_LEVEL", "value": "debug"} in pack.get("spec").data["env"]
    assert "sha256:" + "a" * 64 in text  # an image digest is evidence, not a secret


def test_the_pack_stays_within_its_token_budget_dropping_whole_items() -> None:
    events = [{"reason": f"Reason{n}", "message": "x" * 250, "count": 1} for n in range(60)]
    pack = build_evidence("i", WORKLOAD, signals=_signals(), events=events, token_budget=800)
    assert pack.tokens <= 800 and pack.omitted > 0
    assert len(pack.items) + pack.omitted == 62
    assert pack.items[0].id == "sig:kafka_producer_byte_rate"  # signals first: they are kept


def test_long_text_and_lists_are_clipped() -> None:
    pack = build_evidence("i", WORKLOAD, logs=["y" * 5000], spec={"revisions": list(range(100))})
    assert len(pack.get("log:1").data["line"]) <= 301
    assert pack.get("spec").data["revisions"][-1] == "... 80 more"


def test_missing_numbers_are_unknown_not_zero() -> None:
    pack = build_evidence("i", WORKLOAD, signals=[{"name": "kafka_consumer_lag", "now": 5.0}])
    item = pack.get("sig:kafka_consumer_lag")
    assert "ratio" not in item.data and item.summary.endswith("? -> 5")


@given(st.text(max_size=200))
def test_redaction_never_grows_a_secret_back_and_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


@given(st.dictionaries(st.sampled_from(["password", "apiKey", "secretRef", "clientToken"]), st.text(min_size=1)))
def test_values_under_credential_keys_are_always_redacted(values: dict[str, str]) -> None:
    assert set(redact(values).values()) <= {"[REDACTED]"}
