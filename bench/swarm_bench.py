"""Swarm dispatch of a trivial container job against the docker CLI.

    python bench/swarm_bench.py [--runs 10] [--image scheduler-test-busybox:latest]

Times a ``container`` job running ``true`` with ``docker.backend: swarm`` (``execute()`` as a
worker calls it: new client, isolated network check, service create, log follow, task polling,
log catch-up, retire and remove) against ``docker service create --mode replicated-job
--restart-condition none --no-resolve-image IMAGE true`` from the CLI, which waits until the job
has completed, then ``docker service rm``; same engine, image and network, alternating the two so
drift hits both alike.  The exited task container the CLI leaves behind (Engine 20.10 keeps it
after the service is removed) is removed outside the timing.  Prints a table of medians and the
ratio.  Needs an engine that is a swarm manager (``docker swarm init --advertise-addr 127.0.0.1``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import uuid

from dispatch_timing import alternate, timed_job

from scheduler.kinds.container.engine import make_client, resolve_host
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import ContainerJob


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default="scheduler-test-busybox:latest")
    args = parser.parse_args()
    cli = shutil.which("docker")
    if cli is None:
        print("the docker CLI is not installed", file=sys.stderr)
        return 2
    settings = DockerSettings(backend="swarm", instance=f"bench-{uuid.uuid4().hex[:6]}")
    client = make_client(settings)
    if not (client.info().get("Swarm") or {}).get("ControlAvailable"):
        print("the engine is not a swarm manager: docker swarm init --advertise-addr 127.0.0.1", file=sys.stderr)
        return 2
    spec = ContainerJob.model_validate({"kind": "container", "image": args.image, "command": ["true"]})
    docker = [cli, "-H", resolve_host(settings)]

    job = timed_job(spec, settings)

    def service_create() -> float:
        name = f"bench-cli-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        sid = subprocess.run(
            [*docker, "service", "create", "--quiet", "--name", name, "--mode", "replicated-job",
             "--restart-condition", "none", "--no-resolve-image", "--network", settings.isolated_network,
             args.image, "true"],
            check=True, capture_output=True, text=True, timeout=120,
        ).stdout.strip()  # fmt: skip
        subprocess.run([*docker, "service", "rm", sid], check=True, stdout=subprocess.DEVNULL, timeout=60)
        elapsed = time.perf_counter() - t
        leftovers = client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.id={sid}"})
        for c in leftovers:
            client.api.remove_container(c["Id"], force=True)
        return elapsed

    job(-1)  # warm up: creates the isolated network, loads our imports, warms the engine
    service_create()
    ours, theirs = alternate(job, service_create, args.runs)
    client.close()
    m_ours, m_cli = statistics.median(ours), statistics.median(theirs)
    print(f"runs: {args.runs}  image: {args.image}  engine: {resolve_host(settings)}  "
          f"network: {settings.isolated_network}")
    print(f"| {'measured':<60} | {'median':>9} | {'min':>9} | {'max':>9} |")
    print(f"|{'-' * 62}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for label, times in (("swarm backend (execute: create, logs, wait, retire, remove)", ours),
                         ("docker service create (waits for completion) + service rm", theirs)):  # fmt: skip
        print(f"| {label:<60} | {statistics.median(times) * 1000:6.0f} ms | {min(times) * 1000:6.0f} ms "
              f"| {max(times) * 1000:6.0f} ms |")
    print(f"ratio (median ours / median CLI): {m_ours / m_cli:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
