"""Safe YAML loading that remembers where every key came from.

``load_yaml`` returns plain Python data plus a map from key path (a tuple of keys and list
indexes) to the 1-based line of that key, so later stages can point errors at ``FILE:LINE``.
Duplicate keys in one mapping are errors (PyYAML would silently keep the last).
String scalars pass through ``${VAR}`` interpolation as they are built; ``KEY_file: PATH``
entries are replaced by ``KEY: <file contents>`` and remembered as secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scheduler.errors import ConfigIssue

Path_ = tuple[Any, ...]

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
SECRET_KEY = re.compile(
    r"(token|password|passwd|secret|api[-_]?key|access[-_]?key|private[-_]?key|routing[-_]?key|authorization|"
    r"credential|^key$)", re.I)


@dataclass
class YamlDoc:
    """One loaded file: its data, key lines, secrets it revealed and problems found."""

    file: str
    data: Any = None
    lines: dict[Path_, int] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    issues: list[ConfigIssue] = field(default_factory=list)
    failed: set[Path_] = field(default_factory=set)  # key paths whose value could not be read

    def failed_under(self, path: Path_) -> bool:
        """True if ``path`` and a failed path are one inside the other (a follow-on error)."""
        return any(f[: len(path)] == path or path[: len(f)] == f for f in self.failed)

    def line_of(self, path: Path_) -> int | None:
        """Line of the longest known prefix of ``path``."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``.

    Returns the expanded text and the names of variables that were unset without a default.
    """
    missing: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _VAR.sub(repl, text), missing


class _Builder:
    def __init__(self, doc: YamlDoc, loader: yaml.SafeLoader, env: Mapping[str, str], base_dir: Path) -> None:
        self.doc, self.loader, self.env, self.base_dir = doc, loader, env, base_dir

    def issue(self, path: Path_, line: int, message: str) -> None:
        self.doc.failed.add(path)
        self.doc.issues.append(ConfigIssue(message, file=self.doc.file, line=line, **_job_field(path)))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        line = node.start_mark.line + 1
        self.doc.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node)
                key_line = key_node.start_mark.line + 1
                if not isinstance(key, (str, int)):
                    self.issue(path, key_line, "mapping keys must be strings")
                    continue
                if key in out:
                    self.issue(path + (key,), key_line, f"duplicate key '{key}'")
                    continue
                self.doc.lines[path + (key,)] = key_line
                value = self.build(value_node, path + (key,))
                if isinstance(key, str) and key.endswith("_file") and len(key) > 5 and isinstance(value, str):
                    real = key[: -len("_file")]
                    self.doc.lines[path + (real,)] = key_line
                    value = self.read_secret_file(value, path + (real,), key_line)
                    key = real
                    if key in out:
                        self.issue(path + (key,), key_line, f"both '{key}' and '{key}_file' given")
                        continue
                if isinstance(key, str) and SECRET_KEY.search(key) and isinstance(value, str) and value:
                    self.doc.secrets.add(value)
                out[key] = value
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        value = self.loader.construct_object(node)
        if isinstance(value, str) and "$" in value:
            value, missing = interpolate(value, self.env)
            for name in missing:
                self.issue(path, line,
                           f"environment variable '{name}' is not set (use ${{{name}:-default}} for a default)")
        return value

    def read_secret_file(self, name: str, path: Path_, line: int) -> str | None:
        target = Path(name)
        if not target.is_absolute():
            target = self.base_dir / target
        try:
            secret = target.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.issue(path, line, f"cannot read secret file {name}: {exc.strerror or exc}")
            return None
        if secret:
            self.doc.secrets.add(secret)
        return secret


def _job_field(path: Path_) -> dict[str, Any]:
    """Split a key path into the job name and dotted field, for error messages."""
    if len(path) >= 2 and path[0] == "jobs":
        rest = path[2:]
        return {"job": str(path[1]), "field": ".".join(str(p) for p in rest) or None}
    return {"field": ".".join(str(p) for p in path) or None}


def load_yaml(file: Path, env: Mapping[str, str] | None = None, display: str | None = None) -> YamlDoc:
    """Load one YAML file safely; problems are collected in ``doc.issues``, never raised."""
    doc = YamlDoc(file=display or str(file))
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc.issues.append(ConfigIssue(f"cannot read: {exc}", file=doc.file))
        return doc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _Builder(doc, loader, os.environ if env is None else env, file.parent).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context and exc.context.startswith("while scanning") and exc.context_mark is not None:
            mark = exc.context_mark  # an unclosed quote or bracket: where it was opened
        message = exc.problem or str(exc)
        if exc.context and exc.problem:
            message = f"{exc.context}, {exc.problem}" if "while" not in exc.context else exc.problem
        doc.issues.append(ConfigIssue(f"invalid YAML: {message}", file=doc.file, line=mark.line + 1 if mark else None))
    except yaml.YAMLError as exc:
        doc.issues.append(ConfigIssue(f"invalid YAML: {exc}", file=doc.file))
    finally:
        loader.dispose()
    return doc
