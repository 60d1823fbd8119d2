"""The compiled-config cache: reused while every input is unchanged, private, no secret in clear."""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from scheduler.config import load_compiled
from scheduler.config.cache import CompileCache, cache_dir
from scheduler.errors import ConfigError

SECRET = "tok-7f3a9c1e55d2b8"
ENV_SECRET = "env-secret-91c4e07a"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> CompileCache:
    monkeypatch.setenv("SCHEDULER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SCHEDULER_CONFIG_CACHE", raising=False)
    made = CompileCache.default()
    assert made is not None
    return made


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def config_with_secret(tmp_path: Path) -> Path:
    write(tmp_path / "secrets" / "token", SECRET + "\n")
    return write(tmp_path / "cfg" / "jobs.yaml", """
        jobs:
          fetch:
            kind: command
            every: 1h
            command: ["echo", "${GREETING:-hello}"]
            env:
              API_TOKEN_file: ../secrets/token
              REGION: "${CACHE_TEST_REGION}"
    """)


def entries(cache: CompileCache) -> list[Path]:
    return [p for p in cache.directory.iterdir() if p.suffix == ".json"]


def test_a_second_load_reuses_the_result_and_reads_the_same(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    path = config_with_secret(tmp_path)
    first = load_compiled(path, cache)
    second = load_compiled(path, cache)
    assert (cache.misses, cache.hits, cache.stores) == (1, 1, 1)
    assert second.jobs["fetch"] == first.jobs["fetch"]
    assert second.jobs["fetch"].env == {"API_TOKEN": SECRET, "REGION": "eu"}
    assert second.secrets == first.secrets and SECRET in second.secrets
    assert second.digest == first.digest and second.sources == first.sources
    assert second.schedules["fetch"].describe() == first.schedules["fetch"].describe()


def test_the_entry_holds_no_secret_and_is_private(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", ENV_SECRET)
    path = config_with_secret(tmp_path)
    write(path, path.read_text().replace("REGION:", "SERVICE_PASSWORD:"))  # the env value becomes a secret
    config = load_compiled(path, cache)
    assert {SECRET, ENV_SECRET} <= config.secrets
    [entry] = entries(cache)
    raw = entry.read_bytes()
    for secret in (SECRET, ENV_SECRET):
        for form in (secret.encode(), base64.b64encode(secret.encode()), secret.encode().hex().encode()):
            assert form not in raw
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    assert list(cache.directory.iterdir()) == [entry]  # no temp file left behind


def test_editing_the_config_file_invalidates(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    path = config_with_secret(tmp_path)
    load_compiled(path, cache)
    write(path, path.read_text().replace("every: 1h", "every: 2h"))
    config = load_compiled(path, cache)
    assert config.jobs["fetch"].every.total_seconds() == 7200
    assert (cache.misses, cache.hits) == (2, 0)
    assert load_compiled(path, cache).jobs["fetch"].every.total_seconds() == 7200
    assert cache.hits == 1


def test_an_interpolated_variable_invalidates_and_an_unrelated_one_does_not(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    path = config_with_secret(tmp_path)
    load_compiled(path, cache)
    monkeypatch.setenv("CACHE_TEST_UNRELATED", "anything")
    assert load_compiled(path, cache).jobs["fetch"].env["REGION"] == "eu"
    assert cache.hits == 1
    monkeypatch.setenv("CACHE_TEST_REGION", "us")
    assert load_compiled(path, cache).jobs["fetch"].env["REGION"] == "us"
    assert (cache.misses, cache.hits) == (2, 1)


def test_a_variable_with_a_default_invalidates_when_it_becomes_set(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    monkeypatch.delenv("GREETING", raising=False)
    path = config_with_secret(tmp_path)
    assert load_compiled(path, cache).jobs["fetch"].command == ("echo", "hello")
    monkeypatch.setenv("GREETING", "bonjour")
    assert load_compiled(path, cache).jobs["fetch"].command == ("echo", "bonjour")
    monkeypatch.delenv("GREETING")
    assert load_compiled(path, cache).jobs["fetch"].command == ("echo", "hello")
    assert (cache.misses, cache.hits) == (3, 0)


def test_a_changed_secret_file_invalidates(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    path = config_with_secret(tmp_path)
    load_compiled(path, cache)
    (tmp_path / "secrets" / "token").write_text("rotated-0b1d2e3f\n")
    config = load_compiled(path, cache)
    assert config.jobs["fetch"].env["API_TOKEN"] == "rotated-0b1d2e3f"
    assert "rotated-0b1d2e3f" in config.secrets and SECRET not in config.secrets
    assert (cache.misses, cache.hits) == (2, 0)
    assert b"rotated-0b1d2e3f" not in entries(cache)[0].read_bytes()


def test_a_new_file_in_a_config_directory_invalidates(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    config_with_secret(tmp_path)
    directory = tmp_path / "cfg"
    assert set(load_compiled(directory, cache).jobs) == {"fetch"}
    assert set(load_compiled(directory, cache).jobs) == {"fetch"}
    write(directory / "more.yaml", """
        jobs:
          extra: {kind: command, every: 1h, command: ["true"]}
    """)
    assert set(load_compiled(directory, cache).jobs) == {"fetch", "extra"}
    assert (cache.misses, cache.hits) == (2, 1)


def test_a_tampered_or_foreign_entry_is_never_used(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    path = config_with_secret(tmp_path)
    load_compiled(path, cache)
    [entry] = entries(cache)
    text = entry.read_text()
    data_at = text.index('"data": "') + len('"data": "')
    flipped = "B" if text[data_at] != "B" else "C"
    entry.write_text(text[:data_at] + flipped + text[data_at + 1:])
    assert load_compiled(path, cache).jobs["fetch"].env["REGION"] == "eu"
    assert (cache.misses, cache.hits) == (2, 0)
    os.chmod(entries(cache)[0], 0o644)  # readable by others: not ours to trust
    assert load_compiled(path, cache).jobs["fetch"].env["REGION"] == "eu"
    assert (cache.misses, cache.hits) == (3, 0)


def test_an_invalid_config_is_never_cached(cache, tmp_path):
    path = write(tmp_path / "bad.yaml", """
        jobs:
          broken: {kind: command, every: 1h}
    """)
    for _ in range(2):
        with pytest.raises(ConfigError):
            load_compiled(path, cache)
    assert entries(cache) == [] and cache.hits == 0


def test_a_directory_that_is_not_private_is_not_used(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    monkeypatch.setenv("SCHEDULER_CACHE_DIR", str(shared))
    assert cache_dir() is None and CompileCache.default() is None
    monkeypatch.setenv("SCHEDULER_CACHE_DIR", str(tmp_path / "private"))
    monkeypatch.setenv("SCHEDULER_CONFIG_CACHE", "0")
    assert CompileCache.default() is None
    config = write(tmp_path / "ok.yaml", """
        jobs:
          ok: {kind: command, every: 1h, command: ["true"]}
    """)
    assert set(load_compiled(config).jobs) == {"ok"}
    assert not (tmp_path / "private").exists() or not any((tmp_path / "private").iterdir())


def kdf_of(cache: CompileCache) -> str:
    [entry] = entries(cache)
    return json.loads(entry.read_text())["kdf"]


def test_the_key_is_costly_to_guess_exactly_where_there_is_something_to_guess(cache, tmp_path, monkeypatch):
    """scrypt for a config holding a secret, reading the environment or a file other users may not
    read; one SHA-256 where every input is a file anyone could read anyway.  Both are reused alike."""
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    plain = write(tmp_path / "plain" / "jobs.yaml", """
        jobs:
          ok: {kind: command, every: 1h, command: ["true"]}
    """)
    plain.chmod(0o644)
    for path, kdf in ((plain, "sha256"), (config_with_secret(tmp_path), "scrypt")):
        for entry in entries(cache):
            entry.unlink()
        first = load_compiled(path, cache)
        assert kdf_of(cache) == kdf
        assert load_compiled(path, cache) == first
    assert (cache.misses, cache.hits) == (2, 2)
    with_variable = write(tmp_path / "var" / "jobs.yaml", """
        jobs:
          ok: {kind: command, every: 1h, command: ["echo", "${CACHE_TEST_REGION}"]}
    """)
    for entry in entries(cache):
        entry.unlink()
    assert not load_compiled(with_variable, cache).secrets
    assert kdf_of(cache) == "scrypt"  # no secret by the config's rules, but a variable's value may be one
    private = write(tmp_path / "private-file" / "jobs.yaml", """
        jobs:
          ok: {kind: command, every: 1h, command: ["true"], env: {DB_PASS: hunter2}}
    """)
    private.chmod(0o600)  # a literal password no other user may read: guessing it must stay costly
    for entry in entries(cache):
        entry.unlink()
    assert not load_compiled(private, cache).secrets
    assert kdf_of(cache) == "scrypt"


def test_an_entry_relabelled_to_the_cheap_key_is_never_used(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_TEST_REGION", "eu")
    path = config_with_secret(tmp_path)
    load_compiled(path, cache)
    [entry] = entries(cache)
    for kdf in ("sha256", "none"):
        data = json.loads(entry.read_text())
        entry.write_text(json.dumps({**data, "kdf": kdf}))
        assert load_compiled(path, cache).jobs["fetch"].env["API_TOKEN"] == SECRET
        assert kdf_of(cache) == "scrypt"  # the miss compiled again and replaced the entry
    assert (cache.misses, cache.hits) == (3, 0)
