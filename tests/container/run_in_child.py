"""Run one container job attempt in this process, as a worker child would.

    python tests/container/run_in_child.py SETTINGS_JSON JOB_JSON DATA_DIR RUN_ID

Prints ``started`` once execute() is entered, then ``result {...}`` or ``error TYPE: message``.
Used by the tests that kill or signal a worker mid-run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from container_helpers import RecordingLog, make_ctx  # noqa: E402

from scheduler.kinds.container import execute  # noqa: E402
from scheduler.kinds.container.settings import DockerSettings  # noqa: E402
from scheduler.kinds.container.spec import ContainerJob  # noqa: E402


def main() -> int:
    settings = DockerSettings.model_validate_json(sys.argv[1])
    spec = ContainerJob.model_validate_json(sys.argv[2])
    ctx = make_ctx(Path(sys.argv[3]), job="child_job", run_id=int(sys.argv[4]), log=RecordingLog(), docker=settings)
    print("started", flush=True)
    try:
        result = execute(spec, ctx)
    except BaseException as exc:
        print(f"error {type(exc).__name__}: {exc}", flush=True)
        return getattr(exc, "exit_code", 1)
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
