"""docker-compose.yml as a newcomer meets it: Compose v1 (Debian's docker-compose) accepts it, the
proxy rules are a file mounted read-only, and the .env the README has them create stays untracked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROXY_TARGET = "/usr/local/etc/haproxy/haproxy.cfg"


def _project_as_readme_says(tmp_path: Path) -> Path:
    """A copy of the compose project with ``cp .env.example .env`` done."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "docker-compose.yml", root)
    shutil.copytree(REPO / "compose", root / "compose")
    shutil.copytree(REPO / "config", root / "config")
    shutil.copy(REPO / ".env.example", root / ".env")
    return root


@pytest.mark.docker  # the compose CLI is part of the Docker tooling CI installs: a skip fails under CI=true
def test_compose_v1_accepts_the_file(tmp_path: Path) -> None:
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.skip("docker-compose (Compose v1) is not installed (apt-get install docker-compose)")
    root = _project_as_readme_says(tmp_path)
    proc = subprocess.run([legacy, "-f", "docker-compose.yml", "config"], cwd=root, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert "configs" not in resolved
    mounts = resolved["services"]["docker-proxy"]["volumes"]
    text = [str(m) for m in mounts]
    assert any(f"{root}/compose/docker-api-proxy.cfg:{PROXY_TARGET}:ro" in m for m in text), text


def test_proxy_config_is_a_file_mounted_read_only() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert "configs" not in compose and "configs" not in compose["services"]["docker-proxy"]
    [mount] = [m for m in compose["services"]["docker-proxy"]["volumes"] if m.split(":")[1] == PROXY_TARGET]
    source, _, mode = mount.split(":")
    assert mode == "ro" and (REPO / source).is_file()
    text = (REPO / source).read_text()
    assert "$$" not in text  # compose's escape has no place in a plain file
    assert "bind :2375" in text and "http-request deny deny_status 403" in text


def test_haproxy_accepts_the_proxy_config() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    proc = subprocess.run([haproxy, "-c", "-f", str(REPO / "compose/docker-api-proxy.cfg")], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dot_env_is_ignored_and_its_example_is_not() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    check = ["git", "-C", str(REPO), "check-ignore", "-q", "--no-index"]
    assert subprocess.run([*check, ".env"], check=False).returncode == 0
    assert subprocess.run([*check, ".env.example"], check=False).returncode == 1
