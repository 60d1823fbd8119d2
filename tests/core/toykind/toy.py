"""The ``toy`` kind: write ``message`` ``repeat`` times to ``<data dir>/toy/<job>.txt``, in the worker.

Its model derives from the common job keys like every kind's; the executor reports how many lines
it wrote and the message as the watermark, so a test sees the run recorded in the state store.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from scheduler.config.jobs import JobBase
from scheduler.kinds.base import RunContext

FORBIDDEN = {"sudo": "toys never run as root"}


class ToyJob(JobBase):
    kind: Literal["toy"] = Field(description="toy: write a message to a file in the worker.")
    message: str = Field(description="What to write.")
    repeat: int = Field(default=1, ge=1, le=100, description="How many lines.")


def execute(spec: ToyJob, ctx: RunContext) -> dict[str, Any]:
    out = ctx.data_dir / "toy" / f"{ctx.job}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{spec.message} {ctx.logical_date.isoformat()}\n" for _ in range(spec.repeat)))
    ctx.log.info("toy written", path=str(out), worker_pid=os.getpid())
    return {"rows_written": spec.repeat, "watermark": spec.message}
