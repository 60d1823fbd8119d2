"""Dispatch overhead of a container job against the docker CLI.

    python bench/container_bench.py [--runs 20] [--image scheduler-test-busybox:latest] [--network none]

Times a ``container`` job running ``true`` (``execute()`` as a worker calls it: new client, image
check, create, attach, start, wait, inspect, remove) against ``docker run --rm IMAGE true`` from
the CLI, on the same engine, image and network, alternating the two so drift hits both alike.
Prints the medians and the ratio; the goal is a ratio of at most 1.2.  Exit code 1 when above
``--max-ratio``.  Needs a running engine (``bash .ci/docker-up.sh``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from dispatch_timing import alternate, timed_job

from scheduler.kinds.container.engine import resolve_host
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import ContainerJob


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default="scheduler-test-busybox:latest")
    parser.add_argument("--network", default="none")
    parser.add_argument("--max-ratio", type=float, default=1.2)
    args = parser.parse_args()
    cli = shutil.which("docker")
    if cli is None:
        print("the docker CLI is not installed", file=sys.stderr)
        return 2
    settings = DockerSettings(instance="bench", network=args.network)
    spec = ContainerJob.model_validate({"kind": "container", "image": args.image, "command": ["true"], "pull": "never"})
    cli_argv = [cli, "-H", resolve_host(settings), "run", "--rm", "--network", args.network, args.image, "true"]

    job = timed_job(spec, settings)

    def docker_run() -> float:
        t = time.perf_counter()
        subprocess.run(cli_argv, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t

    for i in range(2):  # warm the engine, the page cache and our imports
        job(-1 - i)
        docker_run()
    ours, theirs = alternate(job, docker_run, args.runs)
    m_ours, m_cli = statistics.median(ours), statistics.median(theirs)
    ratio = m_ours / m_cli
    print(f"runs: {args.runs}  image: {args.image}  network: {args.network}  engine: {resolve_host(settings)}")
    for label, times in (("container job (execute)", ours), ("docker run --rm (CLI)  ", theirs)):
        print(f"{label}: median {statistics.median(times) * 1000:7.1f} ms  "
              f"min {min(times) * 1000:7.1f} ms  max {max(times) * 1000:7.1f} ms")
    print(f"ratio (median job / median CLI): {ratio:.2f}  (goal <= {args.max_ratio})")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
