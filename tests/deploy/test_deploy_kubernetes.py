"""deploy/: render the kustomizations (with deploy_render.py) and validate what they produce.

- every core object validates against the Kubernetes OpenAPI schemas shipped with
  kubernetes-validate (strict: unknown fields are errors), for the oldest supported version and the
  newest the package ships;
- custom resources (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) validate
  against structural schemas written from the CRDs' specs (deploy_schemas.py), and the HPA that
  KEDA derives from the ScaledObject validates against the real autoscaling/v2 schema.

How the Deployment and its companions agree with the daemon is in test_deploy_workload.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_render import (
    APP,
    CLUSTER_SCOPED,
    CORE_KINDS,
    CUSTOM_KINDS,
    DEPLOY,
    KUSTOMIZATIONS,
    OVERLAY,
    all_of,
    container,
    one,
    render,
)
from deploy_schemas import CRD_SCHEMAS

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(60)]

# Kubernetes versions to validate against: the oldest we support (PodDisruptionBudget's
# unhealthyPodEvictionPolicy is on by default since 1.27; 1.30 is the oldest release still
# commonly supported by managed offerings) and the newest kubernetes-validate==1.37.0 ships.
K8S_VERSIONS = ("1.30", "1.37")


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
