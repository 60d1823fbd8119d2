"""What a config's validation read, and a digest of it: the key of the compiled-config cache.

The compile child records every input while it validates: the environment variables it looked
up (set or not: ``${VAR:-default}`` depends on absence too), every file it opened (the YAML
files, ``*_file`` secrets, time zone files) and every directory it listed (a new ``*.yaml``
in a config directory changes the result).  :func:`material` turns such a record into a digest
of the inputs' *current* values, so a cached result is reused only while every one of them is
unchanged.  The code that validates is an input too (:func:`code_key`).

Invariant: two calls of :func:`material` with the same record give the same digest exactly when
every recorded input has the same value (contents for files, sorted names for directories).
Standard library only: the daemon and ``run-job`` compute digests without pydantic.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALL_VARIABLES = "*"  # recorded when the whole environment was read (then all of it is an input)
_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass
class Inputs:
    """Names of what one validation read (no values)."""

    env: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, list[str]]:
        return {"env": sorted(self.env), "files": sorted(self.files), "dirs": sorted(self.dirs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Inputs:
        return cls(set(data.get("env", ())), set(data.get("files", ())), set(data.get("dirs", ())))


class RecordingEnv(Mapping[str, str]):
    """A read-only view of an environment that notes every variable name looked up."""

    def __init__(self, env: Mapping[str, str], inputs: Inputs) -> None:
        self._env = env
        self._inputs = inputs

    def __getitem__(self, name: str) -> str:
        self._inputs.env.add(name)
        return self._env[name]

    def __contains__(self, name: object) -> bool:
        self._inputs.env.add(str(name))
        return name in self._env

    def __iter__(self) -> Iterator[str]:
        self._inputs.env.add(ALL_VARIABLES)
        return iter(self._env)

    def __len__(self) -> int:
        self._inputs.env.add(ALL_VARIABLES)
        return len(self._env)


class FileRecorder:
    """An audit hook (``sys.addaudithook``) noting files opened and directories listed while on.

    Python's own modules (under ``sys.prefix``, the package itself) are left out: they belong to
    :func:`code_key`.  Audit hooks cannot be removed, so use this only in a short-lived process.
    """

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.active = False
        self._skip = tuple(str(Path(p).resolve()) + os.sep
                           for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, str(_PACKAGE)})
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            if "r" in mode or mode == "":
                self._note(self.inputs.files, args[0])
        elif event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
            self._note(self.inputs.dirs, args[0])

    def _note(self, into: set[str], raw: Any) -> None:
        path = os.fsdecode(raw)
        full = os.path.abspath(path)
        if full.endswith((".py", ".pyc", ".so")) or full.startswith(self._skip):
            return
        into.add(full)


def material(inputs: Inputs, env: Mapping[str, str], config_path: str) -> str:
    """SHA-256 over the current value of every recorded input, the config path and the cwd."""
    h = hashlib.sha256()

    def part(*items: bytes) -> None:
        for item in items:
            h.update(len(item).to_bytes(8, "big"))
            h.update(item)

    part(b"cwd", os.fsencode(os.getcwd()), b"path", os.fsencode(config_path))
    names = sorted(env) if ALL_VARIABLES in inputs.env else sorted(inputs.env - {ALL_VARIABLES})
    for name in names:
        value = env.get(name)
        part(b"env", name.encode(), b"-" if value is None else b"=" + value.encode("utf-8", "surrogateescape"))
    for name in sorted(inputs.files):
        try:
            with open(name, "rb") as fh:
                content = b"=" + fh.read()
        except OSError as exc:
            content = f"!{exc.errno}".encode()
        part(b"file", os.fsencode(name), content)
    for name in sorted(inputs.dirs):
        try:
            listing = b"=" + b"\0".join(sorted(os.fsencode(e) for e in os.listdir(name)))
        except OSError as exc:
            listing = f"!{exc.errno}".encode()
        part(b"dir", os.fsencode(name), listing)
    return h.hexdigest()


def code_key() -> str:
    """Identifies the validating code: interpreter, this package's files, installed packages."""
    h = hashlib.sha256()
    h.update(f"{sys.version}\0{os.path.realpath(sys.executable)}\0".encode())
    package = str(_PACKAGE)
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = root[len(package) + 1:]  # the walk's paths start with the package's: no relpath per file
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(root, name))
                h.update(f"{os.path.join(relative, name)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for entry in sys.path:  # installing or removing a package changes its site directory's mtime
        if entry.endswith("-packages"):
            try:
                h.update(f"{entry}\0{os.stat(entry).st_mtime_ns}\0".encode())
            except OSError:
                pass
    return h.hexdigest()
