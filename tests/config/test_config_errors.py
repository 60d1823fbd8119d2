"""The bad-config corpus: every file (or directory) in ``bad/`` must fail ``scheduler validate``
with exactly the lines its leading ``# expect:`` comments give, in the printed order.

``{file}`` in an expectation stands for the path the test passes (a file name relative to
``bad/``, which is the working directory during the test); ``{dir}`` for a directory case, whose
expectations live at the top of its first file in sorted order.  The contract pinned here is the
user-facing one: exit code 2, one ``FILE:LINE: job 'NAME': FIELD: message`` line per problem on
stderr, nothing on stdout, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scheduler.cli import main

BAD = Path(__file__).parent / "bad"
REPO = Path(__file__).resolve().parents[2]
EXPECT = "# expect: "
UNSET_PREFIX = "SCHEDULER_TEST_UNSET_"


def _cases() -> list[str]:
    return sorted(p.name for p in BAD.iterdir() if p.is_dir() or p.suffix in (".yaml", ".yml"))


def expectations(name: str) -> list[str]:
    """The ``# expect:`` lines at the top of a case, with the placeholder filled in."""
    target = BAD / name
    first = sorted(p for p in target.iterdir() if p.suffix in (".yaml", ".yml"))[0] if target.is_dir() else target
    lines = []
    for line in first.read_text(encoding="utf-8").splitlines():
        if not line.startswith(EXPECT):
            break
        lines.append(line[len(EXPECT):].replace("{dir}" if target.is_dir() else "{file}", name))
    return lines


@pytest.fixture
def in_bad_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from ``bad/`` (so displayed paths are the names passed) with the test variables unset."""
    monkeypatch.chdir(BAD)
    for var in [v for v in os.environ if v.startswith(UNSET_PREFIX)]:
        monkeypatch.delenv(var)


def test_corpus_is_large_and_every_case_states_its_expectation() -> None:
    cases = _cases()
    assert len(cases) >= 30
    for name in cases:
        assert expectations(name), f"{name} has no '# expect:' header"


@pytest.mark.parametrize("name", _cases())
def test_bad_config_reports_expected_lines(name: str, in_bad_dir: None, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", "--config", name])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.splitlines() == expectations(name)


@pytest.mark.parametrize("name", _cases())
def test_bad_config_messages_speak_the_products_language(name: str, in_bad_dir: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """No library wording reaches a user: the corpus's lines are ours, as printed."""
    assert main(["validate", "--config", name]) == 2
    for line in capsys.readouterr().err.splitlines():
        for phrase in ("Input should", "validation error", "pydantic", "type=", "Value error", "Field required"):
            assert phrase not in line, line


@pytest.mark.parametrize("name", ["cron-out-of-range.yaml", "dir-duplicate-job"])
def test_validate_subprocess_exits_2_without_traceback(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(UNSET_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "scheduler", "validate", "--config", name], cwd=BAD, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith(name) for line in lines)


def test_missing_config_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["validate", "--config", str(missing)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{missing}: config path does not exist"]


def test_empty_config_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "README.txt").write_text("not yaml")
    assert main(["validate", "--config", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{tmp_path}: no *.yaml files in config directory"]


def test_many_problems_in_one_file_are_reported_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("jobs.yaml").write_text(textwrap.dedent("""\
        jobz: {}
        daemon:
          log_level: loud
        jobs:
          a:
            kind: command
            shell: echo
            schedule: "0 0 * *"
          b:
            kind: command
            command: "echo hi"
            timezone: Nowhere/City
          c:
            kind: kommand
          d:
            kind: command
            shell: echo
            after: [zzz]
            retries: 10
          e:
            kind: python
            function: nope
            frobnicate: true
        """))
    assert main(["validate", "--config", "jobs.yaml"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "jobs.yaml:1: unknown top-level key 'jobz' (did you mean 'jobs'?)",
        "jobs.yaml:3: daemon.log_level: must be one of 'debug', 'info', 'warning' or 'error', got 'loud'",
        "jobs.yaml:8: job 'a': schedule: expected 5 fields (minute hour day month weekday) or 6 (seconds first), got 4",
        "jobs.yaml:11: job 'b': command: must be a list of arguments; use 'shell' for a command line",
        "jobs.yaml:12: job 'b': timezone: unknown timezone 'Nowhere/City'",
        "jobs.yaml:14: job 'c': kind: unknown job kind 'kommand' (did you mean 'command'?) "
        "(one of command, python, ingest, container)",
        "jobs.yaml:18: job 'd': after: unknown job 'zzz'",
        "jobs.yaml:22: job 'e': function: must look like 'package.module:function', got 'nope'",
        "jobs.yaml:23: job 'e': frobnicate: unknown key 'frobnicate'",
    ]


def test_problems_in_several_files_are_reported_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A broken file does not hide the problems of the other files in the directory."""
    monkeypatch.chdir(tmp_path)
    conf = Path("conf")
    conf.mkdir()
    (conf / "a.yaml").write_text("jobs:\n  x:\n    kind: command\n    shell: [oops\n")
    (conf / "b.yaml").write_text("jobs:\n  y:\n    kind: command\n    shell: echo\n    every: soon\n")
    (conf / "c.yml").write_text("jobs:\n  z:\n    kind: command\n    shell: echo\n    after: [y, w]\n")
    assert main(["validate", "--config", "conf"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":", 2)[:2] for line in err] == [["conf/a.yaml", "5"], ["conf/b.yaml", "5"], ["conf/c.yml", "5"]]
    assert err[1] == ("conf/b.yaml:5: job 'y': every: invalid duration 'soon': use a number with a unit, "
                      "like 30s, 10m, 1h30m")
    assert err[2] == "conf/c.yml:5: job 'z': after: unknown job 'w'"
