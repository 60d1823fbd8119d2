"""Helpers for bringing docker-compose.yml up in tests: the compose CLI at hand, a local proxy image.

No registry is reachable, so the proxy's ``haproxy`` image cannot be pulled.  The same HAProxy the
host runs (Debian's ``haproxy``) goes into a ``FROM scratch`` image instead: the binary and the
shared libraries ``ldd`` names, run as uid 99 like the official image.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile

from image_helpers import docker, inspect

PROXY_IMAGE = "scheduler-test-haproxy:latest"
PROXY_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"


def compose_cli() -> list[str] | None:
    """``docker compose`` (v2) when the plugin answers, else Debian's ``docker-compose`` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _haproxy_rootfs(binary: str) -> bytes:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libraries = re.findall(r"(/\S+) \(0x", out)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("etc", "tmp", "run", "usr/local/etc/haproxy"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(os.path.realpath(binary), arcname="usr/sbin/haproxy")
        for path in libraries:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))  # the file a symlinked name points to
        for name, text in (("etc/passwd", "root:x:0:0::/:/bin/false\nhaproxy:x:99:99::/:/bin/false\n"),
                           ("etc/group", "root:x:0:\nhaproxy:x:99:\n")):  # fmt: skip
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ensure_proxy_image() -> str | None:
    """:data:`PROXY_IMAGE`, imported from the host's haproxy when missing; None without haproxy."""
    if inspect("image", PROXY_IMAGE) is not None:
        return PROXY_IMAGE
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if binary is None:
        return None
    proc = subprocess.run(
        ["docker", "import", "--change", f'CMD ["/usr/sbin/haproxy", "-W", "-db", "-f", "{PROXY_CONFIG}"]',
         "--change", "USER 99:99", "--change", "LABEL org.cron-scheduler.test-image=haproxy", "-", PROXY_IMAGE],
        input=_haproxy_rootfs(binary), capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0 and inspect("image", PROXY_IMAGE) is None:  # another session may have won the race
        raise AssertionError(f"docker import of {PROXY_IMAGE} failed: {proc.stderr.decode(errors='replace')}")
    docker("image", "inspect", PROXY_IMAGE)
    return PROXY_IMAGE
