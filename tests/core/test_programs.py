"""Tests and benchmarks start the venv's programs by path, so they pass without an activated venv.

README's quick start runs ``.venv/bin/python -m pytest`` as printed: PATH is the user's own, which
may hold another ``python`` (without the project's dependencies) and no ``run-job`` at all.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from programs import BIN_DIR, venv_program

REPO = Path(__file__).resolve().parents[2]
# Programs that exist only in the venv (or, found on PATH, may be another installation's).
VENV_PROGRAMS = {"python", "python3", "scheduler", "run-job", "pytest", "pip", "pip3"}
SPAWNERS = {"run", "Popen", "call", "check_call", "check_output", "execvp", "execlp", "spawnlp"}


def _argv_heads(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, program)`` of every spawn call whose argv literal starts with a bare program name."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        # subprocess.run(...), os.execvp(...), or a bare Popen(...) imported from subprocess;
        # not methods such as Containers.run, whose arguments go to the image's entrypoint.
        if isinstance(func, ast.Attribute):
            spawns = (func.attr in SPAWNERS and isinstance(func.value, ast.Name)
                      and func.value.id in ("subprocess", "os"))
        else:
            spawns = isinstance(func, ast.Name) and func.id in SPAWNERS - {"run"}
        if not spawns:
            continue
        first = node.args[0]
        head = first.elts[0] if isinstance(first, (ast.List, ast.Tuple)) and first.elts else first
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            program = head.value.split()[0] if head.value.split() else ""
            if os.path.basename(program) in VENV_PROGRAMS and "/" not in program:
                found.append((node.lineno, program))
    return sorted(found)


def test_no_test_or_benchmark_starts_a_venv_program_from_path() -> None:
    offenders = []
    for path in sorted([*REPO.joinpath("tests").rglob("*.py"), *REPO.joinpath("bench").rglob("*.py")]):
        for line, program in _argv_heads(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            offenders.append(f"{path.relative_to(REPO)}:{line}: starts {program!r} from PATH")
    assert offenders == [], "use sys.executable or programs.venv_program():\n" + "\n".join(offenders)


def test_the_scan_catches_a_bare_program() -> None:
    code = ('subprocess.run(["run-job", "x"])\nsubprocess.Popen(["python", "-c", "1"])\nPopen(("scheduler",))\n'
            'subprocess.run([sys.executable])\nbox.run("run-job", "x")\n')
    assert _argv_heads(ast.parse(code)) == [(1, "run-job"), (2, "python"), (3, "scheduler")]


def test_console_scripts_are_found_beside_the_interpreter() -> None:
    for name in ("scheduler", "run-job"):
        assert Path(venv_program(name)).parent == BIN_DIR
    proc = subprocess.run([venv_program("scheduler"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "run-job" in proc.stdout


def test_path_tests_pass_with_a_hostile_path(tmp_path: Path) -> None:
    """The tests that once took ``python`` and ``run-job`` from PATH, under a PATH whose own
    ``python``, ``scheduler`` and ``run-job`` fail loudly, and without the venv's directory."""
    decoys = tmp_path / "decoys"
    decoys.mkdir()
    for name in VENV_PROGRAMS:
        program = decoys / name
        program.write_text("#!/bin/sh\necho \"decoy $0 started from PATH\" >&2\nexit 97\n")
        program.chmod(0o755)
    kept = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN_DIR.resolve()]
    env = {**os.environ, "PATH": os.pathsep.join([str(decoys), *kept])}
    env.pop("VIRTUAL_ENV", None)
    tests = ["tests/core/test_cli.py::test_run_job_console_script_exit_code_is_the_runs",
             "tests/core/test_daemon.py::test_daemon_never_imports_heavy_libraries"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout, proc.stdout[-2000:]
