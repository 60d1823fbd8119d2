"""The ``docker:`` allowlists: which images a job may run and what it may mount.

Pure functions over names and paths (no pydantic, no Docker SDK): the loader calls
:func:`allowlist_problems` for every container job, and ``execute`` checks again before any API
call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.kinds.container.spec import Volume


def image_allowed(image: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``image`` matches one of the glob ``patterns``; ``busybox`` also counts as
    ``busybox:latest`` and ``docker.io/library/busybox:latest``."""
    names = {image}
    last = image.rsplit("/", 1)[-1]
    if "@" not in image and ":" not in last:
        names.add(image + ":latest")
    for name in list(names):
        first = name.split("/", 1)[0]
        if "/" not in name:
            names.add("docker.io/library/" + name)
        elif "." not in first and ":" not in first and first != "localhost":
            names.add("docker.io/" + name)
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def allowlist_problems(image: str | None, volumes: Sequence[Volume], allowed_images: tuple[str, ...] | None,
                       allowed_host_paths: tuple[str, ...] | None,
                       allowed_volumes: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """``(field, message)`` for each image or mount outside the allowlists.

    ``None`` stands for a value that is unknown (it was itself invalid, and reported): the checks
    that need it are skipped, the others still run, so one bad key hides no other problem.
    """
    problems: list[tuple[str, str]] = []
    if image is not None and allowed_images is not None and not image_allowed(image, allowed_images):
        problems.append(
            ("image", f"image {image!r} is not in docker.allowed_images ({', '.join(allowed_images) or 'empty'})")
        )
    for i, vol in enumerate(volumes):
        if vol.is_host_path:
            if allowed_host_paths is not None and not _under(vol.source, allowed_host_paths):
                problems.append((f"volumes[{i}]", f"host path {vol.source!r} is not under docker.allowed_host_paths"))
        elif allowed_volumes is not None and vol.source not in allowed_volumes:
            problems.append((f"volumes[{i}]", f"volume {vol.source!r} is not in docker.allowed_volumes"))
    return problems


def data_volume_problems(source: str | None, default: str | None, allowed_host_paths: tuple[str, ...] | None,
                         allowed_volumes: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """``(field, message)`` when a job's own ``data_volume`` is outside the allowlists (the
    ``docker.data_volume`` itself is always allowed).  ``None`` allowlists: unknown, not checked."""
    if source is None or source == default:
        return []
    if source.startswith("/"):
        if allowed_host_paths is not None and not _under(source, allowed_host_paths):
            return [("data_volume", f"host path {source!r} is not under docker.allowed_host_paths")]
    elif allowed_volumes is not None and source not in allowed_volumes:
        return [("data_volume", f"volume {source!r} is neither docker.data_volume nor in docker.allowed_volumes")]
    return []
