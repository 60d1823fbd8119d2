"""A secret canary never reaches captured logs, stored errors or alert material, even at DEBUG."""

from __future__ import annotations

import subprocess

from scheduler.state import StateStore

CANARY = "canary-7f3e9b2c-SECRET"


def test_secret_canary_never_logged(write_config, scheduler_cmd, scheduler_env, tmp_path):
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(CANARY + "\n")
    (tmp_path / "leaky_mod.py").write_text(
        "def job(ctx):\n"
        "    import os\n"
        "    ctx.log.debug('about to call', url='https://api.example/x?token=' + os.environ['API_TOKEN'],\n"
        "                  headers={'Authorization': 'Bearer ' + os.environ['API_TOKEN']})\n"
        "    print('raw print of', os.environ['API_TOKEN'])\n"
        "    raise RuntimeError('request failed with token ' + os.environ['API_TOKEN'])\n")
    config = write_config(f"""
        defaults:
          env:
            API_TOKEN: ${{CANARY_VALUE}}
        jobs:
          echoer:
            kind: command
            shell: 'echo "token is $API_TOKEN"; echo "Authorization: Bearer $API_TOKEN" >&2; exit 1'
          from_file:
            kind: command
            env: {{OTHER: plain}}
            shell: 'cat {secret_file}; exit 2'
          leaky:
            kind: python
            function: leaky_mod:job
            cwd: {tmp_path}
        http:
          api_token_file: {secret_file}
    """)
    env = {**scheduler_env, "CANARY_VALUE": CANARY}
    outputs = []
    for job in ("echoer", "from_file", "leaky"):
        proc = subprocess.run([*scheduler_cmd, "run-job", job, "--config", str(config), "--data-dir",
                               str(tmp_path / "data"), "--log-level", "debug", "--log-format", "json"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    joined = "\n".join(outputs)
    assert "***" in joined  # the lines were logged, masked
    assert CANARY not in joined
    store = StateStore.open(tmp_path / "data" / ".scheduler" / "state.db")
    try:
        for record in store.history(None, 100):
            assert CANARY not in repr(record.as_json())
    finally:
        store.close()
