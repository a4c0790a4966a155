"""deploy/: the Deployment and its companions agree with each other and with the daemon."""

# Probe and scrape paths and the port, drain deadline vs grace period, the environment (loaded
# through consumer.config.load_settings), the consumer group, brokers and topics that KEDA watches,
# credentials as files from the Secret, network policy ports, placeholder-only example Secrets.

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_render import (
    APP,
    BASE,
    DEPLOY,
    KUSTOMIZATIONS,
    OVERLAY,
    all_of,
    config_data,
    container,
    load_docs,
    named_port,
    one,
    pod_spec,
    render,
    secret_values,
    setting,
)
from deploy_schemas import KAFKA_TRIGGER_KEYS

from consumer import config as daemon_config
from consumer.config.credentials import scan

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(60)]

PARTITIONS_ANNOTATION = "engagement-consumer/topic-partitions"
# Time the daemon needs after its drain deadline: commit, close the consumer (leave the group),
# flush the dead-letter producer. terminationGracePeriodSeconds must cover drain + this.
SHUTDOWN_MARGIN_S = 10


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_probes_ports_and_scraping_match_the_daemon(directory: Path) -> None:
    resources = render(directory)
    c = container(resources)
    # The port as the daemon's own loader derives it from the manifest's environment (its default
    # when unset): not the test's reading of the manifest, which falls back to that same default.
    plain = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    env = {k: v for k, v in {**config_data(resources), **plain}.items() if not k.endswith("_FILE")}
    port = daemon_config.load_settings(env, require_kafka=False, require_credentials=False).http_port
    assert port == int(setting(resources, "HTTP_PORT", "http_port"))
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

    from consumer.ops.health import HealthServer

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
        if "projected" in vol:  # account folders (LP_CREDENTIALS_DIR): rotated in place too
            assert "subPath" not in m, "a subPath mount never sees a rotated Secret"
            assert m.get("readOnly") is True
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
        for source in v.get("projected", {}).get("sources", []):
            if "secret" in source:
                refs.append(("Secret", source["secret"]["name"]))
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
        for source in vol.get("projected", {}).get("sources", []):
            if "secret" in source:  # items map a Secret's keys to paths (account folders)
                values = secrets[source["secret"]["name"]]
                for item in source["secret"].get("items", [{"key": k, "path": k} for k in values]):
                    (local / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                    (local / item["path"]).write_text(values[item["key"]])
    env = dict(config_data(resources))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    for key, value in env.items():
        for mount, local in remap.items():
            if value.startswith(mount) or value + "/" == mount:
                env[key] = local + value[len(mount) :] if value.startswith(mount) else local.rstrip("/")
    return env


def test_overlay_configuration_loads_in_the_daemon(tmp_path: Path) -> None:
    """The overlay's ConfigMap + env + Secret files, fed to the daemon's own configuration loader."""
    resources = render(OVERLAY)
    env = _daemon_environment(resources, tmp_path)
    known = {name.upper() for name in daemon_config.Settings.model_fields}
    known |= {f"{name.upper()}_FILE" for name in daemon_config.SECRET_FIELDS}
    unknown = [k for k in env if not k.startswith("KAFKA_") and k not in known]
    assert not unknown, f"variables the daemon does not read (typos?): {unknown}"
    settings = daemon_config.load_settings(env)
    assert settings.http_port == named_port(resources, "metrics")
    assert settings.kafka_properties.get("sasl.password") == "REPLACE_WITH_KAFKA_PASSWORD"
    creds = settings.credentials()
    assert creds.consumer_key == "REPLACE_WITH_LP_CONSUMER_KEY"
    if settings.lp_credentials_dir:  # every account's folder is complete and of one kind
        found, problems = scan(Path(settings.lp_credentials_dir))
        assert not problems and found, problems
        assert settings.lp_account not in found


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
