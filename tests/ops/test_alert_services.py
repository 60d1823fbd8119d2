"""A real daemon alerting PagerDuty, Discord and ntfy and pinging a healthchecks.io check.

The services are one local stand-in (``services.ServiceServer``) that checks every request against
the service's documented format; the secrets in the config (routing key, webhook token, topic,
check UUID) must never reach the daemon's output.
"""

from __future__ import annotations

from pathlib import Path

from polling import wait_for
from services import ServiceServer

ROUTING_KEY = "e2eR0utingKey0123456789abcdefABC"
CHECK = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
DISCORD_TOKEN = "dIsCoRd-t0ken_e2e"
TOPIC = "sched-e2e-topic-81f2"


def test_failure_then_recovery_reach_each_service_in_its_format(start_daemon, workdir: Path) -> None:
    services = ServiceServer()
    try:
        key_file = workdir / "pagerduty.key"
        key_file.write_text(ROUTING_KEY + "\n", encoding="utf-8")
        marker = workdir / "fail-once"
        marker.touch()
        url = services.url
        daemon = start_daemon(f"""
daemon: {{shutdown_grace: 2s}}
jobs:
  flaky:
    kind: command
    every: 1s
    shell: 'if [ -e {marker} ]; then rm {marker}; echo "loading batch"; echo "boom" >&2; exit 4; fi; echo fine'
    ping: {{url: "{url}/hc/{CHECK}", timeout: 5s, retries: 2}}
    on_failure:
      - {{url: "{url}/pagerduty/v2/enqueue", format: pagerduty, routing_key_file: {key_file}}}
      - {{url: "{url}/discord/api/webhooks/98765/{DISCORD_TOKEN}", format: discord}}
      - {{url: "{url}/ntfy/{TOPIC}", format: ntfy, priority: urgent, tags: [db]}}
    on_recovery:
      - {{url: "{url}/pagerduty/v2/enqueue", format: pagerduty, routing_key_file: {key_file}}}
      - {{url: "{url}/ntfy/{TOPIC}", format: ntfy}}
""")
        wait_for(lambda: len(services.of("pagerduty")) >= 2, 30, "a PagerDuty trigger and resolve", retry_errors=True)
        wait_for(lambda: [p for p in services.pings() if p[0] == "success"], 30, "a success ping", retry_errors=True)
        daemon.stop()

        assert services.violations == []
        events = [r.json for r in services.of("pagerduty")]
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        assert {e["dedup_key"] for e in events} == {"cron-container-scheduler/flaky"}
        assert {e["routing_key"] for e in events} == {ROUTING_KEY}
        trigger = events[0]["payload"]
        assert trigger["severity"] == "error" and trigger["component"] == "flaky"
        assert "exited with code 4" in trigger["summary"] and "boom" in trigger["custom_details"]["last_lines"]

        discord = [r.json for r in services.of("discord")]
        assert len(discord) == 1 and "flaky" in discord[0]["content"]
        assert "boom" in discord[0]["embeds"][0]["description"]

        ntfy = services.of("ntfy")
        assert [(r.title, r.headers["priority"], r.headers["tags"]) for r in ntfy] == [
            ("flaky: failure", "urgent", "rotating_light,db"), ("flaky: recovery", "default", "white_check_mark")]

        pings = services.pings()
        runs: dict[str | None, list[str]] = {}
        for kind, rid, _ in pings:
            runs.setdefault(rid, []).append(kind)
        assert None not in runs  # every ping carries its run's rid
        ordered = list(runs.values())
        assert ordered[0] == ["start", "fail"] and ordered[1] == ["start", "success"]
        for kinds in ordered[:-1]:  # the last run may have been stopped by the shutdown (a log ping) or not ended
            assert kinds in (["start", "fail"], ["start", "success"], ["start", "log"]), kinds
        assert ordered[-1][0] == "start" and len(ordered[-1]) <= 2
        fail_body = next(body for kind, _, body in pings if kind == "fail")
        assert "exited with code 4" in fail_body and "boom" in fail_body
        assert next(body for kind, _, body in pings if kind == "start") == ""

        output = daemon.output
        assert "alert sent" in output
        for secret in (ROUTING_KEY, CHECK, DISCORD_TOKEN, TOPIC):
            assert secret not in output, secret
    finally:
        services.close()
