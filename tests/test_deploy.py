"""deploy/: systemd units, container image, Compose file, entrypoint and reverse proxies.

Everything that needs no Docker daemon or running systemd is checked here: the units with
``systemd-analyze`` (when installed) and as parsed files, the Compose file against the Compose
specification's JSON schema (vendored in tests/schemas/), the entrypoint and the image's
health check against a real ``hearth serve``, and the proxy configurations with ``caddy`` and
``nginx`` when they are installed. Checks that need a missing tool skip with the reason, and
fail under ``CI=true`` (where .ci/run installs them).
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from cli.main import cli
from service.core.config import Settings, load_settings
from tests.processes import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNITS = DEPLOY / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))
ENTRYPOINT = DEPLOY / "entrypoint.sh"
COMPOSE_SCHEMA = REPO / "tests" / "schemas" / "compose-spec.json"

INSTALLED_HEARTH = "/opt/hearth/.venv/bin/hearth"
CONFIG = "/etc/hearth/hearth.toml"
VENV_BIN = Path(sys.executable).parent
GRACE = Settings().daemon.shutdown_grace_seconds
# Whatever runs the daemon must wait this much longer than the grace before it kills.
JOIN_MARGIN_SECONDS = 5.0

# The command each unit runs, and the hardening every unit must keep.
UNIT_COMMANDS = {
    "hearth.service": ["serve"],
    "hearth-worker@.service": ["worker"],
    "hearth-web.service": ["web"],
    "hearth-migrate.service": ["db", "upgrade"],
}
HARDENING = {
    "User": "hearth",
    "Group": "hearth",
    "EnvironmentFile": "/etc/hearth/hearth.env",
    "WorkingDirectory": "/var/lib/hearth",
    "StateDirectory": "hearth",
    "ReadWritePaths": "/var/lib/hearth",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "CapabilityBoundingSet": "",
}
LONG_RUNNING = ["hearth.service", "hearth-worker@.service", "hearth-web.service"]
# Exposure score from `systemd-analyze security`, times ten: 20 is "2.0 OK".
MAX_EXPOSURE = 20


# -- helpers -------------------------------------------------------------------------------


class _MultiDict(dict[str, Any]):
    """configparser's option dict that keeps repeated keys (SystemCallFilter= twice)."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def read_unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(
        strict=False, dict_type=_MultiDict, interpolation=None, empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text(encoding="utf-8"), source=name)
    return parser


def values(unit: configparser.RawConfigParser, section: str, key: str) -> list[str]:
    """Every assignment of KEY, in order (systemd allows repeats)."""
    if not unit.has_option(section, key):
        return []
    return unit.get(section, key).split("\n")


def seconds(value: str) -> float:
    """A systemd or Compose duration such as 45, 45s, 1min, 1m30s."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts, f"not a duration: {value!r}"
    return sum(float(n) * units[u or "s"] for n, u in parts)


def assert_hearth_command(args: list[str], where: str) -> None:
    """ARGS (after `hearth`) name a real command: `hearth ARGS --help` succeeds."""
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, f"{where}: `hearth {' '.join(args)}`: {result.output}"


def exec_args(unit: configparser.RawConfigParser, key: str) -> list[list[str]]:
    return [shlex.split(line) for line in values(unit, "Service", key)]


def hearth_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment the entrypoint sees: this venv first on PATH, a fresh SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HEARTH_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HEARTH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'hearth.db'}"
    env.update(extra)
    return env


def run_entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        env=hearth_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def tables(db_file: Path) -> set[str]:
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (ins, _) in enumerate(instructions) if ins == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1] :]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:?message}, ${VAR:-default} with VARIABLES."""

    def one(match: re.Match[str]) -> str:
        name = match[1]
        assert name in variables, f"compose.yaml uses ${{{name}}}; the test does not set it"
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::?[-?][^}]*)?\}", one, value)


def env_file_lines(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file; commented-out HEARTH_* assignments count too."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip().removeprefix("#")
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            out[key] = value
    return out


def require(tool: str) -> str:
    """The tool's path; a skip where it is missing, but a failure under CI=true, where
    .ci/run installs it from Debian's packages (a skipped check there would hide a
    broken config)."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires {tool} (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


# -- systemd -------------------------------------------------------------------------------


@pytest.fixture
def installed_units(tmp_path: Path) -> Path:
    """The units as they would be installed, with ExecStart= pointing at this venv's hearth
    (systemd-analyze checks that the binary exists)."""
    hearth = VENV_BIN / "hearth"
    assert hearth.exists(), f"{hearth} missing: pip install -e . first"
    assert " " not in str(hearth), "venv path with a space cannot go into ExecStart="
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.glob("hearth*"):
        text = unit.read_text(encoding="utf-8").replace(INSTALLED_HEARTH, str(hearth))
        (out / unit.name).write_text(text, encoding="utf-8")
    return out


def test_systemd_analyze_verify_prints_nothing(installed_units: Path) -> None:
    tool = require("systemd-analyze")
    units = sorted(str(p) for p in installed_units.iterdir() if p.suffix in (".service", ".target"))
    result = subprocess.run(
        [tool, "verify", "--man=no", "--generators=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A typo (ProtectSytem=) or a bad value (RestartSec=fast) is only a warning with exit 0:
    # systemd ignores the line and the unit runs without it. So any output fails.
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_security_exposure_stays_low(installed_units: Path, name: str) -> None:
    tool = require("systemd-analyze")
    result = subprocess.run(
        [tool, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", name],
        cwd=installed_units,
        capture_output=True,
        text=True,
        timeout=60,
    )
    overall = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert result.returncode == 0, f"{name}: {overall or result.stderr}"
    assert overall, result.stdout + result.stderr


def test_every_service_unit_is_covered() -> None:
    assert set(SERVICES) == set(UNIT_COMMANDS), "new unit: add it to UNIT_COMMANDS"


@pytest.mark.parametrize("name", SERVICES)
def test_unit_is_hardened(name: str) -> None:
    unit = read_unit(name)
    for key, expected in HARDENING.items():
        assert values(unit, "Service", key) == [expected], f"{name}: {key}="
    families = " ".join(values(unit, "Service", "RestrictAddressFamilies")).split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"], f"{name}: {families}"
    syscalls = values(unit, "Service", "SystemCallFilter")
    assert "@system-service" in syscalls, f"{name}: SystemCallFilter= {syscalls}"


@pytest.mark.parametrize("name", SERVICES)
def test_unit_runs_a_real_hearth_command(name: str) -> None:
    unit = read_unit(name)
    commands = exec_args(unit, "ExecStartPre") + exec_args(unit, "ExecStart")
    assert commands, f"{name}: no ExecStart="
    for argv in commands:
        assert argv[:3] == [INSTALLED_HEARTH, "--config", CONFIG], f"{name}: {argv}"
        assert_hearth_command(argv[3:], name)
    assert [argv[3:] for argv in exec_args(unit, "ExecStart")] == [UNIT_COMMANDS[name]]


def test_all_in_one_unit_migrates_before_it_starts() -> None:
    unit = read_unit("hearth.service")
    assert [argv[3:] for argv in exec_args(unit, "ExecStartPre")] == [["db", "upgrade"]]


@pytest.mark.parametrize("name", ["hearth-worker@.service", "hearth-web.service"])
def test_scaled_units_wait_for_the_migration(name: str) -> None:
    unit = read_unit(name)
    assert "hearth-migrate.service" in " ".join(values(unit, "Unit", "Requires")).split()
    assert "hearth-migrate.service" in " ".join(values(unit, "Unit", "After")).split()


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_unit_restarts_and_stops_gracefully(name: str) -> None:
    unit = read_unit(name)
    assert values(unit, "Service", "Restart") == ["on-failure"], name
    assert values(unit, "Service", "RestartSec") == ["5"], name
    assert values(unit, "Service", "KillSignal") == ["SIGTERM"], name
    [stop] = values(unit, "Service", "TimeoutStopSec")
    if UNIT_COMMANDS[name] != ["web"]:  # `hearth web` has no send queue to drain
        assert seconds(stop) >= GRACE + JOIN_MARGIN_SECONDS, (
            f"{name}: TimeoutStopSec={stop} would SIGKILL in-flight sends before "
            f"daemon.shutdown_grace_seconds={GRACE} ends"
        )


def test_target_pulls_in_units_that_exist() -> None:
    target = read_unit("hearth.target")
    wanted = " ".join(values(target, "Unit", "Wants")).split()
    assert {"hearth-migrate.service", "hearth-web.service"} <= set(wanted), wanted
    assert len([w for w in wanted if w.startswith("hearth-worker@")]) >= 2, wanted
    for name in wanted:
        template = re.sub(r"@[^.]+\.", "@.", name)
        assert (UNITS / template).exists(), f"hearth.target wants {name}: no such unit file"


def test_env_example_holds_real_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every HEARTH_* line of hearth.env.example (commented ones too) is a valid setting."""
    monkeypatch.chdir(tmp_path)  # no ./hearth.toml
    env = env_file_lines(DEPLOY / "hearth.env.example")
    assert "HEARTH_TWILIO_AUTH_TOKEN" in env and "HEARTH_SMTP_PASSWORD" in env
    settings = load_settings(environ=env)
    assert settings.database.url.startswith("postgresql+psycopg://")
    assert settings.web.public_base_url.startswith("https://")


# -- entrypoint ----------------------------------------------------------------------------


def test_entrypoint_is_an_executable_posix_script() -> None:
    lines = ENTRYPOINT.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "set -eu" in lines
    assert os.access(ENTRYPOINT, os.X_OK), "chmod +x deploy/entrypoint.sh (and commit the mode)"
    if shutil.which("dash"):  # the strictest common /bin/sh: syntax only
        subprocess.run(["dash", "-n", str(ENTRYPOINT)], check=True, timeout=10)


def test_entrypoint_passes_arguments_to_hearth(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: hearth")
    assert not (tmp_path / "hearth.db").exists(), "migrated without HEARTH_MIGRATE_ON_START=1"


def test_entrypoint_migrates_before_the_command(tmp_path: Path) -> None:
    without = run_entrypoint(tmp_path, "couple", "list", "--json")
    assert without.returncode == 1, "a fresh database should need `hearth db upgrade`"
    assert "hearth db upgrade" in without.stderr

    result = run_entrypoint(tmp_path, "couple", "list", "--json", HEARTH_MIGRATE_ON_START="1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []  # the migration's report goes to stderr
    assert "at revision" in result.stderr
    assert {"alembic_version", "couple", "partner", "ritual", "reminder"} <= tables(
        tmp_path / "hearth.db"
    )


def test_entrypoint_rejects_a_bad_flag(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, "couple", "list", HEARTH_MIGRATE_ON_START="maybe")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: HEARTH_MIGRATE_ON_START must be 1 or 0, not 'maybe'"
    assert not (tmp_path / "hearth.db").exists()


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_final_image() -> None:
    stage = final_stage(dockerfile())
    assert stage[0] == ("FROM", "python:3.12-slim")
    args = {ins: rest for ins, rest in stage}  # the last of each counts
    user = args.get("USER", "root").split(":")[0]
    assert user not in ("root", "0"), f"the image runs as {user}"
    order = [ins for ins, _ in stage]
    assert order.index("USER") < order.index("ENTRYPOINT"), "USER must come before ENTRYPOINT"
    assert "8080" in args["EXPOSE"].split()
    assert json.loads(args["CMD"]) == ["serve"]
    assert_hearth_command(json.loads(args["CMD"]), "Dockerfile CMD")
    env = dict(re.findall(r"(\w+)=(\S+)", args["ENV"]))
    assert env["HEARTH_WEB_HOST"] == "0.0.0.0", "the web service must listen beyond localhost"
    assert env["HEARTH_MIGRATE_ON_START"] == "0"


def test_dockerfile_installs_the_project() -> None:
    instructions = dockerfile()
    assert any(
        re.search(r"pip install (-c \S+ )?\.(\s|$)", rest)
        for ins, rest in instructions
        if ins == "RUN"
    )
    for ins, rest in instructions:
        if ins != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = [word for word in rest.split() if not word.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_dockerfile_installs_pinned_versions() -> None:
    """Every runtime dependency of pyproject.toml is pinned in deploy/constraints.txt, and
    the image installs through it."""
    assert any("pip install -c constraints.txt ." in rest for ins, rest in dockerfile())
    pinned = {
        re.split(r"==", line)[0].lower().replace("_", "-")
        for line in (DEPLOY / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    lines = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    block = lines.split("dependencies = [", 1)[1].split("]\n", 1)[0]
    wanted = {
        re.match(r"[A-Za-z0-9_.-]+", dep.strip().strip('",'))[0].lower().replace("_", "-")  # type: ignore[index]
        for dep in block.splitlines()
        if dep.strip().startswith('"')
    }
    assert wanted <= pinned, wanted - pinned


def test_dockerignore_leaves_out_env_files() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "deploy/*.env" in ignored  # hearth.env holds the secrets


def test_dockerfile_entrypoint_is_the_repository_script() -> None:
    stage = final_stage(dockerfile())
    [entrypoint] = [json.loads(rest) for ins, rest in stage if ins == "ENTRYPOINT"]
    target = entrypoint[0]
    copied = {}
    for ins, rest in stage:
        if ins == "COPY":
            words = rest.split()
            copied[words[-1]] = (words[-2], [w for w in words if w.startswith("--chmod")])
    assert target in copied, f"ENTRYPOINT {target} is not copied into the image"
    source, chmod = copied[target]
    assert REPO / source == ENTRYPOINT
    assert chmod == ["--chmod=0755"] or os.access(ENTRYPOINT, os.X_OK)


def healthcheck_command() -> list[str]:
    [check] = [rest for ins, rest in final_stage(dockerfile()) if ins == "HEALTHCHECK"]
    _, _, command = check.partition(" CMD ")
    argv = json.loads(command)
    assert isinstance(argv, list) and argv[0] == "python", "slim has no curl: use python"
    assert "/healthz" in argv[-1]
    return [str(a) for a in argv]


@pytest.mark.slow
def test_healthcheck_and_sigterm_against_a_running_daemon(tmp_path: Path) -> None:
    """The image's HEALTHCHECK passes against `entrypoint.sh serve`, fails once it is gone,
    and SIGTERM reaches hearth itself (the entrypoint execs), which exits 0."""
    port = str(free_port())
    env = hearth_env(
        tmp_path,
        HEARTH_MIGRATE_ON_START="1",
        HEARTH_WEB_HOST="127.0.0.1",
        HEARTH_WEB_PORT=port,
        HEARTH_LOG_FORMAT="json",
    )
    check = healthcheck_command()
    check_env = {"PATH": env["PATH"], "HEARTH_WEB_PORT": port}

    def healthy() -> bool:
        result = subprocess.run(check, env=check_env, capture_output=True, timeout=10)
        return result.returncode == 0

    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(ENTRYPOINT), "serve"],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=sink,
            start_new_session=True,  # its own process group: nothing outlives the test
        )
    try:
        wait_for(lambda: proc.poll() is not None or _answers(port), 30, "/healthz")
        assert proc.poll() is None, log.read_text()
        assert healthy(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + JOIN_MARGIN_SECONDS) == 0, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "daemon_stopped" in log.read_text()
    assert not healthy(), "the health check passed with nothing listening"


def _answers(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- Compose -------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft201909Validator(schema)
    errors = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_compose_services_and_their_order() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "migrate", "worker", "web"}
    db = services["db"]
    assert db["image"] == "postgres:15"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"])

    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"]["environment"]["HEARTH_MIGRATE_ON_START"] == "1"
    assert services["migrate"]["restart"] == "no"
    for name in ("worker", "web"):
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        assert "HEARTH_MIGRATE_ON_START" not in services[name]["environment"], name
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["healthcheck"] == {"disable": True}  # no web service in it
    assert "healthcheck" not in services["web"]  # the image's /healthz check
    assert [p.rsplit(":", 1)[-1] for p in services["web"]["ports"]] == ["8080"]


def test_compose_commands_are_real_hearth_commands() -> None:
    services = compose()["services"]
    expected = {"migrate": ["db", "current"], "worker": ["worker"], "web": ["web"]}
    for name, command in expected.items():
        assert services[name]["command"] == command, name
        assert_hearth_command(command, f"compose service {name}")


def test_compose_stops_after_the_shutdown_grace() -> None:
    for name in ("worker", "web"):
        period = compose()["services"][name]["stop_grace_period"]
        assert seconds(period) >= GRACE + JOIN_MARGIN_SECONDS, (
            f"{name}: stop_grace_period {period} kills before the daemon's {GRACE}s grace"
        )


def test_compose_environment_is_valid_hearth_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a container sees (image ENV, env_file, environment) loads as Hearth settings,
    with the database URL built from POSTGRES_PASSWORD."""
    monkeypatch.chdir(tmp_path)
    stage = final_stage(dockerfile())
    image_env = {
        k: v
        for ins, rest in stage
        if ins == "ENV"
        for k, v in re.findall(r"(\w+)=(\S+)", rest)
        if k.startswith("HEARTH_")
    }
    for name in ("migrate", "worker", "web"):
        service = compose()["services"][name]
        env_file = DEPLOY / f"{service['env_file']}.example"
        assert env_file.exists(), f"{name}: env_file {service['env_file']} has no example"
        env = {**image_env, **env_file_lines(env_file)}
        for key, value in service["environment"].items():
            env[key] = interpolate(str(value), {"POSTGRES_PASSWORD": "s3cret"})
        env.pop("HEARTH_MIGRATE_ON_START", None)  # the entrypoint's, unset before hearth
        settings = load_settings(environ=env)
        assert settings.database.url == "postgresql+psycopg://hearth:s3cret@db:5432/hearth"
        assert settings.web.host == "0.0.0.0"


def test_compose_database_password_is_required() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    uses = re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert uses and all(u.startswith(":?") for u in uses), "no default password, ever"


# -- reverse proxies -----------------------------------------------------------------------


def test_caddyfile_proxies_to_hearth_and_keeps_the_host() -> None:
    text = (DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    assert re.search(r"^hearth\.example\.org \{", text, re.M)
    assert re.search(r"reverse_proxy 127\.0\.0\.1:8080\b", text)
    assert not re.search(r"^\s*header_up\s+Host\b", text, re.M | re.I), "Host must pass as is"
    assert "public_base_url" in text  # the comment that explains why


def test_caddyfile_validates(tmp_path: Path) -> None:
    caddy = require("caddy")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    result = subprocess.run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_nginx_conf_validates(tmp_path: Path) -> None:
    nginx = require("nginx")
    openssl = require("openssl")
    self_signed = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=hearth.example.org"
    subprocess.run(
        [openssl, *self_signed.split(), "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    site = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert "proxy_set_header Host $host;" in site
    assert "proxy_pass http://127.0.0.1:8080;" in site  # no URI part: path passes unchanged
    site = re.sub(r"/etc/letsencrypt/live/[^;]*/fullchain\.pem", str(tmp_path / "cert.pem"), site)
    site = re.sub(r"/etc/letsencrypt/live/[^;]*/privkey\.pem", str(tmp_path / "key.pem"), site)
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n    include {tmp_path}/site.conf;\n}}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_caddy_keeps_token_paths_out_of_its_access_log(tmp_path: Path) -> None:
    caddy = require("caddy")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    result = subprocess.run(
        [caddy, "adapt", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (site,) = json.loads(result.stdout)["apps"]["http"]["servers"]["srv0"]["routes"]
    routes = site["handle"][0]["routes"]
    skipped = [
        path
        for r in routes
        if any(h.get("skip_log") for h in r["handle"])
        for m in r.get("match", [])
        for path in m.get("path", [])
    ]
    assert set(skipped) >= {"/feeds/*", "/unsubscribe/*"}
    # Before anything else: a later route must not answer a token path unskipped.
    assert routes.index(next(r for r in routes if any(h.get("skip_log") for h in r["handle"]))) == 0


def test_nginx_logs_no_token_path(tmp_path: Path) -> None:
    """The real nginx with deploy/nginx.conf (ports moved, certificates self-signed): a feed
    and an unsubscribe request leave no line in the access log, another request does."""
    nginx = require("nginx")
    openssl = require("openssl")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hearth.example.org",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    http_port, https_port = free_port(), free_port()
    site = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    site = re.sub(r"/etc/letsencrypt/live/[^;]*/fullchain\.pem", str(tmp_path / "cert.pem"), site)
    site = re.sub(r"/etc/letsencrypt/live/[^;]*/privkey\.pem", str(tmp_path / "key.pem"), site)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    site = re.sub(r"\s*listen \[::\]:\d+[^;]*;", "", site)
    log = tmp_path / "access.log"
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\ndaemon off;\n"
        f"events {{}}\nhttp {{\n    access_log {log};\n    include {tmp_path}/site.conf;\n}}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: log.exists(), 10, "nginx to start")
        secret = "7.1.Q" + "z" * 31
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        for path in (f"/feeds/{secret}.ics", f"/unsubscribe/{secret}", "/healthz"):
            url = f"https://127.0.0.1:{https_port}{path}"
            try:
                urllib.request.urlopen(url, timeout=5, context=insecure).close()
            except urllib.error.HTTPError as exc:  # 502: no Hearth behind it, as intended
                exc.close()
        wait_for(lambda: "/healthz" in log.read_text(encoding="utf-8"), 10, "the log line")
        # Hearth's body limit, at the proxy already (no Hearth behind it: 502 if let through).
        from service.web.limits import MAX_BODY

        for size, expected in ((MAX_BODY + 1, 413), (MAX_BODY, 502)):
            big = urllib.request.Request(
                f"https://127.0.0.1:{https_port}/twilio/inbound", data=b"a" * size
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(big, timeout=5, context=insecure).close()
            refused.value.close()
            assert refused.value.code == expected
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = log.read_text(encoding="utf-8")
    assert secret not in text and "/feeds/" not in text and "/unsubscribe/" not in text, text


# -- watching the workers ------------------------------------------------------------------


def test_env_example_logs_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=env_file_lines(DEPLOY / "hearth.env.example"))
    assert settings.log.format.value == "json"


def test_every_worker_instance_serves_metrics_on_its_own_port() -> None:
    [assignment] = [
        v
        for v in values(read_unit("hearth-worker@.service"), "Service", "Environment")
        if v.startswith("HEARTH_DAEMON_METRICS_PORT=")
    ]
    ports = set()
    for instance in range(1, 10):
        key, _, value = assignment.replace("%i", str(instance)).partition("=")
        settings = load_settings(environ={key: value})
        assert settings.daemon.metrics_host == "127.0.0.1"  # not beyond the host
        ports.add(settings.daemon.metrics_port)
    assert len(ports) == 9 and min(ports) > 1024  # the unit may not bind privileged ports
    assert Settings().web.port not in ports


def test_compose_workers_serve_metrics_inside_the_network() -> None:
    worker = compose()["services"]["worker"]
    port = worker["environment"]["HEARTH_DAEMON_METRICS_PORT"]
    assert worker["environment"]["HEARTH_DAEMON_METRICS_HOST"] == "0.0.0.0"
    assert worker["expose"] == [port] and "ports" not in worker  # not published on the host


def test_the_proxies_keep_secret_links_out_of_their_access_logs() -> None:
    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    block = re.search(r"location ~ \^/\(page\|feeds\|unsubscribe\)/ \{(.*?)\}", nginx, re.S)
    assert block is not None and "access_log off;" in block[1]
    assert "proxy_set_header Host $host;" in block[1]
    caddy = (DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    assert "@secret_links path /page/* /feeds/* /unsubscribe/*" in caddy
    assert re.search(r"^\s*skip_log @secret_links", caddy, re.M)


def test_the_proxies_set_hearths_body_limit() -> None:
    """One limit everywhere: the proxies refuse (413) what Hearth would refuse anyway."""
    from service.web.limits import MAX_BODY

    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    (size,) = re.findall(r"^\s*client_max_body_size (\d+)k;", nginx, re.M)
    assert int(size) * 1024 == MAX_BODY
    caddy = (DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    block = re.search(r"request_body \{\s*max_size (\d+)KiB\s*\}", caddy)
    assert block is not None and int(block[1]) * 1024 == MAX_BODY


def test_caddy_adapts_the_body_limit_to_hearths(tmp_path: Path) -> None:
    from service.web.limits import MAX_BODY

    caddy = require("caddy")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    result = subprocess.run(
        [caddy, "adapt", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    def handlers(node: object) -> Iterator[dict[str, object]]:
        if isinstance(node, dict):
            if node.get("handler") == "request_body":
                yield node
            for value in node.values():
                yield from handlers(value)
        elif isinstance(node, list):
            for value in node:
                yield from handlers(value)

    limits = [h.get("max_size") for h in handlers(json.loads(result.stdout))]
    assert limits == [MAX_BODY]


# -- Prometheus alert rules --------------------------------------------------------------------

ALERTS = DEPLOY / "prometheus" / "hearth-alerts.yml"


def test_alert_rules_pass_promtool_check() -> None:
    promtool = require("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 4 rules found" in done.stdout


def test_alert_rules_fire_on_the_daemons_gauge(tmp_path: Path) -> None:
    """promtool's rule unit test: 90 s of predicted lateness for 20 minutes fires the
    capacity alert for that pool; 30 s never does; the gauge names exist in the code."""
    from service.core import metrics
    from service.runtime import replans

    names = {m.name for m in metrics.REGISTRY.collect()}
    assert {m.name for m in replans.FAILING.collect()} <= names  # registered by its module
    assert {
        "hearth_predicted_worst_lateness_seconds",
        "hearth_predicted_expired_reminders",
        "hearth_couples_unplannable",
        "hearth_replans_failing",
    } <= names
    promtool = require("promtool")
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'hearth_predicted_worst_lateness_seconds{pool="sms"}',
                        "values": "90x30",
                    },
                    {
                        "series": 'hearth_predicted_worst_lateness_seconds{pool="email"}',
                        "values": "30x30",
                    },
                    {"series": 'hearth_predicted_expired_reminders{pool="sms"}', "values": "0x30"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "HearthPeakOverCapacity",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "pool": "sms"},
                                "exp_annotations": {
                                    "summary": "Hearth's sms senders cannot send the next 24 "
                                    "h's peak on time",
                                    "description": "The capacity forecast puts the worst sms "
                                    "nudge 1m 30s late. Add numbers to the sender pool (a "
                                    "Messaging Service), raise its throughput, or widen "
                                    "delivery.early_* ; run `hearth capacity`.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "HearthRemindersWouldExpire",
                        "exp_alerts": [],
                    },
                ],
            }
        ],
    }
    spec_file = tmp_path / "alerts_test.yml"
    spec_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", str(spec_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
