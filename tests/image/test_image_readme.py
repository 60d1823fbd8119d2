"""README.md's ``docker`` blocks run as printed against the image under test, offline.

Two names are the test's own rather than the reader's: the image (``cron-container-scheduler``
becomes the image built from this tree) and the named volume (``scheduler-data`` becomes a fresh
volume, removed afterwards), so a user's image and data on a shared engine are never touched.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from image_helpers import REPO, Containers
from readme_blocks import argv, sh_blocks

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]


def test_docker_blocks_work_as_printed(containers: Containers) -> None:
    blocks = [b for b in sh_blocks() if b.kind == "docker"]
    assert blocks
    volume = containers.volume()
    outputs = {}
    for block in blocks:
        for command in block.commands():
            ours = re.sub(r"\bcron-container-scheduler(:latest)?(?=\s|$)", containers.image, command)
            ours = ours.replace("scheduler-data:/data", f"{volume}:/data")
            assert ours.startswith("docker run --rm "), command  # nothing left running
            proc = subprocess.run(["bash", "-c", ours], cwd=REPO, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            outputs[argv(command)[-1]] = proc.stdout
    # What the text says: the demo ingested one day into the volume; the config is valid; jobs listed.
    assert re.search(r"published [\d,]+ rows to /data/sales/date=", outputs["demo"]), outputs["demo"]
    assert "config OK" in outputs["validate"]
    assert "daily_sales" in outputs["list"]
    listing = containers.run("-c", "import os; print(sorted(os.listdir('/data/sales')))",
                             options=["--entrypoint", "python3", "-v", f"{volume}:/data"])
    assert listing.returncode == 0 and "date=" in listing.stdout, listing.stdout + listing.stderr
