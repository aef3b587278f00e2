"""The signal catalog against the runbooks that read it: a runbook can only fire on a signal the live loop
produces, so every signal a shipped runbook names must be in the catalog, with a source the loop reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from sequestra.controller.loop import PolicyLoop
from sequestra.controller.runbooks import RunbookCatalog
from sequestra.controller.sequestrations import Context
from sequestra.diagnosis import default_runbooks_dir, load_runbooks
from sequestra.model.policy import SequestrationPolicySpec
from sequestra.settings import Settings
from sequestra.signals.catalog import CATALOG, DEFAULT_SIGNALS, signals_read_by, unproducible

CRD = Path(__file__).resolve().parents[2] / "crds" / "sequestra.dev_sequestrationpolicies.yaml"


def _runbook(name: str, signal: str, verify: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"match": {"signals": [{"name": signal, "direction": "up", "ratioAtLeast": 3}]},
                               "diagnosis": {"category": "x", "explanation": "because"},
                               "action": {"rung": "observe"}}
    if verify:
        spec["verify"] = [{"signal": verify, "ratioAtMost": 2}]
    return {"kind": "SequestrationRunbook", "metadata": {"name": name}, "spec": spec}


def test_every_signal_a_shipped_runbook_reads_is_produced_by_the_live_loop() -> None:
    runbooks = load_runbooks(default_runbooks_dir())
    missing = unproducible(runbooks)
    assert not missing, "\n".join(missing)
    # And the check has something to check: the shipped runbooks read signals of every source.
    read = signals_read_by(runbooks)
    assert {CATALOG[name].source for name in read} >= {"prometheus", "kafka"}


def test_a_runbook_naming_a_signal_nobody_produces_is_reported_by_runbook_and_signal() -> None:
    runbooks = load_runbooks([_runbook("latency-spike", "http_latency_p99_seconds"),
                              _runbook("flood", "kafka_producer_byte_rate", verify="kafka_produce_latency")])
    assert unproducible(runbooks) == [
        "runbook flood reads signal 'kafka_produce_latency', which the signal catalog cannot produce",
        "runbook latency-spike reads signal 'http_latency_p99_seconds', which the signal catalog cannot produce",
    ]


def test_the_any_signal_wildcard_is_not_taken_for_a_signal_name() -> None:
    assert unproducible(load_runbooks([_runbook("peak", "*")])) == []


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_signal_has_a_positive_floor_and_a_query_only_where_prometheus_answers(name: str) -> None:
    signal = CATALOG[name]
    assert signal.floor > 0
    if signal.source == "prometheus":
        assert signal.query and signal.subject != "workload"
        # Pod and Spark series are limited to the policy's namespaces; Kafka clients carry no namespace.
        assert ("{namespaces}" in signal.query) == (signal.subject != "kafka_client")
    else:
        assert signal.query == "" and signal.subject == "workload"


def test_default_signals_are_in_the_catalog() -> None:
    assert set(DEFAULT_SIGNALS) <= set(CATALOG)


def test_a_policy_replaces_a_prometheus_query_for_its_own_exporter_names() -> None:
    spec = SequestrationPolicySpec.model_validate({
        "ladder": [{"name": "observe"}],
        "signals": [{"name": "http_request_rate",
                     "query": 'sum by (namespace, pod) (rate(myapp_hits_total{namespace=~"{namespaces}"}[1m]))'}]})
    query = spec.signals[0].query
    rendered = CATALOG["http_request_rate"].render(["shop", "pay.prod"], query)
    assert rendered == 'sum by (namespace, pod) (rate(myapp_hits_total{namespace=~"pay\\\\.prod|shop"}[1m]))'
    assert "http_requests_total" in CATALOG["http_request_rate"].render(["shop"])


def test_the_policy_crd_accepts_the_query_the_model_reads() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(schema["signals"]["items"]["properties"]) == {"name", "threshold", "query"}


def test_the_loop_reads_the_signals_its_runbooks_need_besides_those_the_policy_counts() -> None:
    api = client.ApiClient()  # nothing is called: the shipped runbooks only, no cluster objects read
    ctx = Context(Settings(), api)
    ctx.diagnoser = RunbookCatalog(api, str(default_runbooks_dir()), "sequestra-system", llm=None)
    loop = PolicyLoop(ctx, "shop", "web")
    spec = SequestrationPolicySpec.model_validate({"ladder": [{"name": "observe"}],
                                                   "signals": [{"name": "cpu_usage_cores"}]})
    evidence = {d.name for d in loop._evidence_definitions(spec, ["shop"])}
    assert evidence == set(signals_read_by(load_runbooks(default_runbooks_dir()))) - {"cpu_usage_cores"}
    assert {"oom_kills", "http_error_ratio", "kafka_rebalance_rate", "kafka_partition_count"} <= evidence


def test_one_workloads_evidence_reads_its_own_pods_not_its_whole_namespace() -> None:
    cpu = CATALOG["cpu_usage_cores"]
    assert 'pod=~".+"' in cpu.render(["shop"])  # every pod of the policy's namespaces, each interval
    assert 'pod=~"web-1|web-2"' in cpu.render(["shop"], pods=["web-2", "web-1"])
    assert 'pod=~"^$"' in cpu.render(["shop"], pods=[])  # a workload without pods has no pod series
    assert "{pods}" not in CATALOG["oom_kills"].render(["shop"]) and "{pods}" not in CATALOG["http_error_ratio"].render(
        ["shop"], pods=["api-1"])
    assert CATALOG["spark_executors"].render(["data"], pods=["x"]) == CATALOG["spark_executors"].render(["data"])


@pytest.mark.parametrize(("scrape_s", "short", "long"), [(5.0, "[30s]", "[60s]"), (15.0, "[60s]", "[60s]"),
                                                         (30.0, "[120s]", "[120s]"), (60.0, "[240s]", "[240s]")])
def test_rate_windows_hold_four_scrapes_of_the_clusters_prometheus(scrape_s: float, short: str, long: str) -> None:
    from sequestra.signals.catalog import CATALOG

    assert short in CATALOG["cpu_usage_cores"].render(["shop"], scrape_interval_s=scrape_s)
    assert long in CATALOG["http_request_rate"].render(["shop"], scrape_interval_s=scrape_s)
    assert long in CATALOG["http_error_ratio"].render(["shop"], scrape_interval_s=scrape_s)
    own = 'rate(my_total{namespace=~"{namespaces}"}[{rate}])'
    assert CATALOG["cpu_usage_cores"].render(["shop"], own, scrape_interval_s=scrape_s) == \
        f'rate(my_total{{namespace=~"shop"}}{short})', "a policy's own query gets the same windows"
