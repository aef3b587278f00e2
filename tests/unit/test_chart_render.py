"""What `helm template` makes of the chart's values: the settings a user sees, and the ones they cannot
get wrong (the schema refuses them; a template `fail`s with a reason)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from sequestra.diagnosis import llm
from sequestra.settings import Settings
from tests.unit.chart_render import CHART, ROOT, find, render, render_error, split_documents

pytestmark = pytest.mark.unit

EVERYTHING_ON = (
    "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
    "--set", "llm.enabled=true", "--set", "llm.apiKeySecret.name=llm-key", "--set", "llm.reviewModel=reviewer",
    "--set", "llm.boundedOutput=false",
    "--set", "kafka.bootstrapServers=kafka:9093", "--set", "kafka.credentialsSecret.name=kafka-creds",
    "--set", "alertmanager.webhook.tokenSecret.name=am-token",
    "--set", "notifications.digest.webhookUrl=https://chat.example/hook",
    "--set", "notifications.digest.slackWebhookSecret.name=slack",
    "--set", "notifications.page.pagerdutyUrl=https://events.pagerduty.com/v2/enqueue",
    "--set", "notifications.page.pagerdutyRoutingKeySecret.name=pd",
    "--set", "notifications.page.alertmanagerUrl=http://am:9093",
    "--set", "settings.loop_interval_s=30", "--set", "watchNamespaces={team-a,team-b}",
)


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_defaults_run_two_replicas_with_leader_election_non_root_and_read_only() -> None:
    docs = split_documents(render())
    deployment = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(docs)
    assert deployment["spec"]["replicas"] == 2
    assert {"run", "--standalone", "--leader-elect", "--lease-name=sequestra-leader", "--lease-duration=15",
            "--renew-period=5", "--liveness=http://0.0.0.0:8080/healthz"} <= set(container["args"])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": Settings().metrics_port, "webhook": Settings().alert_webhook_port, "health": 8080}
    service = find(docs, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"metrics": 19102, "webhook": 19103}
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert _env(container)["SEQUESTRA_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_first_install_is_dry_run_and_turning_it_off_uses_the_policy_mode() -> None:
    policy = find(split_documents(render()), "SequestrationPolicy", "default")
    assert policy["spec"]["mode"] == "dry-run"
    assert policy["metadata"]["namespace"] == "sequestra-system"
    assert find(split_documents(render("--set", "dryRun=false")), "SequestrationPolicy")["spec"]["mode"] == "approval"
    enforced = split_documents(render("--set", "dryRun=false", "--set", "defaultPolicy.mode=enforce"))
    assert find(enforced, "SequestrationPolicy")["spec"]["mode"] == "enforce"


def test_every_sequestra_setting_the_chart_sets_is_one_the_operator_reads() -> None:
    env = _env(_container(split_documents(render(*EVERYTHING_ON))))
    read_by_operator = {f"SEQUESTRA_{name.upper()}" for name in Settings.model_fields}
    # The LLM diagnoser reads these itself (diagnosis/llm.py LlmSettings.from_env).
    read_by_diagnoser = {name for name in llm.LlmSettings.from_env.__code__.co_consts
                         if isinstance(name, str) and name.startswith(("OPENAI_", "SEQUESTRA_LLM_"))}
    assert {"OPENAI_BASE_URL", "OPENAI_API_KEY", "SEQUESTRA_LLM_MODEL"} <= read_by_diagnoser
    unknown = {name for name in env if name.startswith(("SEQUESTRA_", "OPENAI_"))}
    unknown -= read_by_operator | read_by_diagnoser
    assert not unknown, f"the chart sets settings nothing reads: {sorted(unknown)}"
    secrets = {name: ref["secretKeyRef"]["name"] for name, ref in env.items()
               if isinstance(ref, dict) and "secretKeyRef" in ref}
    assert secrets == {"SEQUESTRA_ALERT_WEBHOOK_TOKEN": "am-token", "SEQUESTRA_KAFKA_USERNAME": "kafka-creds",
                       "SEQUESTRA_KAFKA_PASSWORD": "kafka-creds", "OPENAI_API_KEY": "llm-key",
                       "SEQUESTRA_DIGEST_SLACK_WEBHOOK_URL": "slack", "SEQUESTRA_PAGERDUTY_ROUTING_KEY": "pd"}
    assert env["SEQUESTRA_LOOP_INTERVAL_S"] == "30"


def test_llm_is_off_by_default() -> None:
    env = _env(_container(split_documents(render())))
    assert not {"OPENAI_BASE_URL", "OPENAI_API_KEY", "SEQUESTRA_LLM_MODEL"} & set(env)


def test_rbac_has_no_wildcards_and_reads_secrets_only_by_name_in_its_namespace() -> None:
    docs = split_documents(render(*EVERYTHING_ON))
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"wildcard in {role['metadata']['name']}: {rule}"
            if "secrets" in rule["resources"]:
                assert role["kind"] == "Role" and rule["verbs"] == ["get"]
                assert sorted(rule["resourceNames"]) == ["am-token", "kafka-creds", "llm-key", "pd", "slack"]
    default_roles = [d for d in split_documents(render()) if d["kind"] in ("ClusterRole", "Role")]
    assert not [r for role in default_roles for r in role["rules"] or [] if "secrets" in r["resources"]], \
        "no Secret is readable when none is configured"


def test_every_rbac_rule_says_which_code_uses_it() -> None:
    lines = (CHART / "templates" / "rbac.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            above = lines[number - 1].strip()
            assert above.startswith("#") or lines[number - 2].strip().startswith("#"), \
                f"rbac.yaml line {number + 1} has no comment: {line.strip()}"


def test_more_than_one_replica_needs_leader_election() -> None:
    error = render_error("--set", "leaderElection.enabled=false")
    assert "replicaCount > 1 needs leaderElection.enabled" in error
    single = split_documents(render("--set", "leaderElection.enabled=false", "--set", "replicaCount=1"))
    assert "--leader-elect" not in _container(single)["args"]
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    assert not [r for d in single if d["kind"] == "Role" for r in d["rules"] or []], "no Lease rights without it"


@pytest.mark.parametrize(("values", "says"), [
    (("--set", "dryRun=yes"), "dryRun"),
    (("--set", "replicas=2"), "additional properties 'replicas' not allowed"),
    (("--set", "llm.enabled=true"), "apiKeySecret/name"),
    (("--set", "service.metricsPort=70000"), "metricsPort"),
    (("--set", "defaultPolicy.mode=yolo"), "defaultPolicy/mode"),
    (("--set", "defaultPolicy.ladder[0].actions[0].type=delete"), "type"),
    (("--set", "image.digest=latest"), "image/digest"),
])
def test_the_values_schema_refuses_bad_values_with_a_pointer_to_them(values: tuple[str, ...], says: str) -> None:
    assert says in render_error(*values)


def test_values_and_schema_describe_the_same_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"])
    assert schema["additionalProperties"] is False
    text = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(text):
        if re.match(r"^[a-zA-Z]+:", line):
            assert text[number - 1].startswith("#") or text[number + 1].lstrip().startswith("#"), \
                f"values.yaml: `{line}` is not documented"


def test_monitoring_objects_render_when_enabled() -> None:
    docs = split_documents(render(*EVERYTHING_ON))
    monitor = find(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    rules = find(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {"SequestraOperatorDown", "SequestraActuatorErrors", "SequestraCircuitBreakerOpen"} <= {
        r["alert"] for r in rules}
    assert [a for a in _container(docs)["args"] if a.startswith("--namespace=")] == [
        "--namespace=team-a", "--namespace=team-b"]


def _metric_names_in_code() -> set[str]:
    names = set()
    for path in (ROOT / "operator" / "sequestra").rglob("*.py"):
        names |= set(re.findall(r"[\"'](sequestra_[a-z_]+)[\"']", path.read_text()))
    return names


def test_dashboard_charts_metrics_the_operator_exports() -> None:
    configmap = find(split_documents(render()), "ConfigMap", "release-sequestra-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["sequestra.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"sequestra_[a-z_]+", e)}
    placeholders = {"sequestra_llm_tokens_total", "sequestra_llm_errors_total"}  # the LLM diagnoser's, to come
    assert used - placeholders <= _metric_names_in_code(), used - placeholders - _metric_names_in_code()
    assert {"sequestra_sequestrations_active", "sequestra_decisions_total", "sequestra_actuator_duration_seconds",
            *placeholders} <= used


def test_node_ports_match_the_kind_cluster_port_mappings() -> None:
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for node in kind["nodes"] for m in node.get("extraPortMappings", [])}
    service = find(split_documents(render("--set", "service.type=NodePort")), "Service")
    assert {p["nodePort"] for p in service["spec"]["ports"]} == mapped
