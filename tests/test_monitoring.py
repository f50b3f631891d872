"""The monitoring component (deploy/components/monitoring): the Prometheus Operator's objects are
valid for its published schemas, scrape what the services serve, the alerts fire when they should
(promtool), and every metric the rules and the dashboard name is one something really serves."""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import prometheus_client
import pytest
import yaml
from prometheus_client.metrics_core import Metric

import services
import shared
from services.__main__ import SERVICES
from tests.test_deploy import DEPLOY, OVERLAYS, objects, rendered

COMPONENT = DEPLOY / "components" / "monitoring"
OPERATOR_VERSION = "v0.93.0"
SCHEMAS = Path(__file__).parent / "schemas" / "prometheus-operator" / OPERATOR_VERSION
OPERATOR_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
DASHBOARD_ROWS = ["Fleet", "Gateway", "Bus", "Database"]

# Metrics the rules and the dashboard may name that our code does not serve, with their source.
EXTERNAL_METRICS = {
    # Prometheus itself, for every target.
    "up": "Prometheus",
    # kube-state-metrics (in kube-prometheus-stack).
    "kube_deployment_status_replicas_unavailable": "kube-state-metrics",
    # The NATS chart's exporter (prometheus-nats-exporter 0.20, -prefix=nats: collector/jsz.go and
    # the /varz fields).
    "nats_consumer_num_pending": "prometheus-nats-exporter -jsz",
    "nats_consumer_num_ack_pending": "prometheus-nats-exporter -jsz",
    "nats_stream_total_messages": "prometheus-nats-exporter -jsz",
    "nats_varz_connections": "prometheus-nats-exporter -varz",
    "nats_varz_slow_consumers": "prometheus-nats-exporter -varz",
}
# The sample names a metric family of each type exposes.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: `make test-tools` installs it (Debian's package prometheus:"
            " sudo apt-get install prometheus)"
        )
    return found


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, check=False)


def component_object(kind: str, name: str) -> dict[str, Any]:
    return objects("prod", kind)[name]


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = component_object("PrometheusRule", "signage")["spec"]["groups"]
    return groups


def write_rules(directory: Path, groups: list[dict[str, Any]]) -> Path:
    path = directory / "signage-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((COMPONENT / "dashboard.json").read_text())
    return loaded


def dashboard_queries() -> dict[str, str]:
    """Every panel's PromQL by panel id and refId, Grafana's `$__rate_interval` made a duration."""
    queries = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m")
            assert "$__" not in expr, (panel["title"], expr)
            queries[f"dashboard:panel_{panel['id']}_{target['refId']}"] = expr
    return queries


# ---- The objects --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_includes_the_component_in_its_namespace(overlay):
    namespace = objects(overlay, "Namespace").popitem()[0]
    found = {
        (doc["kind"], doc["metadata"]["name"]): doc["metadata"]["namespace"]
        for doc in rendered(overlay)
        if doc["kind"] in OPERATOR_KINDS or doc["metadata"]["name"] == "signage-dashboard"
    }
    assert found == {
        ("ServiceMonitor", "signage"): namespace,
        ("PodMonitor", "nats"): namespace,
        ("PrometheusRule", "signage"): namespace,
        ("ConfigMap", "signage-dashboard"): namespace,
    }


@cache
def operator_schema(kind: str) -> dict[str, Any]:
    """The CRD's schema, made strict as the API server's pruning is: a field the schema does not
    name would be dropped silently there, so it is an error here."""
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{kind.lower()}.json").read_text())

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def validate(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", doc["apiVersion"]
    # Not checked against the metaschema first: one of the CRD's patterns is Go's regex syntax
    # ("^(?i)(abort|warn)?$", on a field we do not set), which Python's re refuses.
    jsonschema.Draft7Validator(operator_schema(doc["kind"])).validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_operators_objects_are_valid_for_its_published_schemas(overlay):
    docs = [doc for doc in rendered(overlay) if doc["kind"] in OPERATOR_KINDS]
    assert sorted(doc["kind"] for doc in docs) == sorted(OPERATOR_KINDS)
    for doc in docs:
        try:
            validate(doc)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} ({OPERATOR_VERSION}): {exc}")


def test_the_schema_check_would_catch_a_mistake():
    """A misspelt field and a wrong type are both refused, in each kind."""
    monitor = copy.deepcopy(component_object("ServiceMonitor", "signage"))
    monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    monitor = copy.deepcopy(component_object("PodMonitor", "nats"))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = 30
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    rule = copy.deepcopy(component_object("PrometheusRule", "signage"))
    rule["spec"]["groups"][1]["rules"][0]["for"] = ["5m"]
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)
    rule = copy.deepcopy(component_object("PrometheusRule", "signage"))
    rule["spec"]["groups"][1]["rules"][0]["alertname"] = rule["spec"]["groups"][1]["rules"][0].pop("alert")
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions with In) against labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_monitor_scrapes_each_services_metrics_through_a_port_the_network_lets_in(overlay):
    (monitor,) = objects(overlay, "ServiceMonitor").values()
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = {
        name
        for name, service in objects(overlay, "Service").items()
        if selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    }
    assert scraped == set(SERVICES)
    for name in scraped:
        ports = {port["name"] for port in objects(overlay, "Service")[name]["spec"]["ports"]}
        assert endpoint["port"] in ports, (name, ports)
    assert endpoint["path"] == "/metrics"  # shared/app.py's route, on every service
    # kube-prometheus-stack's Prometheus runs in `monitoring`; the default-deny lets it in.
    policy = objects(overlay, "NetworkPolicy")["services-from-ingress"]["spec"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in policy[
        "ingress"
    ][0]["from"]
    assert policy["ingress"][0]["ports"] == [{"port": endpoint["port"]}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_monitor_scrapes_the_nats_charts_exporter(overlay):
    (monitor,) = objects(overlay, "PodMonitor").values()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # The chart's server pods (release "nats"), not its nats-box; the exporter's port name is the
    # chart's (files/stateful-set/prom-exporter-container.yaml), 7777 by default.
    assert monitor["spec"]["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/name": "nats",
            "app.kubernetes.io/instance": "nats",
            "app.kubernetes.io/component": "nats",
        }
    }
    assert endpoint["port"] == "prom-metrics"
    values = DEPLOY / "nats" / ("values-dev.yaml" if overlay == "dev" else "values.yaml")
    chart = yaml.safe_load(values.read_text())
    assert chart["promExporter"]["enabled"] is True
    assert chart["config"]["monitor"]["enabled"] is True  # what the exporter reads
    assert not chart["promExporter"].get("podMonitor", {}).get("enabled")  # ours, in the component
    policy = objects(overlay, "NetworkPolicy")["nats-from-services"]["spec"]
    assert any(
        {"port": chart["promExporter"].get("port", 7777)} in rule["ports"]
        and {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        in rule["from"]
        for rule in policy["ingress"]
    )


# ---- The rules ----------------------------------------------------------------------------------


def test_promtool_checks_the_rules(tmp_path):
    result = run_promtool("check", "rules", write_rules(tmp_path, rule_groups()))
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(group["rules"]) for group in rule_groups())
    assert f"SUCCESS: {count} rules found" in result.stdout


def promtool_unit_tests(tmp_path: Path, groups: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    write_rules(tmp_path, groups)
    shutil.copy(COMPONENT / "alerts.test.yaml", tmp_path)
    return run_promtool("test", "rules", tmp_path / "alerts.test.yaml")


def test_every_alert_fires_and_stays_quiet_as_its_promtool_unit_tests_expect(tmp_path):
    result = promtool_unit_tests(tmp_path, rule_groups())
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule}
    cases = [
        case
        for test in yaml.safe_load((COMPONENT / "alerts.test.yaml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == alerts, alerts - firing
    assert quiet == alerts, alerts - quiet


def test_the_unit_tests_would_catch_an_alert_that_never_fires(tmp_path):
    groups = copy.deepcopy(rule_groups())
    (rule,) = [rule for group in groups for rule in group["rules"] if rule.get("alert") == "SignageOutboxLag"]
    rule["expr"] = rule["expr"].replace("> 30", "> 3000")
    result = promtool_unit_tests(tmp_path, groups)
    assert result.returncode != 0
    assert "SignageOutboxLag" in result.stdout + result.stderr


# ---- The dashboard ------------------------------------------------------------------------------


def test_the_dashboard_has_its_rows_and_grafana_loads_it_from_the_config_map():
    board = dashboard()
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == DASHBOARD_ROWS
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    row = None
    filled: dict[str, int] = {}
    for panel in board["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        assert row is not None and panel["targets"], panel["title"]
        filled[row] = filled.get(row, 0) + 1
    assert set(filled) == set(DASHBOARD_ROWS)
    for overlay in OVERLAYS:
        config_map = objects(overlay, "ConfigMap")["signage-dashboard"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"]["signage.json"]) == board


def test_every_dashboard_query_is_promql(tmp_path):
    """promtool has no query parser of its own: the queries, as recording rules, go through
    `promtool check rules`, which parses each."""
    queries = dashboard_queries()
    rules = [{"record": name, "expr": expr} for name, expr in queries.items()]
    result = run_promtool("check", "rules", write_rules(tmp_path, [{"name": "dashboard", "rules": rules}]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout

    rules.append({"record": "dashboard:broken", "expr": "sum by (job (up)"})
    broken = write_rules(tmp_path, [{"name": "dashboard", "rules": rules}])
    assert run_promtool("check", "rules", broken).returncode != 0


# ---- The metrics' names -------------------------------------------------------------------------


def exposed_names(metric: Metric) -> set[str]:
    return {metric.name + suffix for suffix in _SUFFIXES.get(metric.type, ("",))}


@cache
def served_metrics() -> frozenset[str]:
    """The sample names our services serve: every module of services/ and shared/ imported, their
    metrics read back from prometheus_client's registry (the process's own, such as
    process_cpu_seconds_total, are left out: the gateway's workers do not serve them)."""
    for package in (services, shared):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    ours = {name for metric in prometheus_client.REGISTRY.collect() for name in exposed_names(metric)}
    process = prometheus_client.CollectorRegistry()
    prometheus_client.ProcessCollector(registry=process)
    prometheus_client.PlatformCollector(registry=process)
    prometheus_client.GCCollector(registry=process)
    theirs = {name for metric in process.collect() for name in exposed_names(metric)}
    return frozenset(ours - theirs)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*+)(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers,
    ranges, grouping clauses, function calls and keywords are taken out."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {name for name in _NAME.findall(expr) if name.lower() not in _KEYWORDS}


def test_metric_names_are_found_in_promql():
    expr = (
        'sum by (namespace) (rate(http_requests_total{service="device-gateway", status=~"429"}[5m]))'
        " / on (namespace) group_left max(signage:paired_devices:max) * 1e-3 or vector(0)"
        ' - label_replace(up, "durable", "$1", "job", "(.+)") > bool 0.5'
    )
    assert metric_names(expr) == {"http_requests_total", "signage:paired_devices:max", "up"}


def test_every_metric_the_rules_and_the_dashboard_read_is_served():
    recorded = {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}
    known = served_metrics() | set(EXTERNAL_METRICS) | recorded
    expressions = {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in rule_groups()
        for rule in group["rules"]
    }
    expressions |= dashboard_queries()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            expressions[variable["name"]] = re.sub(
                r"^label_values\((.*),[^,]*\)$", r"\1", variable["definition"]
            )
    unknown = {name: sorted(metric_names(expr) - known) for name, expr in expressions.items()}
    assert {name: names for name, names in unknown.items() if names} == {}
    # Each of ours the alerts were asked for is read somewhere.
    read = set().union(*(metric_names(expr) for expr in expressions.values()))
    for name in [
        "outbox_relay_lag_seconds",
        "consumer_pending_messages",
        "gateway_shed_requests_total",
        "dependency_up",
        "presence_transitions_total",
        "webhook_deliveries_total",
        "webhook_retry_backlog",
        "webhook_oldest_undelivered_age_seconds",
    ]:
        assert name in served_metrics() and name in read, name


def test_the_name_check_would_catch_a_renamed_metric():
    assert "webhook_deliveries_total" in served_metrics()
    assert "webhook_delivery_total" not in served_metrics()
    assert metric_names("rate(webhook_delivery_total[5m])") - served_metrics() == {"webhook_delivery_total"}
