"""A small kustomize for the deploy/ tests: render a kustomization, then look objects up in it."""

# There is no kustomize or kubectl binary in CI, so `render()` below builds a kustomization itself,
# for exactly the features deploy/ uses (anything else fails loudly): resources (files and
# directories), namespace, images, configMapGenerator (create/merge, envs/files/literals, options),
# strategic-merge patches on built-in kinds and JSON6902 patches with targets. Custom resources are
# only ever patched with JSON6902: how kustomize merges a list inside a custom resource depends on
# its version, explicit JSON-pointer paths do not.

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
KUSTOMIZATIONS = [BASE, OVERLAY]

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


def daemon_default(field: str) -> Any:
    """The default of a Settings field of the daemon (its Settings is the one source)."""
    from consumer.config import Settings

    info = Settings.model_fields[field]
    return info.default_factory() if info.default_factory else info.default


# --------------------------------------------------------------------------------------------
# A small kustomize.


class RenderError(AssertionError):
    """A kustomization this renderer cannot (or kustomize would not) build."""


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
    """The non-empty YAML documents of a file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def parse_env_file(path: Path) -> dict[str, str]:
    """A configMapGenerator envs file as a dict; anything but KEY=VALUE lines is an error."""
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
    """An apiVersion split into (group, version); the core group is ''."""
    group, _, version = api_version.rpartition("/")
    return group, version


def selected(resource: dict[str, Any], target: dict[str, str]) -> bool:
    """Whether a patch target (regular expressions per field) selects a resource."""
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
    """Apply a strategic-merge patch to a built-in object in place (merge keys from MERGE_KEYS)."""
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
    """Apply JSON6902 operations (test, add, replace, remove) to a document in place."""
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
    """The ConfigMap a configMapGenerator entry makes, before the name-hash pass."""
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
    """The pod specs of a workload resource (none for other kinds)."""
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
    """The rendered kustomization in a directory (a fresh copy of a cached rendering)."""
    if directory not in _CACHE:
        _CACHE[directory] = finalize(build(directory))
    return copy.deepcopy(_CACHE[directory])


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The only object of a kind (and name, if given); asserts there is exactly one."""
    hits = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def all_of(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """All objects of a kind."""
    return [r for r in resources if r["kind"] == kind]


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The daemon's container in the Deployment."""
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
    """A Secret's values, decoded from data and merged with stringData."""
    out = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    out.update(secret.get("stringData", {}))
    return out


def setting(resources: list[dict[str, Any]], env: str, field: str) -> str:
    """An environment variable as the daemon sees it, or the daemon's default for its field."""
    value = config_data(resources).get(env)
    for e in container(resources).get("env", []):
        if e["name"] == env and "value" in e:
            value = e["value"]
    if value is None:
        default = daemon_default(field)
        return ",".join(default) if isinstance(default, list) else str(default)
    return value


def pod_spec(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod spec of the Deployment."""
    return one(resources, "Deployment", APP)["spec"]["template"]["spec"]


def named_port(resources: list[dict[str, Any]], port: int | str) -> int:
    """A port number from a number or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (p,) = [p for p in container(resources)["ports"] if p["name"] == port]
    return int(p["containerPort"])
