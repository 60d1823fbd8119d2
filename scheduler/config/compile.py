"""``python -m scheduler.config.compile PATH [--inputs]``: validate a config and print it as JSON.

The child side of :func:`scheduler.config.compiled.load_compiled`: stdout is one JSON object,
either the compiled config or ``{"issues": [...]}`` (exit 2).  With ``--inputs`` the compiled
config also carries ``"inputs"`` (the names of the variables, files and directories validation
read, no values) and ``"material"`` (their digest, :mod:`scheduler.config.inputs`), for the cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from scheduler.config.compiled import dump_compiled
from scheduler.config.inputs import FileRecorder, Inputs, RecordingEnv, material
from scheduler.config.loader import load_config
from scheduler.errors import ConfigError


def main(argv: list[str]) -> int:
    record = "--inputs" in argv
    path = [a for a in argv if a != "--inputs"][0]
    inputs = Inputs()
    recorder = FileRecorder(inputs) if record else None
    try:
        if recorder is not None:
            recorder.active = True
        config = load_config(path, env=RecordingEnv(os.environ, inputs) if record else None)
    except ConfigError as exc:
        print(json.dumps({"issues": [dataclasses.asdict(issue) for issue in exc.issues]}))
        return 2
    finally:
        if recorder is not None:
            recorder.active = False
    if not record:
        print(dump_compiled(config))
        return 0
    payload = json.loads(dump_compiled(config))
    payload.update(inputs=inputs.as_json(), material=material(inputs, os.environ, path))
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
