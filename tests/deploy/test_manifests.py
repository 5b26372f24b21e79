"""Static checks of deploy/: Kubernetes base and overlays, compose file, Dockerfile.

No cluster and no Docker engine are needed. The overlays are rendered by a small kustomize emulation
(resources, JSON 6902 patches, namespace, images: the only features the overlays may use); when
`kustomize` or `kubectl` is on the PATH the real renderer must produce the same objects. Each process's
Settings class must load from the environment the rendered manifests give its container.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = {"dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
OVERLAY_NAMESPACES = {"dev": "a62-registry-dev", "prod": "a62-registry"}
OVERLAY_ENVIRONMENTS = {"dev": "development", "prod": "production"}
BUILDS = ("base", "dev", "prod")

PART_OF = "a62-registry"
UID = 10001
DATA_DIR = "/var/lib/registry"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what containers must listen on
SECRETISH = re.compile(r"SECRET|PASSWORD|KEY|TOKEN|CREDENTIAL|DATABASE_URL", re.IGNORECASE)
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet", "ReplicaSet", "CronJob", "Pod"}


@dataclass(frozen=True)
class Process:
    name: str  # the migrate argument and env stem: party_sections
    port: int
    component: str  # gateway | service

    @property
    def k8s(self) -> str:
        return self.name.replace("_", "-")

    @property
    def module(self) -> str:
        return "gateway.main" if self.name == "gateway" else f"services.{self.name}.main"

    @property
    def port_env(self) -> str:
        return f"REGISTRY_{self.name.upper()}_PORT"

    @property
    def db_env(self) -> str:
        return f"REGISTRY_{self.name.upper()}_DATABASE_URL"

    @property
    def pod_labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.k8s,
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/component": self.component,
        }


PROCESSES = (
    Process("gateway", 8000, "gateway"),
    Process("party_sections", 8101, "service"),
    Process("transactions", 8102, "service"),
    Process("ars", 8103, "service"),
    Process("reporting", 8104, "service"),
)
GATEWAY = PROCESSES[0]
SERVICES = PROCESSES[1:]
JWKS_URL = "http://gateway:8000/.well-known/jwks.json"
# Where the services get their own tokens (POST /oauth2/token): the gateway Service, on its port.
GATEWAY_URL = "http://gateway:8000"
GATEWAY_SECRET_KEYS = (
    "REGISTRY_BOOTSTRAP_CLIENT_ID",
    "REGISTRY_BOOTSTRAP_CLIENT_SECRET",
    "REGISTRY_CLIENT_SECRET_KEY",
)
# The secret of the services' own OAuth clients (`svc-<service>`): the gateway creates the clients with
# it, every service obtains its token with it. A Secret of its own, so services never see the gateway's.
SERVICE_CLIENT_SECRET = "REGISTRY_SERVICE_CLIENT_SECRET"
SERVICE_CLIENT_SECRET_REF = {"name": "registry-service-client", "key": SERVICE_CLIENT_SECRET}
EXPECTED_SECRET_REFS = {
    *(("registry-database-urls", p.db_env) for p in PROCESSES),
    *(("registry-gateway-secrets", key) for key in GATEWAY_SECRET_KEYS),
    (SERVICE_CLIENT_SECRET_REF["name"], SERVICE_CLIENT_SECRET_REF["key"]),
    ("registry-signing-key", "signing-key.pem"),
    ("registry-irx-signing-key", "irx-signing-key.pem"),
    ("registry-webhook-secret-keys", "webhook-secret-keys"),
}
IRX_SIGNING_KEY_SECRET = "registry-irx-signing-key"
# The keys sealing webhook signing secrets at rest (services/reporting/webhooks_secrets.py): reporting only.
WEBHOOK_SECRET_KEYS_SECRET = "registry-webhook-secret-keys"


def _pid(p: Process) -> str:
    return p.name


# ---------------------------------------------------------------------------------------------------------
# loading and rendering


def load_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def yaml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def kustomization(directory: Path) -> dict[str, Any]:
    (doc,) = load_docs(directory / "kustomization.yaml")
    return doc


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), f"JSON pointer must start with '/': {path!r}"
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def apply_json6902(obj: dict[str, Any], ops: list[dict[str, Any]], where: str) -> None:
    for op in ops:
        parts = _pointer(op["path"])
        parent = _walk(obj, parts[:-1])
        last = parts[-1]
        kind = op["op"]
        if kind in ("replace", "remove", "test"):
            # kustomize refuses these on a missing path; so do we.
            exists = (last in parent) if isinstance(parent, dict) else (0 <= int(last) < len(parent))
            assert exists, f"{where}: {kind} {op['path']} on a path missing from {obj['metadata']['name']}"
        if kind == "test":
            assert _walk(obj, parts) == op["value"], f"{where}: test {op['path']} failed"
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind == "replace":
            parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        elif kind == "add":
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), value)
            else:
                parent[last] = value
        else:
            pytest.fail(f"{where}: JSON 6902 op {kind!r} is not supported by this test's renderer")


def target_matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    unsupported = set(target) - {"group", "version", "kind", "name"}
    assert not unsupported, f"patch target fields {unsupported} are not supported by this test's renderer"
    group, _, version = obj["apiVersion"].rpartition("/")
    return (
        obj["kind"] == target.get("kind", obj["kind"])
        and obj["metadata"]["name"] == target.get("name", obj["metadata"]["name"])
        and group == target.get("group", group)
        and version == target.get("version", version)
    )


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    if obj["kind"] == "Pod":
        return obj
    return obj["spec"]["template"]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return pod_template(obj)["spec"]


def _render(directory: Path) -> list[dict[str, Any]]:
    kust = kustomization(directory)
    unsupported = set(kust) - {"apiVersion", "kind", "resources", "patches", "namespace", "images"}
    assert not unsupported, (
        f"{directory.relative_to(ROOT)}/kustomization.yaml uses {sorted(unsupported)}; extend the test "
        "renderer if you need them (and never use a secretGenerator)"
    )
    objs: list[dict[str, Any]] = []
    for resource in kust.get("resources", []):
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory.relative_to(ROOT)}: resource {resource} does not exist"
        objs.extend(_render(path) if path.is_dir() else copy.deepcopy(load_docs(path)))
    for patch in kust.get("patches", []):
        where = f"{directory.relative_to(ROOT)}: patch {patch.get('path')}"
        assert set(patch) == {"path", "target"}, f"{where}: only file JSON 6902 patches with a target"
        ops = load_docs(directory / patch["path"])
        assert len(ops) == 1 and isinstance(ops[0], list), f"{where}: one JSON 6902 list per file"
        matched = [obj for obj in objs if target_matches(obj, patch["target"])]
        assert matched, f"{where}: target {patch['target']} matches nothing"
        for obj in matched:
            apply_json6902(obj, ops[0], where)
    if namespace := kust.get("namespace"):
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    for image in kust.get("images", []):
        for obj in objs:
            if obj["kind"] not in WORKLOAD_KINDS:
                continue
            for container in containers(obj):
                if container["image"].split("@")[0].split(":")[0] == image["name"]:
                    ref = image.get("newName", image["name"])
                    if "digest" in image:
                        ref += f"@{image['digest']}"
                    elif "newTag" in image:
                        ref += f":{image['newTag']}"
                    container["image"] = ref
    return objs


@cache
def _rendered(build: str) -> tuple[dict[str, Any], ...]:
    return tuple(_render(BASE if build == "base" else OVERLAYS[build]))


def rendered(build: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_rendered(build)))


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objs if obj["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in of_kind(objs, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name!r}, found {len(found)}"
    return found[0]


def workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objs if obj["kind"] in WORKLOAD_KINDS]


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics; an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [entry["name"] for entry in container.get("env", [])]
    assert len(names) == len(set(names)), f"{container['name']}: duplicate env names {names}"
    return {entry["name"]: entry for entry in container.get("env", [])}


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe or Service targetPort (number or name) resolved against the container's ports."""
    ports = container.get("ports", [])
    if isinstance(port, str) and not port.isdigit():
        named = [p["containerPort"] for p in ports if p.get("name") == port]
        assert len(named) == 1, f"{container['name']}: no single container port named {port!r}"
        return named[0]
    number = int(port)
    assert number in [p["containerPort"] for p in ports], f"{container['name']}: port {number} not declared"
    return number


def config_data(objs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return one(objs, "ConfigMap", name).get("data", {})


def effective_env(
    objs: list[dict[str, Any]], container: dict[str, Any], secrets: dict[tuple[str, str], str] | None = None
) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps (envFrom, in order), then `env`.

    A secretKeyRef resolves to `secrets[(name, key)]`, or to a marker when no value is given.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{container['name']}: envFrom {source}"
        env.update({k: str(v) for k, v in config_data(objs, source["configMapRef"]["name"]).items()})
    for name, entry in env_of(container).items():
        if "value" in entry:
            env[name] = str(entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[name] = (secrets or {}).get((ref["name"], ref["key"]), f"<secret {ref['name']}/{ref['key']}>")
    return env


def process_container(objs: list[dict[str, Any]], proc: Process) -> dict[str, Any]:
    deployment = one(objs, "Deployment", proc.k8s)
    app = [c for c in pod_spec(deployment)["containers"] if c["name"] == proc.k8s]
    assert len(app) == 1, f"Deployment {proc.k8s} must have a container named {proc.k8s}"
    return app[0]


_UNITS = {
    "m": 1e-3,
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi|Ti)?", str(value))
    assert match, f"not a Kubernetes quantity: {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


# ---------------------------------------------------------------------------------------------------------
# every file parses; kustomizations list their files


@pytest.mark.parametrize("path", yaml_files(DEPLOY), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_into_mappings(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        if path.parent.name in ("dev", "prod") and isinstance(doc, list):
            continue  # a JSON 6902 patch
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        if path.is_relative_to(K8S):
            assert {"apiVersion", "kind"} <= set(doc), f"{path}: a document lacks apiVersion/kind"


def test_deploy_tree_has_what_the_design_lists() -> None:
    for rel in (
        "Dockerfile",
        "Dockerfile.dockerignore",
        "compose.yaml",
        "postgres-init/create-databases.sql",
        "README.md",
        "k8s/base/kustomization.yaml",
        "k8s/overlays/dev/kustomization.yaml",
        "k8s/overlays/prod/kustomization.yaml",
    ):
        assert (DEPLOY / rel).is_file(), f"deploy/{rel} is missing"


def test_base_kustomization_lists_every_manifest_in_base() -> None:
    listed = set(kustomization(BASE)["resources"])
    present = {p.name for p in yaml_files(BASE) if p.name != "kustomization.yaml"}
    assert listed == present, f"unlisted: {present - listed}, missing: {listed - present}"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_lists_base_and_uses_all_its_files(overlay: str) -> None:
    directory = OVERLAYS[overlay]
    kust = kustomization(directory)
    assert "../../base" in kust["resources"]
    assert kust["namespace"] == OVERLAY_NAMESPACES[overlay]
    used = {r for r in kust["resources"] if not r.startswith("..")} | {p["path"] for p in kust["patches"]}
    present = {p.name for p in yaml_files(directory) if p.name != "kustomization.yaml"}
    assert used == present, f"files not used: {present - used}, used but missing: {used - present}"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_patches_target_resources_defined_in_base(overlay: str) -> None:
    base = rendered("base")
    patches = kustomization(OVERLAYS[overlay])["patches"]
    assert patches, "an overlay without patches cannot set its environment"
    for patch in patches:
        assert (OVERLAYS[overlay] / patch["path"]).is_file()
        hits = [obj for obj in base if target_matches(obj, patch["target"])]
        assert hits, f"{overlay}: patch {patch['path']} targets {patch['target']}, not defined in base"


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_is_labelled_part_of_the_registry(build: str) -> None:
    known = {p.k8s for p in PROCESSES}
    for obj in rendered(build):
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == PART_OF, where
        if "app.kubernetes.io/name" in labels:
            assert labels["app.kubernetes.io/name"] in known, where
            assert labels.get("app.kubernetes.io/component") in {"gateway", "service", "migration"}, where
        if obj["kind"] in WORKLOAD_KINDS:
            pod_labels = pod_template(obj)["metadata"]["labels"]
            assert pod_labels.get("app.kubernetes.io/part-of") == PART_OF, where
            assert pod_labels.get("app.kubernetes.io/name") in known, where


# ---------------------------------------------------------------------------------------------------------
# per process: Deployment, Service, probes, migration Job


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_deployment_runs_the_process_on_its_port(build: str, proc: Process) -> None:
    objs = rendered(build)
    deployment = one(objs, "Deployment", proc.k8s)
    assert deployment["metadata"]["labels"] == proc.pod_labels
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"] == proc.pod_labels
    assert selector_matches(deployment["spec"]["selector"], template["metadata"]["labels"])
    assert len(template["spec"]["containers"]) == 1
    container = process_container(objs, proc)
    assert container["command"] == ["python", "-m", proc.module]
    assert [p["containerPort"] for p in container["ports"]] == [proc.port]
    env = env_of(container)
    assert env[proc.port_env] == {"name": proc.port_env, "value": str(proc.port)}
    # the port variable of the process, and no other process's
    assert [name for name in env if re.fullmatch(r"REGISTRY_\w+_PORT", name)] == [proc.port_env]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(proc.port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_probes_hit_livez_and_readyz_on_the_process_port(build: str, proc: Process) -> None:
    container = process_container(rendered(build), proc)
    expected = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe_name, path in expected.items():
        assert probe_name in container, f"{proc.k8s}: {probe_name} missing"
        probe = container[probe_name]
        http = probe.get("httpGet")
        assert http, f"{proc.k8s}: {probe_name} must be an httpGet probe"
        assert http["path"] == path, f"{proc.k8s}: {probe_name} hits {http['path']}, not {path}"
        assert http.get("scheme", "HTTP") == "HTTP"
        assert container_port(container, http["port"]) == proc.port, f"{proc.k8s}: {probe_name} port"
        assert int(env_of(container)[proc.port_env]["value"]) == proc.port
    startup = container["startupProbe"]
    # give a slow start at least 30 s before liveness takes over
    assert startup.get("failureThreshold", 3) * startup.get("periodSeconds", 10) >= 30


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_service_routes_to_the_process_port_and_only_to_its_pods(build: str, proc: Process) -> None:
    objs = rendered(build)
    service = one(objs, "Service", proc.k8s)
    spec = service["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP"
    assert spec["selector"], "a Service without selector"
    deployment = one(objs, "Deployment", proc.k8s)
    assert selector_matches({"matchLabels": spec["selector"]}, pod_template(deployment)["metadata"]["labels"])
    for other in workloads(objs):
        if other is deployment:
            continue
        other_labels = pod_template(other)["metadata"]["labels"]
        assert not selector_matches({"matchLabels": spec["selector"]}, other_labels), (
            f"Service {proc.k8s} also selects {other['kind']}/{other['metadata']['name']}"
        )
    (port,) = spec["ports"]
    assert port["port"] == proc.port
    container = process_container(objs, proc)
    assert container_port(container, port["targetPort"]) == proc.port
    assert int(env_of(container)[proc.port_env]["value"]) == proc.port


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_migration_job_migrates_only_its_own_database(build: str, proc: Process) -> None:
    objs = rendered(build)
    job = one(objs, "Job", f"migrate-{proc.k8s}")
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    assert pod_template(job)["metadata"]["labels"]["app.kubernetes.io/name"] == proc.k8s
    spec = job["spec"]
    assert isinstance(spec.get("backoffLimit"), int) and 1 <= spec["backoffLimit"] <= 10
    assert isinstance(spec.get("ttlSecondsAfterFinished"), int) and spec["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["python", "-m", "scripts.migrate", proc.name]
    assert container["image"] == process_container(objs, proc)["image"], "migrate with the same image"
    env = env_of(container)
    assert env[proc.db_env]["valueFrom"]["secretKeyRef"] == {
        "name": "registry-database-urls",
        "key": proc.db_env,
    }
    assert [name for name in env if name.endswith("_DATABASE_URL")] == [proc.db_env]
    assert container.get("envFrom", []) == [{"configMapRef": {"name": "registry-config"}}]
    # nothing of the service-to-service wiring: no token endpoint, no service client secret
    everything = effective_env(objs, container)
    assert "REGISTRY_GATEWAY_URL" not in everything and SERVICE_CLIENT_SECRET not in everything


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_each_process_gets_only_its_own_database_url_from_the_secret(build: str, proc: Process) -> None:
    env = env_of(process_container(rendered(build), proc))
    assert env[proc.db_env]["valueFrom"]["secretKeyRef"] == {
        "name": "registry-database-urls",
        "key": proc.db_env,
    }
    assert [name for name in env if name.endswith("_DATABASE_URL")] == [proc.db_env]


# ---------------------------------------------------------------------------------------------------------
# configuration: ConfigMaps, JWKS, upstream URLs


@pytest.mark.parametrize("build", BUILDS)
def test_config_maps_point_at_the_services_and_the_gateway_jwks(build: str) -> None:
    objs = rendered(build)
    data = config_data(objs, "registry-config")
    assert data["REGISTRY_HOST"] == ALL_INTERFACES
    assert data["REGISTRY_DATA_DIR"] == DATA_DIR
    assert data["REGISTRY_ENVIRONMENT"] in {"development", "production"}
    for proc in SERVICES:
        url = data[f"REGISTRY_{proc.name.upper()}_URL"]
        assert url == f"http://{proc.k8s}:{proc.port}"
        assert one(objs, "Service", proc.k8s)["spec"]["ports"][0]["port"] == proc.port
    assert config_data(objs, "registry-service-config") == {
        "REGISTRY_JWKS_URL": JWKS_URL,
        "REGISTRY_GATEWAY_URL": GATEWAY_URL,
    }
    assert one(objs, "Service", "gateway")["spec"]["ports"][0]["port"] == GATEWAY.port
    assert "REGISTRY_GATEWAY_URL" not in config_data(objs, "registry-config"), "services only"
    for obj in of_kind(objs, "ConfigMap"):
        for key, value in obj.get("data", {}).items():
            assert not SECRETISH.search(key), f"ConfigMap {obj['metadata']['name']} holds secret-like {key}"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), f"credentials in ConfigMap {key}"


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_config_maps_are_wired_into_each_process(build: str, proc: Process) -> None:
    env_from = process_container(rendered(build), proc).get("envFrom", [])
    assert {"configMapRef": {"name": "registry-config"}} in env_from
    # Services verify tokens with the gateway's JWKS; the gateway must not fetch its own at startup.
    has_jwks = {"configMapRef": {"name": "registry-service-config"}} in env_from
    assert has_jwks is (proc.component == "service")


# ---------------------------------------------------------------------------------------------------------
# security: contexts, resources, volumes, secrets


@pytest.mark.parametrize("build", BUILDS)
def test_every_workload_runs_hardened_with_resources(build: str) -> None:
    objs = rendered(build)
    assert len(workloads(objs)) == 2 * len(PROCESSES), "five Deployments and five migration Jobs"
    problems: list[str] = []
    for obj in workloads(objs):
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        spec = pod_spec(obj)
        pod_sc = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{name}: {flag}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken must be false")
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("runAsUser") != UID:
            problems.append(f"{name}: pod securityContext must set runAsNonRoot and runAsUser {UID}")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: pod seccompProfile must be RuntimeDefault")
        mounts_needed = {"/tmp", DATA_DIR}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(obj):
            where = f"{name}/{container['name']}"
            sc = {**pod_sc, **container.get("securityContext", {})}
            if sc.get("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot")
            if sc.get("runAsUser") != UID:
                problems.append(f"{where}: runAsUser must be {UID}, is {sc.get('runAsUser')}")
            csc = container.get("securityContext", {})
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if csc.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in csc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities.drop ALL")
            if csc.get("capabilities", {}).get("add"):
                problems.append(f"{where}: adds capabilities")
            if csc.get("seccompProfile", {}).get("type", "RuntimeDefault") != "RuntimeDefault":
                problems.append(f"{where}: container seccompProfile overrides RuntimeDefault")
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in resources.get(section, {}):
                        problems.append(f"{where}: resources.{section}.{res} missing")
            for res in ("cpu", "memory"):
                req, lim = resources.get("requests", {}).get(res), resources.get("limits", {}).get(res)
                if req is not None and lim is not None and quantity(req) > quantity(lim):
                    problems.append(f"{where}: {res} request {req} above limit {lim}")
            mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            for path in mounts_needed:
                volume = volumes.get(mounted.get(path, ""), {})
                if "emptyDir" not in volume:
                    problems.append(f"{where}: {path} must be an emptyDir volume (read-only root)")
    assert not problems, "\n".join(problems)


def _secret_volume_paths(obj: dict[str, Any], container: dict[str, Any]) -> list[str]:
    secret_volumes = {v["name"] for v in pod_spec(obj).get("volumes", []) if "secret" in v}
    return [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in secret_volumes]


@pytest.mark.parametrize("build", BUILDS)
def test_secret_like_env_vars_come_from_secrets_never_literals(build: str) -> None:
    problems: list[str] = []
    for obj in workloads(rendered(build)):
        for container in containers(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            for env_from in container.get("envFrom", []):
                if "secretRef" in env_from:
                    problems.append(f"{where}: envFrom secretRef hands over a whole Secret; use secretKeyRef")
            for name, entry in env_of(container).items():
                if not SECRETISH.search(name):
                    continue
                if name.endswith("_FILE") and "value" in entry:
                    # a path, allowed only into a mounted secret volume
                    if not any(
                        entry["value"].startswith(p + "/") for p in _secret_volume_paths(obj, container)
                    ):
                        problems.append(f"{where}: {name} does not point into a mounted Secret volume")
                    continue
                if "value" in entry or "secretKeyRef" not in entry.get("valueFrom", {}):
                    problems.append(f"{where}: {name} must come from valueFrom.secretKeyRef")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", yaml_files(K8S), ids=lambda p: str(p.relative_to(K8S)))
def test_no_secret_carries_data_in_any_manifest(path: Path) -> None:
    for doc in load_docs(path):
        if isinstance(doc, dict) and doc.get("kind") == "Secret":
            assert "data" not in doc and "stringData" not in doc, f"{path}: Secret with data"
        if isinstance(doc, dict) and doc.get("kind") == "Kustomization":
            assert "secretGenerator" not in doc, f"{path}: secretGenerator puts secrets in git"


@pytest.mark.parametrize("build", BUILDS)
def test_no_secret_objects_are_rendered(build: str) -> None:
    assert of_kind(rendered(build), "Secret") == []


def _secret_refs(objs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    refs: set[tuple[str, str]] = set()
    for obj in workloads(objs):
        for container in containers(obj):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
        for volume in pod_spec(obj).get("volumes", []):
            if "secret" in volume:
                secret = volume["secret"]
                assert secret.get("items"), f"volume {volume['name']}: list the keys it needs in items"
                refs.update((secret["secretName"], item["key"]) for item in secret["items"])
    return refs


@pytest.mark.parametrize("build", BUILDS)
def test_secret_names_and_keys_are_the_documented_contract(build: str) -> None:
    refs = _secret_refs(rendered(build))
    assert refs == EXPECTED_SECRET_REFS
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for name, key in sorted(refs):
        assert f"`{name}`" in readme and f"`{key}`" in readme, f"README does not document {name}/{key}"


@pytest.mark.parametrize("build", BUILDS)
def test_only_the_gateway_gets_gateway_secrets_and_the_signing_key(build: str) -> None:
    objs = rendered(build)
    gateway = one(objs, "Deployment", "gateway")
    container = process_container(objs, GATEWAY)
    env = env_of(container)
    for key in GATEWAY_SECRET_KEYS:
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "registry-gateway-secrets", "key": key}
    (volume,) = [v for v in pod_spec(gateway)["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "registry-signing-key"
    assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0, "signing key readable by others"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount.get("readOnly") is True and "subPath" not in mount
    (item,) = volume["secret"]["items"]
    assert env["REGISTRY_SIGNING_KEY_FILE"]["value"] == f"{mount['mountPath']}/{item['path']}"
    for obj in workloads(objs):
        if obj is gateway:
            continue
        refs = _secret_refs([obj])
        allowed = {"registry-database-urls", SERVICE_CLIENT_SECRET_REF["name"]}
        if obj["metadata"]["name"] == "transactions":
            allowed.add(IRX_SIGNING_KEY_SECRET)
        if obj["metadata"]["name"] == "reporting" and obj["kind"] == "Deployment":
            allowed.add(WEBHOOK_SECRET_KEYS_SECRET)
        assert {name for name, _ in refs} <= allowed, obj["metadata"]["name"]


@pytest.mark.parametrize("build", BUILDS)
def test_only_transactions_gets_the_irx_signing_key_read_only(build: str) -> None:
    objs = rendered(build)
    transactions = one(objs, "Deployment", "transactions")
    container = process_container(objs, next(p for p in PROCESSES if p.k8s == "transactions"))
    (volume,) = [v for v in pod_spec(transactions)["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == IRX_SIGNING_KEY_SECRET
    assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0, "IRX signing key readable by others"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount.get("readOnly") is True and "subPath" not in mount
    (item,) = volume["secret"]["items"]
    assert (
        env_of(container)["REGISTRY_IRX_SIGNING_KEY_FILE"]["value"] == f"{mount['mountPath']}/{item['path']}"
    )
    for obj in workloads(objs):
        if obj is not transactions:
            assert IRX_SIGNING_KEY_SECRET not in {name for name, _ in _secret_refs([obj])}, obj["metadata"][
                "name"
            ]


@pytest.mark.parametrize("build", BUILDS)
def test_only_reporting_gets_the_webhook_secret_keys_read_only(build: str) -> None:
    objs = rendered(build)
    reporting = one(objs, "Deployment", "reporting")
    container = process_container(objs, next(p for p in PROCESSES if p.k8s == "reporting"))
    (volume,) = [v for v in pod_spec(reporting)["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == WEBHOOK_SECRET_KEYS_SECRET
    assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0, "webhook secret keys readable by others"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount.get("readOnly") is True and "subPath" not in mount
    (item,) = volume["secret"]["items"]
    assert (
        env_of(container)["REGISTRY_WEBHOOK_SECRET_KEYS_FILE"]["value"]
        == f"{mount['mountPath']}/{item['path']}"
    )
    for obj in workloads(objs):  # the migration Job included: it seals nothing
        if obj is not reporting:
            assert WEBHOOK_SECRET_KEYS_SECRET not in {name for name, _ in _secret_refs([obj])}, obj[
                "metadata"
            ]["name"]


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_gateway_and_every_service_get_the_service_client_secret_from_its_secret(
    build: str, proc: Process
) -> None:
    objs = rendered(build)
    container = process_container(objs, proc)
    entry = env_of(container)[SERVICE_CLIENT_SECRET]
    assert entry == {"name": SERVICE_CLIENT_SECRET, "valueFrom": {"secretKeyRef": SERVICE_CLIENT_SECRET_REF}}
    assert not [e for e in container.get("envFrom", []) if "secretRef" in e]
    expected = {
        ("registry-database-urls", proc.db_env),
        (SERVICE_CLIENT_SECRET_REF["name"], SERVICE_CLIENT_SECRET_REF["key"]),
    }
    if proc is GATEWAY:
        expected |= {("registry-gateway-secrets", key) for key in GATEWAY_SECRET_KEYS}
        expected.add(("registry-signing-key", "signing-key.pem"))
    if proc.k8s == "transactions":
        expected.add((IRX_SIGNING_KEY_SECRET, "irx-signing-key.pem"))
    if proc.k8s == "reporting":
        expected.add((WEBHOOK_SECRET_KEYS_SECRET, "webhook-secret-keys"))
    assert _secret_refs([one(objs, "Deployment", proc.k8s)]) == expected


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_services_reach_the_gateway_token_endpoint_through_its_service(build: str, proc: Process) -> None:
    objs = rendered(build)
    env = effective_env(objs, process_container(objs, proc))
    if proc is GATEWAY:
        assert "REGISTRY_GATEWAY_URL" not in env, "the gateway does not call its own token endpoint"
        return
    url = env["REGISTRY_GATEWAY_URL"]
    assert url == GATEWAY_URL
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
    assert match, url
    service = one(objs, "Service", match.group(1))
    assert int(match.group(2)) in [port["port"] for port in service["spec"]["ports"]]
    gateway = one(objs, "Deployment", "gateway")
    assert selector_matches(
        {"matchLabels": service["spec"]["selector"]}, pod_template(gateway)["metadata"]["labels"]
    )


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_migration_job_receives_only_its_own_database_url_secret(build: str, proc: Process) -> None:
    # `scripts.migrate` resolves only REGISTRY_<NAME>_DATABASE_URL (scripts/processes.py), never the
    # process's full settings: no bootstrap secret, no HMAC key, no signing key, not even for the gateway.
    job = one(rendered(build), "Job", f"migrate-{proc.k8s}")
    assert _secret_refs([job]) == {("registry-database-urls", proc.db_env)}
    assert not [v["name"] for v in pod_spec(job).get("volumes", []) if "emptyDir" not in v]
    for container in containers(job):
        where = f"Job/migrate-{proc.k8s}/{container['name']}"
        assert not [e for e in container.get("envFrom", []) if "secretRef" in e], where
        secretish = [name for name in env_of(container) if SECRETISH.search(name)]
        assert secretish == [proc.db_env], f"{where}: {secretish}"


# ---------------------------------------------------------------------------------------------------------
# network policies


def _policies_selecting(objs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        np
        for np in of_kind(objs, "NetworkPolicy")
        if selector_matches(np["spec"].get("podSelector"), labels)
        and "Ingress" in np["spec"].get("policyTypes", ["Ingress"])
    ]


MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}
OTHER_NAMESPACES = (
    {},
    {"kubernetes.io/metadata.name": "default"},
    {"kubernetes.io/metadata.name": "kube-system"},
)
# pods a service port must never be opened to
FOREIGN_PODS = (
    {},
    {"app": "anything"},
    {"app.kubernetes.io/component": "service"},  # not part of the registry
    {"app.kubernetes.io/component": "gateway"},
    {"app.kubernetes.io/part-of": PART_OF},  # no component
    {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": "migration"},
)


def _peer_kind(peer: dict[str, Any]) -> str:
    """'registry-pods', 'monitoring', or a description of why the peer is too wide."""
    if "ipBlock" in peer:
        return "ipBlock"
    if "namespaceSelector" in peer:
        ns_sel = peer["namespaceSelector"]
        if peer.get("podSelector"):
            return "namespace+pod selector"
        if not selector_matches(ns_sel, MONITORING_NS):
            return "a namespace other than monitoring"
        if any(selector_matches(ns_sel, other) for other in OTHER_NAMESPACES):
            return "namespaces beyond monitoring"
        return "monitoring"
    pod_sel = peer.get("podSelector")
    if pod_sel is None:
        return "empty peer"
    if any(selector_matches(pod_sel, foreign) for foreign in FOREIGN_PODS):
        return "pods outside the registry's gateway and services"
    return "registry-pods"


@pytest.mark.parametrize("build", BUILDS)
def test_ingress_is_denied_by_default(build: str) -> None:
    deny = [
        np
        for np in of_kind(rendered(build), "NetworkPolicy")
        if np["spec"].get("podSelector") in ({}, None)
        and "Ingress" in np["spec"].get("policyTypes", [])
        and not np["spec"].get("ingress")
    ]
    assert deny, "no default-deny ingress policy"
    for np in of_kind(rendered(build), "NetworkPolicy"):
        if np["spec"].get("podSelector") in ({}, None):
            assert not np["spec"].get("ingress"), f"{np['metadata']['name']} opens every pod"


@pytest.mark.parametrize("build", BUILDS)
def test_gateway_accepts_ingress_from_anywhere_on_its_port(build: str) -> None:
    policies = _policies_selecting(rendered(build), GATEWAY.pod_labels)
    open_rules = [
        rule
        for np in policies
        for rule in np["spec"].get("ingress", [])
        if not rule.get("from")
        and any(p.get("port") in (GATEWAY.port, "http") for p in rule.get("ports", []))
    ]
    assert open_rules, "the gateway is not reachable on 8000"
    for np in policies:
        for rule in np["spec"].get("ingress", []):
            ports = [p.get("port") for p in rule.get("ports", [])]
            assert ports and set(ports) <= {GATEWAY.port, "http"}, f"{np['metadata']['name']} opens {ports}"


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", SERVICES, ids=_pid)
def test_service_accepts_only_gateway_services_and_monitoring(build: str, proc: Process) -> None:
    objs = rendered(build)
    policies = _policies_selecting(objs, proc.pod_labels)
    kinds: set[str] = set()
    gateway_admitted = False
    for np in policies:
        for rule in np["spec"].get("ingress", []):
            name = np["metadata"]["name"]
            peers = rule.get("from")
            assert peers, f"{name}: a rule without 'from' opens {proc.k8s} to everyone"
            ports = [p.get("port") for p in rule.get("ports", [])]
            assert ports and set(ports) <= {proc.port, "http"}, f"{name}: opens ports {ports or 'all'}"
            for peer in peers:
                kind = _peer_kind(peer)
                assert kind in {"registry-pods", "monitoring"}, f"{name}: peer {peer} admits {kind}"
                kinds.add(kind)
                if kind == "registry-pods" and selector_matches(peer["podSelector"], GATEWAY.pod_labels):
                    gateway_admitted = True
    assert gateway_admitted, f"{proc.k8s} does not admit the gateway"
    assert kinds == {"registry-pods", "monitoring"}, f"{proc.k8s}: admitted peers {kinds}"
    # services call one another (DESIGN §1): every other service's pods get in
    for other in SERVICES:
        admitted = any(
            selector_matches(peer.get("podSelector"), other.pod_labels)
            for np in policies
            for rule in np["spec"].get("ingress", [])
            for peer in rule.get("from", [])
            if _peer_kind(peer) == "registry-pods"
        )
        assert admitted, f"{other.k8s} cannot reach {proc.k8s}"


# ---------------------------------------------------------------------------------------------------------
# the environment the manifests produce loads each process's settings


def _fake_secret_values() -> dict[tuple[str, str], str]:
    """Values an operator could put into the documented Secrets (long enough, not placeholders)."""
    values = {
        ("registry-database-urls", p.db_env): f"postgresql+asyncpg://{p.name}:pw@db:5432/registry_{p.name}"
        for p in PROCESSES
    }
    values[("registry-gateway-secrets", "REGISTRY_BOOTSTRAP_CLIENT_ID")] = "secretariat-bootstrap"
    values[("registry-gateway-secrets", "REGISTRY_BOOTSTRAP_CLIENT_SECRET")] = "Zq7" * 12
    values[("registry-gateway-secrets", "REGISTRY_CLIENT_SECRET_KEY")] = "Hm4" * 16
    values[(SERVICE_CLIENT_SECRET_REF["name"], SERVICE_CLIENT_SECRET_REF["key"])] = "Sv9" * 12
    return values


def _use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith("REGISTRY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_process_settings_load_from_the_rendered_environment(
    build: str, proc: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = rendered(build)
    secrets = _fake_secret_values()
    _use_env(monkeypatch, effective_env(objs, process_container(objs, proc), secrets))
    package = "gateway" if proc is GATEWAY else f"services.{proc.name}"
    settings = import_module(f"{package}.config").Settings()
    assert settings.environment.value == config_data(objs, "registry-config")["REGISTRY_ENVIRONMENT"]
    assert settings.port == proc.port
    assert settings.resolved_database_url == secrets[("registry-database-urls", proc.db_env)]
    assert settings.service_client_secret is not None
    assert (
        settings.service_client_secret.get_secret_value()
        == secrets[("registry-service-client", SERVICE_CLIENT_SECRET)]
    )
    if proc is not GATEWAY:
        assert settings.gateway_url == GATEWAY_URL
        assert settings.jwks_url == JWKS_URL
        assert settings.service_client_id == f"svc-{proc.name}"
    if (
        proc.k8s == "reporting"
    ):  # the variable's name is the setting's, or production would start without keys
        assert settings.webhook_secret_keys_file is not None


def test_production_gateway_refuses_to_start_without_the_service_client_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objs = rendered("prod")
    env = effective_env(objs, process_container(objs, GATEWAY), _fake_secret_values())
    del env[SERVICE_CLIENT_SECRET]
    _use_env(monkeypatch, env)
    with pytest.raises(ValueError, match=SERVICE_CLIENT_SECRET):
        import_module("gateway.config").Settings()


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_migration_job_environment_resolves_its_database_url(
    build: str, proc: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = rendered(build)
    (container,) = containers(one(objs, "Job", f"migrate-{proc.k8s}"))
    secrets = _fake_secret_values()
    _use_env(monkeypatch, effective_env(objs, container, secrets))
    url = import_module("scripts.processes").by_name(proc.name).database_url()
    assert url == secrets[("registry-database-urls", proc.db_env)]


# ---------------------------------------------------------------------------------------------------------
# overlays


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_sets_namespace_and_environment(overlay: str) -> None:
    objs = rendered(overlay)
    namespace = OVERLAY_NAMESPACES[overlay]
    ns = one(objs, "Namespace", namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]
    assert config_data(objs, "registry-config")["REGISTRY_ENVIRONMENT"] == OVERLAY_ENVIRONMENTS[overlay]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_pins_the_image(overlay: str) -> None:
    for obj in workloads(rendered(overlay)):
        for container in containers(obj):
            image = container["image"]
            assert "@sha256:" in image or re.search(r":[\w.-]+$", image.split("/")[-1]), image
            assert not image.endswith(":latest"), image


def test_dev_runs_one_small_replica_each() -> None:
    base, dev = rendered("base"), rendered("dev")
    for proc in PROCESSES:
        assert one(dev, "Deployment", proc.k8s)["spec"]["replicas"] == 1
        small = process_container(dev, proc)["resources"]
        full = process_container(base, proc)["resources"]
        for section in ("requests", "limits"):
            for res in ("cpu", "memory"):
                assert quantity(small[section][res]) <= quantity(full[section][res]), (proc.k8s, section, res)
        assert small != full, f"dev does not shrink {proc.k8s}"


def test_prod_runs_two_replicas_with_disruption_budgets() -> None:
    prod = rendered("prod")
    jobs_pod_labels = [pod_template(job)["metadata"]["labels"] for job in of_kind(prod, "Job")]
    pdbs = of_kind(prod, "PodDisruptionBudget")
    for proc in PROCESSES:
        deployment = one(prod, "Deployment", proc.k8s)
        replicas = deployment["spec"]["replicas"]
        assert replicas >= 2, f"{proc.k8s} runs {replicas} replica(s) in prod"
        labels = pod_template(deployment)["metadata"]["labels"]
        covering = [pdb for pdb in pdbs if selector_matches(pdb["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{proc.k8s}: {len(covering)} PodDisruptionBudgets"
        (pdb,) = covering
        assert not any(selector_matches(pdb["spec"]["selector"], job) for job in jobs_pod_labels)
        if "minAvailable" in pdb["spec"]:
            assert 1 <= pdb["spec"]["minAvailable"] < replicas
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1
    for hpa in of_kind(prod, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        one(prod, "Deployment", target["name"])
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def _kustomize_command() -> list[str] | None:
    if tool := shutil.which("kustomize"):
        return [tool, "build"]
    if tool := shutil.which("kubectl"):
        return [tool, "kustomize"]
    return None


@pytest.mark.parametrize("build", BUILDS)
def test_real_kustomize_renders_what_the_checks_saw(build: str) -> None:
    command = _kustomize_command()
    if command is None:
        # Only the comparison with the real renderer needs one; every check above ran on the built-in
        # rendering of the same manifests, so nothing the deploy/ tree ships goes unchecked.
        pytest.skip("neither kustomize nor kubectl on PATH: cannot compare with the real kustomize render")
    directory = BASE if build == "base" else OVERLAYS[build]
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr

    def key(obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        return f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"

    real = {key(obj): obj for obj in yaml.safe_load_all(out.stdout) if obj}
    ours = {key(obj): obj for obj in rendered(build)}
    assert sorted(real) == sorted(ours)
    for name, obj in ours.items():
        assert json.dumps(real[name], sort_keys=True) == json.dumps(obj, sort_keys=True), name


# ---------------------------------------------------------------------------------------------------------
# compose


@cache
def _compose() -> dict[str, Any]:
    (doc,) = load_docs(DEPLOY / "compose.yaml")
    return doc


def compose() -> dict[str, Any]:
    return copy.deepcopy(_compose())


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment"
    return {k: str(v) for k, v in env.items()}


def created_databases() -> set[str]:
    sql = (DEPLOY / "postgres-init" / "create-databases.sql").read_text(encoding="utf-8")
    return set(re.findall(r"^\s*CREATE DATABASE\s+(\w+)\s*;", sql, flags=re.IGNORECASE | re.MULTILINE))


def test_compose_has_postgres_every_process_and_its_migration() -> None:
    expected = {"postgres"} | {p.k8s for p in PROCESSES} | {f"migrate-{p.k8s}" for p in PROCESSES}
    assert set(compose()["services"]) == expected


def test_compose_postgres_is_16_healthchecked_and_creates_one_database_per_process() -> None:
    postgres = compose()["services"]["postgres"]
    assert postgres["image"].split(":")[1].split(".")[0].split("-")[0] == "16"
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (" ".join(test) if isinstance(test, list) else test)
    assert "./postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert created_databases() == {f"registry_{p.name}" for p in PROCESSES}
    assert "ports" not in postgres
    assert not SECRETISH.search(postgres["environment"].get("POSTGRES_USER", ""))


@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_compose_migration_job_gates_its_process(proc: Process) -> None:
    services = compose()["services"]
    migrate = services[f"migrate-{proc.k8s}"]
    assert migrate["command"] == ["python", "-m", "scripts.migrate", proc.name]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    process = services[proc.k8s]
    assert process["command"] == ["python", "-m", proc.module]
    assert process["depends_on"][f"migrate-{proc.k8s}"] == {"condition": "service_completed_successfully"}
    assert process["image"] == migrate["image"] == services["gateway"]["image"]
    db_url = compose_env(process)[proc.db_env]
    assert db_url == compose_env(migrate)[proc.db_env]
    match = re.fullmatch(r"postgresql\+asyncpg://(\w+):(\$\{[^}]+\})@postgres:5432/(\w+)", db_url)
    assert match, f"{proc.db_env}: {db_url}"
    assert match.group(3) == f"registry_{proc.name}" and match.group(3) in created_databases()
    assert [k for k in compose_env(process) if k.endswith("_DATABASE_URL")] == [proc.db_env]


@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_compose_process_env_port_and_hardening(proc: Process) -> None:
    services = compose()["services"]
    process = services[proc.k8s]
    env = compose_env(process)
    assert env[proc.port_env] == str(proc.port)
    assert env["REGISTRY_HOST"] == ALL_INTERFACES
    assert env["REGISTRY_DATA_DIR"] == DATA_DIR
    for other in SERVICES:
        assert env[f"REGISTRY_{other.name.upper()}_URL"] == f"http://{other.k8s}:{other.port}"
    assert ("REGISTRY_JWKS_URL" in env) is (proc.component == "service")
    assert ("REGISTRY_GATEWAY_URL" in env) is (proc.component == "service")
    if proc.component == "service":
        assert env["REGISTRY_JWKS_URL"] == JWKS_URL
        assert env["REGISTRY_GATEWAY_URL"] == GATEWAY_URL
        gateway_env = compose_env(services["gateway"])
        assert f"http://{GATEWAY.k8s}:{gateway_env[GATEWAY.port_env]}" == GATEWAY_URL
    for name in (proc.k8s, f"migrate-{proc.k8s}"):
        svc = services[name]
        assert str(svc["user"]).split(":")[0] == str(UID), name
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert {"/tmp", DATA_DIR} <= {t.split(":")[0] for t in svc["tmpfs"]}, name
    if proc.component == "service":
        assert str(proc.port) in [str(p) for p in process.get("expose", [])]


def _published_container_ports(ports: list[Any]) -> list[int]:
    result = []
    for port in ports:
        if isinstance(port, dict):
            result.append(int(port["target"]))
        else:
            result.append(int(str(port).split(":")[-1].split("/")[0]))
    return result


def test_compose_publishes_only_the_gateway_on_8000() -> None:
    services = compose()["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"gateway"}
    assert _published_container_ports(services["gateway"]["ports"]) == [8000]


def _interpolations(value: str) -> list[tuple[str, str | None]]:
    """(variable, default or None) for every ${...} in a compose value."""
    found = []
    for body in re.findall(r"\$\{([^}]*)\}", value):
        match = re.fullmatch(r"(\w+)(?:(:?[-?])(.*))?", body)
        assert match, f"unparsable interpolation ${{{body}}}"
        var, op, default = match.groups()
        found.append((var, default if op in (":-", "-") else None))
    return found


def test_compose_secrets_are_interpolated_or_files_never_literals() -> None:
    problems: list[str] = []
    for name, svc in compose()["services"].items():
        for key, value in compose_env(svc).items():
            for var, default in _interpolations(value):
                secretish = SECRETISH.search(var) or SECRETISH.search(key)
                if secretish and default is not None and "dev-only-placeholder" not in default:
                    problems.append(f"{name}: {key} defaults ${{{var}}} to an unmarked value")
            if not SECRETISH.search(key):
                continue
            if key.endswith("_FILE"):
                if not value.startswith("/run/secrets/"):
                    problems.append(f"{name}: {key} must point at a compose secret under /run/secrets/")
            elif key.endswith("DATABASE_URL"):
                if not re.search(r"://[^:/@]+:\$\{[^}]+\}@", value):
                    problems.append(f"{name}: {key} must take its password from an interpolation")
            elif not re.fullmatch(r"\$\{[^}]+\}", value):
                problems.append(f"{name}: {key} must be a single ${{VARIABLE}} interpolation, not a literal")
    assert not problems, "\n".join(problems)


def test_compose_gateway_signing_key_is_a_git_ignored_compose_secret() -> None:
    doc = compose()
    gateway = doc["services"]["gateway"]
    assert gateway["secrets"] == ["signing_key"]
    assert compose_env(gateway)["REGISTRY_SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
    for key in GATEWAY_SECRET_KEYS:
        assert key in compose_env(gateway)
    source = doc["secrets"]["signing_key"]["file"]
    assert source.startswith("./secrets/")
    ignore = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert "secrets/" in ignore
    for name, svc in doc["services"].items():
        if name == "transactions":  # its own IRX message-signing key, nothing of the gateway's
            assert svc["secrets"] == ["irx_signing_key"]
            assert compose_env(svc)["REGISTRY_IRX_SIGNING_KEY_FILE"] == "/run/secrets/irx_signing_key"
            assert doc["secrets"]["irx_signing_key"]["file"].startswith("./secrets/")
        elif name == "reporting":  # the keys sealing its webhook secrets at rest
            assert svc["secrets"] == ["webhook_secret_keys"]
            assert compose_env(svc)["REGISTRY_WEBHOOK_SECRET_KEYS_FILE"] == "/run/secrets/webhook_secret_keys"
            assert doc["secrets"]["webhook_secret_keys"]["file"].startswith("./secrets/")
        elif name != "gateway":
            assert "secrets" not in svc, f"{name} gets a compose secret"
        if name != "gateway":
            assert not any(k in compose_env(svc) for k in GATEWAY_SECRET_KEYS), name


@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_compose_gateway_and_services_share_the_service_client_secret(proc: Process) -> None:
    value = compose_env(compose()["services"][proc.k8s])[SERVICE_CLIENT_SECRET]
    assert re.fullmatch(r"\$\{REGISTRY_SERVICE_CLIENT_SECRET:-dev-only-placeholder-[\w-]+\}", value), value
    # the same secret everywhere, or the services' tokens are refused
    assert value == compose_env(compose()["services"]["gateway"])[SERVICE_CLIENT_SECRET]


@pytest.mark.parametrize("proc", PROCESSES, ids=_pid)
def test_compose_migration_job_receives_only_its_own_database_url_secret(proc: Process) -> None:
    migrate = compose()["services"][f"migrate-{proc.k8s}"]
    assert "secrets" not in migrate, "a migration needs no compose secret (no signing key)"
    assert "env_file" not in migrate, "an env_file could hand the migration any secret"
    assert not [v for v in migrate.get("volumes", []) if "secret" in str(v)]
    secretish = [key for key in compose_env(migrate) if SECRETISH.search(key)]
    assert secretish == [proc.db_env], f"migrate-{proc.k8s}: {secretish}"
    assert "REGISTRY_GATEWAY_URL" not in compose_env(migrate)


# ---------------------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in lines:
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        word, _, rest = buffer.partition(" ")
        instructions.append((word.upper(), rest.strip()))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a continuation"
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _env_pairs(args: str) -> dict[str, str]:
    tokens = shlex.split(args)
    if len(tokens) >= 2 and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}  # legacy `ENV KEY value`
    return dict(token.split("=", 1) for token in tokens)


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    froms = [stage[0][1].split() for stage in stages]
    assert any(f[-2:][0].upper() == "AS" and f[-1] == "builder" for f in froms if len(f) >= 3)
    final = stages[-1]
    assert final[0][1].split()[0] == "python:3.11-slim"
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user == str(UID), f"final USER is {users[-1]!r}"
    last_user = max(i for i, (word, _) in enumerate(final) if word == "USER")
    assert not any(word == "RUN" for word, _ in final[last_user:]), "RUN after USER runs as the app user"
    assert any(word == "RUN" and f"--uid {UID}" in args for word, args in final), "create the uid 10001 user"
    env: dict[str, str] = {}
    for word, args in final:
        if word == "ENV":
            env.update(_env_pairs(args))
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    cmds = [args for word, args in final if word == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["python", "-m", "gateway.main"], "exec-form CMD expected"
    copies = [args for word, args in final if word == "COPY"]
    assert copies and all(args.startswith("--from=builder") for args in copies), "runtime copies from builder"


def test_dockerfile_bakes_in_no_secret_and_no_healthcheck() -> None:
    instructions = dockerfile_instructions()
    assert "HEALTHCHECK" not in {word for word, _ in instructions}
    for word, args in instructions:
        if word in ("ENV", "ARG"):
            names = _env_pairs(args) if word == "ENV" else {args.split("=")[0]: ""}
            for name in names:
                assert not SECRETISH.search(name), f"{word} {name} would bake a secret into the image"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.pem|\.env|secrets", args), f"{word} {args}"


def test_dockerignore_allows_only_the_sources_the_builder_copies() -> None:
    rules = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert rules[0] == "*", "start from deny-all"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "contracts", "kit", "gateway", "services", "scripts"}
    for rule in ("**/*.pem", "**/.env", "**/__pycache__"):
        assert rule in rules, f"{rule} not excluded"
    for word, args in dockerfile_stages()[0]:
        if word == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is not in the build context"
