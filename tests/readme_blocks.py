"""The ```sh blocks of README.md and what each promises, read from the marker comment before it.

Every ``sh`` block is preceded by ``<!-- readme-check: KIND [(reason)] -->``:

- ``run``: runs as printed in the activated venv; the README tests execute it;
- ``docker``: the same, where a Docker engine and the image exist (image tests);
- ``edit-before-use``: holds a placeholder; the text before it says **Edit before use** visibly;
- ``setup``: installs or builds (venv, image); the reason says where it is exercised instead.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
KINDS = ("run", "docker", "edit-before-use", "setup")
_MARKER = re.compile(r"^<!-- readme-check: (?P<kind>[a-z-]+)(?: \((?P<reason>[^)]+)\))? -->$")


@dataclass(frozen=True)
class Block:
    """One ```sh block: its first line number, marker kind and reason, the prose before it, its text."""

    line: int
    kind: str | None
    reason: str | None
    prose: str
    text: str

    def commands(self) -> list[str]:
        """Logical command lines: backslash continuations joined, blank and comment-only lines dropped."""
        out: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            line = (pending + raw).strip()
            pending = ""
            if line and not line.startswith("#"):
                out.append(line)
        return out


def argv(command: str) -> list[str]:
    """The words of a command line, shell comments dropped (no expansion)."""
    return shlex.split(command, comments=True)


def sh_blocks(text: str | None = None) -> list[Block]:
    """Every ```sh block of the README (or of ``text``), with its marker."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    last_end = 0
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start = i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = [j for j in range(last_end, start) if lines[j].strip()]
            marker = _MARKER.match(lines[before[-1]].strip()) if before else None
            prose = "\n".join(lines[last_end:start])
            blocks.append(Block(start + 1, marker["kind"] if marker else None, marker["reason"] if marker else None,
                                prose, "\n".join(lines[start + 1:end])))  # fmt: skip
            last_end = i = end + 1
            continue
        if lines[i].strip().startswith("```"):  # another fence: skip to its end
            i = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            last_end = i + 1
        i += 1
    return blocks
