"""deploy/: render the kustomizations, validate what they produce, check it against the daemon.

There is no kustomize or kubectl binary in CI, so `render()` below builds a kustomization itself,
for exactly the features deploy/ uses (anything else fails loudly): resources (files and
directories), namespace, images, configMapGenerator (create/merge, envs/files/literals, options),
strategic-merge patches on built-in kinds and JSON6902 patches with targets. Custom resources are
only ever patched with JSON6902: how kustomize merges a list inside a custom resource depends on
its version, explicit JSON-pointer paths do not.

Then:
- every core object validates against the Kubernetes OpenAPI schemas shipped with
  kubernetes-validate (strict: unknown fields are errors), for the oldest supported version and the
  newest the package ships;
- custom resources (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) validate
  against structural schemas written here from the CRDs' specs, and the HPA that KEDA derives from
  the ScaledObject validates against the real autoscaling/v2 schema;
- the manifests agree with the daemon: probe paths and port, drain deadline vs grace period, the
  environment (loaded through consumer.config.load_settings), the consumer group, brokers and
  topics that KEDA watches, credentials as files from the Secret.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
KUSTOMIZATIONS = [BASE, OVERLAY]

# Kubernetes versions to validate against: the oldest we support (PodDisruptionBudget's
# unhealthyPodEvictionPolicy is on by default since 1.27; 1.30 is the oldest release still
# commonly supported by managed offerings) and the newest kubernetes-validate==1.37.0 ships.
K8S_VERSIONS = ("1.30", "1.37")

CORE_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
CLUSTER_SCOPED = {"Namespace"}

APP = "engagement-consumer"
PARTITIONS_ANNOTATION = "engagement-consumer/topic-partitions"

# TODO: fallbacks only for when consumer.config cannot be imported; its Settings is the truth.
FALLBACK_DEFAULTS = {
    "http_port": 9102,
    "shutdown_drain_s": 20.0,
    "kafka_group_id": "engagement-attributes",
    "lead_topics": ["engagement.leads"],
    "service_topics": ["engagement.services"],
}
# Time the daemon needs after its drain deadline: commit, close the consumer (leave the group),
# flush the dead-letter producer. terminationGracePeriodSeconds must cover drain + this.
SHUTDOWN_MARGIN_S = 10


def daemon_default(field: str) -> Any:
    try:
        from consumer.config import Settings
    except ImportError:
        return FALLBACK_DEFAULTS[field]
    info = Settings.model_fields[field]
    return info.default_factory() if info.default_factory else info.default


# --------------------------------------------------------------------------------------------
# A small kustomize.


class RenderError(AssertionError):
    pass


KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "images",
    "configMapGenerator",
    "patches",
}
GENERATOR_FIELDS = {"name", "behavior", "envs", "files", "literals", "options"}
GENERATOR_OPTIONS = {"labels", "annotations", "disableNameSuffixHash"}
PATCH_FIELDS = {"path", "patch", "target"}
TARGET_FIELDS = {"group", "version", "kind", "name", "namespace"}

# Strategic-merge keys of the lists deploy/ patches in built-in kinds (from the Kubernetes API's
# x-kubernetes-patch-merge-key). Any other list is replaced, as in the API.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}

ORIGIN = "x-render/origin-name"  # internal: a generated object's name before the hash suffix
HASHED = "x-render/hashed"


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def parse_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise RenderError(f"{path}:{n}: not KEY=VALUE: {line!r}")
        if key in out:
            raise RenderError(f"{path}:{n}: {key} set twice")
        out[key] = value
    return out


def group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def selected(resource: dict[str, Any], target: dict[str, str]) -> bool:
    if set(target) - TARGET_FIELDS:
        raise RenderError(f"unsupported patch target fields: {set(target) - TARGET_FIELDS}")
    group, version = group_version(resource["apiVersion"])
    meta = resource["metadata"]
    checks = {
        "group": group,
        "version": version,
        "kind": resource["kind"],
        "name": meta.get(ORIGIN, meta["name"]),
        "namespace": meta.get("namespace", ""),
    }
    return all(re.fullmatch(want, checks[key]) for key, want in target.items())


def strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise RenderError(f"strategic-merge directive {key} not supported here")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            strategic_merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list) and key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            for item in value:
                match = next((b for b in base[key] if b.get(merge_key) == item.get(merge_key)), None)
                if match is None:
                    base[key].append(copy.deepcopy(item))
                else:
                    strategic_merge(match, item)
        else:
            base[key] = copy.deepcopy(value)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer must start with /: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if kind == "test":
            current = node[int(last)] if isinstance(node, list) else node[last]
            if current != op["value"]:
                raise RenderError(f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            value = copy.deepcopy(op["value"])
            if isinstance(node, list):
                if last == "-":
                    node.append(value)
                elif kind == "add":
                    node.insert(int(last), value)
                else:
                    node[int(last)] = value
            else:
                if kind == "replace" and last not in node:
                    raise RenderError(f"replace of a missing member {op['path']}")
                node[last] = value
        elif kind == "remove":
            if isinstance(node, list):
                del node[int(last)]
            else:
                del node[last]
        else:
            raise RenderError(f"JSON patch op {kind!r} not supported here")


def generate_config_map(directory: Path, gen: dict[str, Any]) -> dict[str, Any]:
    if set(gen) - GENERATOR_FIELDS:
        raise RenderError(f"unsupported configMapGenerator fields: {set(gen) - GENERATOR_FIELDS}")
    data: dict[str, str] = {}
    for env in gen.get("envs", []):
        data.update(parse_env_file(directory / env))
    for spec in gen.get("files", []):
        key, sep, file = spec.partition("=")
        file = file if sep else key
        key = key if sep else Path(file).name
        data[key] = (directory / file).read_text()
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    options = gen.get("options", {})
    if set(options) - GENERATOR_OPTIONS:
        raise RenderError(f"unsupported generator options: {set(options) - GENERATOR_OPTIONS}")
    meta: dict[str, Any] = {"name": gen["name"], ORIGIN: gen["name"]}
    meta[HASHED] = not options.get("disableNameSuffixHash", False)
    if options.get("labels"):
        meta["labels"] = dict(options["labels"])
    if options.get("annotations"):
        meta["annotations"] = dict(options["annotations"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def pod_specs(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if resource["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield resource["spec"]["template"]["spec"]


def build(directory: Path) -> list[dict[str, Any]]:
    """One kustomization, without the final name-hash pass."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if set(k) - KUSTOMIZATION_FIELDS:
        raise RenderError(
            f"{directory}: kustomization fields not rendered here: {set(k) - KUSTOMIZATION_FIELDS}"
        )
    if (k.get("apiVersion"), k.get("kind")) != ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        raise RenderError(f"{directory}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    out: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        out.extend(build(path) if path.is_dir() else load_docs(path))

    for gen in k.get("configMapGenerator", []):
        behavior = gen.get("behavior", "create")
        made = generate_config_map(directory, gen)
        existing = [r for r in out if r["kind"] == "ConfigMap" and r["metadata"].get(ORIGIN) == gen["name"]]
        if behavior == "create":
            if existing:
                raise RenderError(f"ConfigMap {gen['name']} generated twice (use behavior: merge)")
            out.append(made)
        elif behavior in ("merge", "replace"):
            if len(existing) != 1:
                raise RenderError(f"behavior {behavior}: no generated ConfigMap {gen['name']} to {behavior}")
            target = existing[0]
            if behavior == "replace":
                target["data"] = {}
            target["data"].update(made["data"])
            for key in ("labels", "annotations"):
                if key in made["metadata"]:
                    target["metadata"].setdefault(key, {}).update(made["metadata"][key])
        else:
            raise RenderError(f"unknown generator behavior {behavior!r}")

    for patch in k.get("patches", []):
        if set(patch) - PATCH_FIELDS:
            raise RenderError(f"unsupported patch fields: {set(patch) - PATCH_FIELDS}")
        if "path" in patch:
            docs = load_docs(directory / patch["path"])
            body = docs[0] if len(docs) == 1 else docs
        else:
            body = yaml.safe_load(patch["patch"])
        target = patch.get("target")
        if isinstance(body, list):  # JSON6902
            if not target:
                raise RenderError("a JSON6902 patch needs a target")
            hits = [r for r in out if selected(r, target)]
            if not hits:
                raise RenderError(f"patch target {target} matches nothing")
            for resource in hits:
                json6902(resource, body)
            continue
        group, version = group_version(body["apiVersion"])
        target = target or {
            "group": group,
            "version": version,
            "kind": body["kind"],
            "name": re.escape(body["metadata"]["name"]),
        }
        hits = [r for r in out if selected(r, target)]
        if not hits:
            raise RenderError(f"patch target {target} matches nothing")
        for resource in hits:
            if resource["kind"] not in CORE_KINDS:
                raise RenderError(
                    f"strategic-merge patch on custom resource {resource['kind']}: use a JSON6902 patch"
                )
            strategic_merge(resource, {k2: v for k2, v in body.items() if k2 not in ("apiVersion", "kind")})

    for image in k.get("images", []):
        hits = 0
        for resource in out:
            for spec in pod_specs(resource):
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    name = re.split(r"[@]|:(?=[^/]*$)", container["image"])[0]
                    if name != image["name"]:
                        continue
                    hits += 1
                    tag = image.get("newTag") or container["image"][len(name) + 1 :]
                    new = image.get("newName", name)
                    container["image"] = f"{new}@{image['digest']}" if "digest" in image else f"{new}:{tag}"
        if not hits:
            raise RenderError(f"images: {image['name']} is used by no container")

    if "namespace" in k:
        for resource in out:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = k["namespace"]
    return out


def finalize(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give generated ConfigMaps their content-hash suffix and update the references to them."""
    renamed: dict[str, str] = {}
    for r in resources:
        meta = r["metadata"]
        origin = meta.pop(ORIGIN, None)
        if meta.pop(HASHED, False):
            digest = hashlib.sha256(json.dumps(r["data"], sort_keys=True).encode()).hexdigest()[:10]
            meta["name"] = f"{origin}-{digest}"
            renamed[origin] = meta["name"]
    for r in resources:
        for spec in pod_specs(r):
            for vol in spec.get("volumes", []):
                if "configMap" in vol:
                    vol["configMap"]["name"] = renamed.get(vol["configMap"]["name"], vol["configMap"]["name"])
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for src in c.get("envFrom", []):
                    if "configMapRef" in src:
                        ref = src["configMapRef"]
                        ref["name"] = renamed.get(ref["name"], ref["name"])
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        ref["name"] = renamed.get(ref["name"], ref["name"])
    return resources


_CACHE: dict[Path, list[dict[str, Any]]] = {}


def render(directory: Path) -> list[dict[str, Any]]:
    if directory not in _CACHE:
        _CACHE[directory] = finalize(build(directory))
    return copy.deepcopy(_CACHE[directory])


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def all_of(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    spec = one(resources, "Deployment", APP)["spec"]["template"]["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == APP]
    return c


def config_data(resources: list[dict[str, Any]]) -> dict[str, str]:
    """The daemon's environment from the ConfigMap(s) the container loads with envFrom."""
    data: dict[str, str] = {}
    maps = {r["metadata"]["name"]: r for r in all_of(resources, "ConfigMap")}
    for src in container(resources).get("envFrom", []):
        ref = src.get("configMapRef")
        if ref:
            data.update(maps[ref["name"]]["data"])
    return data


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    out = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    out.update(secret.get("stringData", {}))
    return out


def setting(resources: list[dict[str, Any]], env: str, field: str) -> str:
    value = config_data(resources).get(env)
    for e in container(resources).get("env", []):
        if e["name"] == env and "value" in e:
            value = e["value"]
    if value is None:
        default = daemon_default(field)
        return ",".join(default) if isinstance(default, list) else str(default)
    return value


def pod_spec(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return one(resources, "Deployment", APP)["spec"]["template"]["spec"]


def named_port(resources: list[dict[str, Any]], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (p,) = [p for p in container(resources)["ports"] if p["name"] == port]
    return int(p["containerPort"])


# --------------------------------------------------------------------------------------------
# The kustomizations themselves.


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_renders(directory: Path) -> None:
    resources = render(directory)
    keys = [(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in resources]
    assert len(keys) == len(set(keys)), "duplicate objects"
    kinds = {r["kind"] for r in resources}
    unknown = kinds - CORE_KINDS - CUSTOM_KINDS
    assert not unknown, f"kinds nobody validates: {unknown}"
    for r in resources:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", r["metadata"]["name"]), r["metadata"]["name"]
        assert len(r["metadata"]["name"]) <= 63 or r["kind"] in ("ConfigMap", "Secret")


def test_overlay_is_complete_and_namespaced() -> None:
    resources = render(OVERLAY)
    kinds = {r["kind"] for r in resources}
    assert kinds == CORE_KINDS | CUSTOM_KINDS, f"missing: {(CORE_KINDS | CUSTOM_KINDS) - kinds}"
    (ns,) = all_of(resources, "Namespace")
    for r in resources:
        if r["kind"] not in CLUSTER_SCOPED:
            assert r["metadata"]["namespace"] == ns["metadata"]["name"], r["metadata"]["name"]
    image = container(resources)["image"]
    assert re.fullmatch(r"[\w.\-/:]+:[\w.\-]+", image) and not image.endswith(":latest"), image


def test_every_file_in_deploy_is_used() -> None:
    used: set[Path] = set()

    def walk(directory: Path) -> None:
        used.add(directory / "kustomization.yaml")
        k = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for entry in k.get("resources", []):
            path = (directory / entry).resolve()
            if path.is_dir():
                walk(path)
            else:
                used.add(path)
        for gen in k.get("configMapGenerator", []):
            used.update(directory / e for e in gen.get("envs", []))
            used.update(directory / f.rpartition("=")[2] for f in gen.get("files", []))
        used.update(directory / p["path"] for p in k.get("patches", []) if "path" in p)

    walk(OVERLAY)
    files = {p.resolve() for p in DEPLOY.rglob("*") if p.is_file() and p.name != "README.md"}
    assert files - {u.resolve() for u in used} == set(), "files no kustomization uses"
    assert {u.resolve() for u in used} - files == set(), "kustomizations refer to missing files"


# --------------------------------------------------------------------------------------------
# Schemas.


def _validation_cases() -> list[Any]:
    cases = []
    for directory in KUSTOMIZATIONS:
        for r in render(directory):
            if r["kind"] in CORE_KINDS:
                rel = directory.relative_to(DEPLOY)
                cases.append(
                    pytest.param(
                        directory,
                        r["kind"],
                        r["metadata"]["name"],
                        id=f"{rel}:{r['kind']}/{r['metadata']['name']}",
                    )
                )
    return cases


@pytest.mark.parametrize(("directory", "kind", "name"), _validation_cases())
def test_core_objects_validate_against_kubernetes_schemas(directory: Path, kind: str, name: str) -> None:
    resource = one(render(directory), kind, name)
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{kind}/{name} invalid for Kubernetes {version} at {path}: {e.message}")


_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
    "additionalProperties": False,
}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": _STR_MAP, "matchExpressions": {"type": "array"}},
    "additionalProperties": False,
}
_DURATION = {
    "type": "string",
    "pattern": r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$",
}


def _crd(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
        "additionalProperties": False,
    }


# Structural schemas for the custom resources, written from the CRDs (prometheus-operator v0.7x
# monitoring.coreos.com/v1, KEDA 2.x keda.sh/v1alpha1), restricted to the fields deploy/ may use:
# an unknown or misspelt field is an error here as it would be for the API server.
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _crd(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
    "PrometheusRule": _crd(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr", "for", "labels", "annotations"],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": {
                                            **_STR_MAP,
                                            "required": ["severity"],
                                            "properties": {
                                                "severity": {"enum": ["critical", "warning", "info"]}
                                            },
                                        },
                                        "annotations": {
                                            **_STR_MAP,
                                            "required": ["summary", "description", "runbook"],
                                        },
                                    },
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    ),
    "ScaledObject": _crd(
        "keda.sh/v1alpha1",
        "ScaledObject",
        {
            "type": "object",
            "required": [
                "scaleTargetRef",
                "triggers",
                "minReplicaCount",
                "maxReplicaCount",
                "cooldownPeriod",
            ],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object", "required": ["failureThreshold", "replicas"]},
                "advanced": {
                    "type": "object",
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                            "additionalProperties": False,
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            # KEDA's metadata is map[string]string: an unquoted number is rejected.
                            "metadata": _STR_MAP,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {
                                        "enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]
                                    },
                                },
                                "additionalProperties": False,
                            },
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
    "TriggerAuthentication": _crd(
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        {
            "type": "object",
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                },
                "env": {"type": "array"},
            },
            "additionalProperties": False,
        },
    ),
}

# The kafka scaler's metadata keys (KEDA 2.12+ docs); anything else is a typo KEDA would ignore.
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "version",
    "partitionLimitation",
    "sasl",
    "tls",
    "unsafeSsl",
}


def _custom_cases() -> list[Any]:
    return [
        pytest.param(d, r["kind"], r["metadata"]["name"], id=f"{d.relative_to(DEPLOY)}:{r['kind']}")
        for d in KUSTOMIZATIONS
        for r in render(d)
        if r["kind"] in CUSTOM_KINDS
    ]


@pytest.mark.parametrize(("directory", "kind", "name"), _custom_cases())
def test_custom_resources_are_structurally_valid(directory: Path, kind: str, name: str) -> None:
    resource = one(render(directory), kind, name)
    try:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[kind]).validate(resource)
    except jsonschema.ValidationError as e:
        pytest.fail(f"{kind}/{name} at {'.'.join(map(str, e.path))}: {e.message}")


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_the_hpa_keda_creates_is_valid(directory: Path) -> None:
    """KEDA turns the ScaledObject into an autoscaling/v2 HPA: validate that one for real."""
    so = one(render(directory), "ScaledObject", APP)["spec"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{APP}"},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": so["scaleTargetRef"]["apiVersion"],
                "kind": so["scaleTargetRef"]["kind"],
                "name": so["scaleTargetRef"]["name"],
            },
            "minReplicas": max(1, so["minReplicaCount"]),
            "maxReplicas": so["maxReplicaCount"],
            "behavior": so.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {}),
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": "s0-kafka-lag"},
                        "target": {"type": "AverageValue", "averageValue": t["metadata"]["lagThreshold"]},
                    },
                }
                for t in so["triggers"]
            ],
        },
    }
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(hpa, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"HPA from the ScaledObject at {'.'.join(map(str, e.path))}: {e.message}")


# --------------------------------------------------------------------------------------------
# The Deployment and its companions agree with each other and with the daemon.


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_probes_ports_and_scraping_match_the_daemon(directory: Path) -> None:
    resources = render(directory)
    c = container(resources)
    port = int(setting(resources, "HTTP_PORT", "http_port"))
    assert port == daemon_default("http_port") or "HTTP_PORT" in config_data(resources)
    (metrics,) = [p for p in c["ports"] if p["name"] == "metrics"]
    assert metrics["containerPort"] == port, f"containerPort {metrics['containerPort']} != HTTP_PORT {port}"
    probes = {name: c[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert named_port(resources, probe["port"]) == port
    svc = one(resources, "Service", APP)
    (svc_port,) = svc["spec"]["ports"]
    assert named_port(resources, svc_port["targetPort"]) == port
    assert svc["spec"].get("publishNotReadyAddresses") is True, "halted (NotReady) pods must stay scraped"
    sm = one(resources, "ServiceMonitor", APP)
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc_port["name"] and endpoint["path"] == "/metrics"
    labels = svc["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items(), (
        "ServiceMonitor selects no Service"
    )


async def test_probe_and_scrape_paths_are_served_by_the_daemon() -> None:
    """The Deployment's probe paths and the ServiceMonitor's path, asked of the daemon's own server."""
    import aiohttp

    from consumer.health import HealthServer

    resources = render(OVERLAY)
    c = container(resources)
    (endpoint,) = one(resources, "ServiceMonitor", APP)["spec"]["endpoints"]
    ready: list[tuple[bool, str]] = [(True, "consuming")]
    server = HealthServer(0, lambda: (True, "alive"), lambda: ready[0], host="127.0.0.1")
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as session:

            async def status(path: str) -> int:
                async with session.get(base + path) as response:
                    await response.read()
                    return response.status

            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert await status(c[probe]["httpGet"]["path"]) == 200, probe
            ready[0] = (False, "halted: 401 from the API")
            assert await status(c["readinessProbe"]["httpGet"]["path"]) == 503
            assert await status(c["livenessProbe"]["httpGet"]["path"]) == 200, "halted is alive"
            async with session.get(base + endpoint["path"]) as response:
                assert response.status == 200
                assert "engagement_halted" in await response.text()
    finally:
        await server.stop()


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_selectors_select_the_pods(directory: Path) -> None:
    resources = render(directory)
    deployment = one(resources, "Deployment", APP)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": one(resources, "Service", APP)["spec"]["selector"],
        "PodDisruptionBudget": one(resources, "PodDisruptionBudget", APP)["spec"]["selector"]["matchLabels"],
    }
    for np in all_of(resources, "NetworkPolicy"):
        selectors[f"NetworkPolicy/{np['metadata']['name']}"] = np["spec"]["podSelector"]["matchLabels"]
    for tsc in pod_spec(resources).get("topologySpreadConstraints", []):
        selectors["topologySpread"] = tsc["labelSelector"]["matchLabels"]
    for what, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), f"{what} does not select the pods"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_grace_period_outlasts_the_drain(directory: Path) -> None:
    resources = render(directory)
    drain = float(setting(resources, "SHUTDOWN_DRAIN_S", "shutdown_drain_s"))
    grace = pod_spec(resources)["terminationGracePeriodSeconds"]
    assert grace > drain + SHUTDOWN_MARGIN_S, (
        f"terminationGracePeriodSeconds {grace} must exceed SHUTDOWN_DRAIN_S {drain} "
        f"+ {SHUTDOWN_MARGIN_S}s to commit and close"
    )


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_pod_is_locked_down(directory: Path) -> None:
    """Non-root, read-only root fs, no capabilities: the "restricted" Pod Security Standard and more."""
    resources = render(directory)
    spec = pod_spec(resources)
    c = container(resources)
    pod_sc, sc = spec["securityContext"], c["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert not sc.get("privileged")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key)
    assert all("hostPath" not in v for v in spec.get("volumes", []))
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "a writable /tmp on the read-only root fs"
    assert spec["automountServiceAccountToken"] is False
    assert (
        one(resources, "ServiceAccount", spec["serviceAccountName"])["automountServiceAccountToken"] is False
    )
    assert spec["enableServiceLinks"] is False, (
        "service links inject KAFKA_* variables for a Service named kafka"
    )
    resources_ = c["resources"]
    assert resources_["requests"]["cpu"] and resources_["requests"]["memory"]
    assert resources_["limits"]["memory"]
    deployment = one(resources, "Deployment", APP)
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count; apply must not reset it"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_credentials_are_files_from_a_secret(directory: Path) -> None:
    resources = render(directory)
    c = container(resources)
    spec = pod_spec(resources)
    volumes = {v["name"]: v for v in spec["volumes"]}
    secret_mounts = {}
    for m in c["volumeMounts"]:
        vol = volumes[m["name"]]
        if "secret" in vol:
            assert "subPath" not in m, "a subPath mount never sees a rotated Secret"
            assert m.get("readOnly") is True
            secret_mounts[m["mountPath"].rstrip("/")] = vol["secret"]
    env = {e["name"]: e for e in c.get("env", [])}
    config = config_data(resources)
    secrets = {s["metadata"]["name"]: s for s in all_of(resources, "Secret")}
    for name in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        assert name not in env and name not in config, f"{name} in plain text: use {name}_FILE"
        assert f"{name}_FILE" in env, f"{name}_FILE not set"
    # Any path the daemon is given under a Secret mount must be a key of that Secret.
    paths = {k: v for k, v in config.items() if v.startswith("/")}
    paths.update({k: e["value"] for k, e in env.items() if str(e.get("value", "")).startswith("/")})
    for var, path in paths.items():
        mount = next((m for m in secret_mounts if path.startswith(m + "/")), None)
        if mount is None:
            continue
        volume_secret = secret_mounts[mount]
        key = path[len(mount) + 1 :]
        secret = secrets.get(volume_secret["secretName"])
        if secret is None:
            assert directory == BASE, f"{var}: Secret {volume_secret['secretName']} is not in the overlay"
            continue
        assert key in secret_values(secret), (
            f"{var}={path}: no key {key!r} in Secret {secret['metadata']['name']}"
        )
    for key, value in config.items():
        if re.search(r"PASSWORD|SECRET|TOKEN", key) and not key.endswith(("_FILE", "_LOCATION")):
            pytest.fail(f"{key} looks like a credential in the ConfigMap: mount it from a Secret")
        assert not re.search(r"-----BEGIN|REPLACE_WITH", value), f"{key}: secret material in the ConfigMap"


def test_references_resolve_in_the_overlay() -> None:
    resources = render(OVERLAY)
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    spec = pod_spec(resources)
    refs = [("ServiceAccount", spec["serviceAccountName"])]
    for v in spec["volumes"]:
        if "secret" in v:
            refs.append(("Secret", v["secret"]["secretName"]))
        if "configMap" in v:
            refs.append(("ConfigMap", v["configMap"]["name"]))
    c = container(resources)
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            refs.append(("ConfigMap", src["configMapRef"]["name"]))
    secrets = {s["metadata"]["name"]: secret_values(s) for s in all_of(resources, "Secret")}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in secrets.get(ref["name"], {}), f"{e['name']}: no {ref['name']}/{ref['key']}"
    so = one(resources, "ScaledObject", APP)
    refs.append((so["spec"]["scaleTargetRef"]["kind"], so["spec"]["scaleTargetRef"]["name"]))
    for trigger in so["spec"]["triggers"]:
        if "authenticationRef" in trigger:
            refs.append(("TriggerAuthentication", trigger["authenticationRef"]["name"]))
    for ta in all_of(resources, "TriggerAuthentication"):
        for ref in ta["spec"].get("secretTargetRef", []):
            assert ref["key"] in secrets.get(ref["name"], {}), (
                f"TriggerAuthentication: no {ref['name']}/{ref['key']}"
            )
    missing = [ref for ref in refs if ref not in names]
    assert not missing, f"references to objects the overlay does not create: {missing}"


def _daemon_environment(resources: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    """The container's environment as the kubelet would build it, Secret mounts under tmp_path."""
    secrets = {s["metadata"]["name"]: secret_values(s) for s in all_of(resources, "Secret")}
    spec = pod_spec(resources)
    c = container(resources)
    volumes = {v["name"]: v for v in spec["volumes"]}
    remap: dict[str, str] = {}
    for m in c["volumeMounts"]:
        vol = volumes[m["name"]]
        local = tmp_path / m["name"]
        local.mkdir()
        remap[m["mountPath"].rstrip("/") + "/"] = str(local) + "/"
        if "secret" in vol:
            for key, value in secrets.get(vol["secret"]["secretName"], {}).items():
                (local / key).write_text(value)
    env = dict(config_data(resources))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    for key, value in env.items():
        for mount, local in remap.items():
            if value.startswith(mount):
                env[key] = local + value[len(mount) :]
    return env


def test_overlay_configuration_loads_in_the_daemon(tmp_path: Path) -> None:
    """The overlay's ConfigMap + env + Secret files, fed to the daemon's own configuration loader."""
    config = pytest.importorskip("consumer.config", reason="consumer.config not importable yet")
    resources = render(OVERLAY)
    env = _daemon_environment(resources, tmp_path)
    known = {name.upper() for name in config.Settings.model_fields}
    known |= {f"{name.upper()}_FILE" for name in config.SECRET_FIELDS}
    unknown = [k for k in env if not k.startswith("KAFKA_") and k not in known]
    assert not unknown, f"variables the daemon does not read (typos?): {unknown}"
    settings = config.load_settings(env)
    assert settings.http_port == named_port(resources, "metrics")
    assert settings.kafka_properties.get("sasl.password") == "REPLACE_WITH_KAFKA_PASSWORD"
    creds = settings.credentials()
    assert creds.consumer_key == "REPLACE_WITH_LP_CONSUMER_KEY"


def _partitions(so: dict[str, Any]) -> dict[str, int]:
    raw = so["metadata"].get("annotations", {}).get(PARTITIONS_ANNOTATION)
    assert raw, f"declare the topics' partition counts in the {PARTITIONS_ANNOTATION} annotation"
    out = {}
    for item in raw.split(","):
        topic, _, count = item.strip().partition("=")
        assert count.isdigit() and int(count) > 0, f"bad {PARTITIONS_ANNOTATION} entry {item!r}"
        out[topic] = int(count)
    return out


SASL_MECHANISMS = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_keda_scales_the_daemons_group_within_the_partitions(directory: Path) -> None:
    resources = render(directory)
    so = one(resources, "ScaledObject", APP)
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP}
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_TRIGGER_KEYS, f"unknown kafka scaler keys: {set(meta) - KAFKA_TRIGGER_KEYS}"

    # The same group, brokers and topics as the daemon.
    assert meta["consumerGroup"] == setting(resources, "KAFKA_GROUP_ID", "kafka_group_id")
    assert meta["bootstrapServers"] == config_data(resources)["KAFKA_BOOTSTRAP_SERVERS"]
    topics = set(setting(resources, "LEAD_TOPICS", "lead_topics").split(","))
    topics |= set(setting(resources, "SERVICE_TOPICS", "service_topics").split(","))
    partitions = _partitions(so)
    assert set(partitions) == topics, (
        f"{PARTITIONS_ANNOTATION} lists {set(partitions)}, the daemon reads {topics}"
    )
    assert "topic" not in meta or meta["topic"] in topics
    reset = config_data(resources).get("KAFKA_AUTO_OFFSET_RESET", "earliest")
    reset = {"smallest": "earliest", "beginning": "earliest", "largest": "latest", "end": "latest"}.get(
        reset, reset
    )
    assert meta["offsetResetPolicy"] == reset, "KEDA must count lag the way the consumer starts"

    # Bounds: never more consumers than partitions (the group uses the cooperative-sticky assignor,
    # which spreads the partitions of all its topics over all members).
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= sum(partitions.values())
    assert meta["allowIdleConsumers"] == "false"
    # No pointless rebalances: lag that does not move (halted, poisoned) does not scale out, and
    # scaling down waits for the lag to stay low.
    assert meta["excludePersistentLag"] == "true"
    assert int(meta["lagThreshold"]) > 0 and int(meta.get("activationLagThreshold", "0")) >= 0
    assert spec["cooldownPeriod"] >= 300
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert all(p["type"] == "Pods" and p["value"] == 1 for p in behavior["scaleDown"]["policies"])

    # KEDA talks to the brokers the way the daemon does.
    protocol = config_data(resources).get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol.startswith("SASL"):
        mechanism = config_data(resources).get("KAFKA_SASL_MECHANISM", "PLAIN").upper()
        assert meta.get("sasl") == SASL_MECHANISMS[mechanism]
        assert "authenticationRef" in trigger, "SASL needs a TriggerAuthentication with the credentials"
        ta = one(resources, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        params = {ref["parameter"] for ref in ta["spec"]["secretTargetRef"]}
        assert {"username", "password"} <= params
        if "KAFKA_SSL_CA_LOCATION" in config_data(resources):
            assert "ca" in params, "the daemon trusts a private CA; KEDA must too"
    else:
        assert meta.get("sasl", "none") == "none"
    assert (meta.get("tls") == "enable") == protocol.endswith("SSL")


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_network_policy_allows_only_kafka_the_api_and_dns(directory: Path) -> None:
    resources = render(directory)
    policies = all_of(resources, "NetworkPolicy")
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in policies), "default deny"
    kafka_ports = {
        int(b.rsplit(":", 1)[1]) for b in config_data(resources)["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    }
    allowed: set[tuple[str, int]] = set()
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to") and rule.get("ports"), "every egress rule names its peers and ports"
            ports = {(p.get("protocol", "TCP"), int(p["port"])) for p in rule["ports"]}
            allowed |= ports
            if ("TCP", 443) in ports:
                blocks = [peer["ipBlock"] for peer in rule["to"] if "ipBlock" in peer]
                for block in blocks:
                    assert block["cidr"] != "0.0.0.0/0" or {
                        "10.0.0.0/8",
                        "172.16.0.0/12",
                        "192.168.0.0/16",
                    } <= set(block.get("except", [])), (
                        "HTTPS to the internet, not to the cluster's private ranges"
                    )
        for rule in policy["spec"].get("ingress", []):
            assert [p["port"] for p in rule["ports"]] == ["metrics"], "only the metrics port is open"
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443)} <= allowed
    assert {("TCP", p) for p in kafka_ports} <= allowed, f"Kafka port(s) {kafka_ports} not allowed"
    extra = {port for _, port in allowed} - {53, 443} - kafka_ports - {9092, 9093}
    assert not extra, f"egress to unexpected ports {extra}"


def test_example_secrets_hold_only_placeholders() -> None:
    docs = [d for p in DEPLOY.rglob("*.yaml") for d in load_docs(p)]
    secrets = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Secret"]
    assert secrets, "the example overlay ships example Secrets"
    for secret in secrets:
        name = secret["metadata"]["name"]
        assert "data" not in secret, f"{name}: base64 `data` hides what is in it; use stringData placeholders"
        for key, value in secret["stringData"].items():
            assert re.fullmatch(r"REPLACE_WITH_[A-Z0-9_]+", value), (
                f"{name}/{key} is not an obvious placeholder"
            )


def test_dashboard_config_map() -> None:
    resources = render(OVERLAY)
    (cm,) = [
        r for r in all_of(resources, "ConfigMap") if r["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["name"] == "engagement-consumer-dashboard", "a fixed name: no stale copies"
    ((key, text),) = cm["data"].items()
    assert key.endswith(".json") and json.loads(text)["uid"] == APP
    # kubectl's client-side apply keeps a copy in an annotation limited to 256 KiB.
    assert len(text.encode()) < 200_000
