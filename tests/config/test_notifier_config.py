"""Alert keys in the config: what each format accepts, what is a secret, and the ``ping`` forms."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.config import load_config
from scheduler.config.compiled import load_compiled
from scheduler.config.yamlsrc import SECRET_KEY
from scheduler.errors import ConfigError
from scheduler.logs import Redactor

ROUTING_KEY = "pd-R0utingKey-0123456789abcdef"
HOOK = "https://discord.com/api/webhooks/1234/discord-token-xyz"
CHECK_URL = "https://hc-ping.com/5f3d9a4e-2b1c-4e8f-9a7d-0c1b2a3d4e5f"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("key", "secret"), [
    ("routing_key", True), ("routingKey", True), ("token", True), ("url", False), ("priority", False),
    ("tags", False), ("severity", False),
])
def test_secret_key_detection_covers_the_alert_keys(key: str, secret: bool) -> None:
    assert bool(SECRET_KEY.search(key)) is secret


@pytest.mark.parametrize("form", ["file", "env"])
def test_routing_key_is_a_masked_secret_in_either_form(form: str, tmp_path: Path) -> None:
    (tmp_path / "pd.key").write_text(ROUTING_KEY + "\n", encoding="utf-8")
    key = "routing_key_file: pd.key" if form == "file" else "routing_key: \"${PD_KEY}\""
    path = write(tmp_path, f"""
jobs:
  nightly:
    kind: command
    shell: "true"
    on_failure: [{{url: "https://events.pagerduty.com/v2/enqueue", format: pagerduty, {key}}}]
    on_recovery: [{{url: "https://events.pagerduty.com/v2/enqueue", format: pagerduty, {key}}}]
""")
    config = load_config(path, env={"PD_KEY": ROUTING_KEY})
    assert config.jobs["nightly"].on_failure[0].routing_key == ROUTING_KEY
    assert ROUTING_KEY in config.secrets
    assert ROUTING_KEY not in Redactor(config.secrets).redact(f"sending with {ROUTING_KEY}")


def test_alert_urls_are_secrets_too(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
jobs:
  nightly:
    kind: command
    shell: "true"
    ping: {CHECK_URL}
    on_failure: [{{url: "{HOOK}", format: discord}}]
""")
    config = load_config(path, env={})
    assert {HOOK, CHECK_URL} <= config.secrets
    masked = Redactor(config.secrets).redact(f"posting to {HOOK} and {CHECK_URL}/start")
    assert "discord-token-xyz" not in masked and "5f3d9a4e" not in masked


def test_ping_short_and_long_forms_and_the_compiled_view(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
jobs:
  short: {{kind: command, shell: "true", ping: {CHECK_URL}}}
  long:
    kind: command
    shell: "true"
    ping: {{url: "{CHECK_URL}", timeout: 3s, retries: 0, send_log: false}}
  none: {{kind: command, shell: "true"}}
""")
    for config in (load_config(path, env={}), load_compiled(path)):  # the daemon reads the compiled view
        short, long = config.jobs["short"].ping, config.jobs["long"].ping
        assert (short.url, short.timeout, short.retries, short.send_log) == (CHECK_URL, timedelta(seconds=10), 3, True)
        assert (long.timeout, long.retries, long.send_log) == (timedelta(seconds=3), 0, False)
        assert config.jobs["none"].ping is None


def test_ntfy_tags_as_list_or_comma_separated_text(tmp_path: Path) -> None:
    path = write(tmp_path, """
jobs:
  a:
    kind: command
    shell: "true"
    on_failure:
      - {url: "https://ntfy.sh/t", format: ntfy, tags: "db, nightly"}
      - {url: "https://ntfy.sh/t", format: ntfy, tags: [db, nightly], priority: max}
""")
    first, second = load_config(path, env={}).jobs["a"].on_failure
    assert first.tags == second.tags == ("db", "nightly")
    assert (first.priority, second.priority) == (None, "max")


def test_a_resolve_check_does_not_guess_when_on_failure_is_itself_invalid(tmp_path: Path) -> None:
    path = write(tmp_path, """
jobs:
  a:
    kind: command
    shell: "true"
    on_failure: [{url: "https://e.example/v2/enqueue", format: pagerduty, routing_key: k-1234567, retries: 99}]
    on_recovery: [{url: "https://e.example/v2/enqueue", format: pagerduty, routing_key: k-1234567}]
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert [(i.line, i.field, i.message) for i in caught.value.issues] == [
        (6, "on_failure.0.retries", "must be at most 10")]
