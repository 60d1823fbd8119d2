"""A private on-disk cache of compiled configs, so ``run-job`` and friends skip the compile child.

An entry is found by the config path, the working directory and the validating code
(:func:`~scheduler.config.inputs.code_key`); it is *used* only when the digest of every input
the compile child recorded (:func:`~scheduler.config.inputs.material`: file contents, the
environment variables interpolated, the ``*_file`` secrets' contents, the directories listed)
still matches.  What must hold:

* **No secret in plain text on disk.**  A compiled config contains secrets (``*_file`` contents,
  interpolated tokens).  The entry stores it encrypted: the key is derived from the input
  digest, i.e. from the very inputs (secrets included) that produced it, and a random salt;
  AES-256-GCM (the ``cryptography`` package) encrypts and authenticates.  So reading an entry
  needs the inputs it was made from, and a changed input fails the authentication, which *is*
  the invalidation.  The entry holds no value of any input, only names and paths.
* **Costly to guess where there is something to guess.**  When the config holds a secret, read
  an environment variable (its value may be a secret wherever it was interpolated) or read a
  file not every user may read (a literal password in a job's ``env:``, a header value), the
  key is derived with scrypt, so each guess at a secret costs what a ``run-job`` pays once.
  Otherwise every input is a world-readable file or a directory listing, the config holds no
  secret, and one SHA-256 derives the key (scrypt would cost each
  call ~10-30 ms and protect nothing).  Accepting both kinds of entry gives an attacker nothing:
  a valid entry of either kind needs the digest, i.e. every input's value.
* **A private place.**  ``SCHEDULER_CACHE_DIR``, else ``$XDG_CACHE_HOME`` or ``~/.cache``
  ``/cron-container-scheduler``, else ``<tmp>/cron-container-scheduler-<uid>``; the directory must
  be ours, not a symlink and mode 0700 (created so); entries are written 0600 through a temp
  file and ``rename``.  A directory that fails these checks is not used: every call compiles.
* **Never trusted blindly.**  A corrupt, foreign or tampered entry fails the MAC or JSON checks
  and is a miss; a miss compiles in the child and replaces the entry.  Failed validations are
  not cached.  ``SCHEDULER_CONFIG_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheduler.config.inputs import Inputs, code_key, material

FORMAT = 1
SCRYPT = {"n": 2**13, "r": 8, "p": 1}  # ~10-30 ms here: cheap per call, costly per guessed secret
APP = "cron-container-scheduler"


def cache_dir() -> Path | None:
    """The cache directory (created private), or None when there is no private place for it."""
    for path in _candidates():
        if _private_dir(path):
            return path
    return None


def _candidates() -> Iterator[Path]:
    """Where the cache may live, in order; the temp directory is looked up only if needed."""
    explicit = os.environ.get("SCHEDULER_CACHE_DIR")
    if explicit:
        yield Path(explicit)
        return
    base = os.environ.get("XDG_CACHE_HOME") or (os.path.expanduser("~/.cache") if "HOME" in os.environ else "")
    if base:
        yield Path(base) / APP
    import tempfile  # imported on use: run-job's start-up (tempfile loads shutil and random)

    yield Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"


def _private_dir(path: Path) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0


def enabled() -> bool:
    return os.environ.get("SCHEDULER_CONFIG_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


class CompileCache:
    """Entries in one private directory; counts its hits, misses and stores."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.hits = self.misses = self.stores = 0
        self._code = code_key()

    @classmethod
    def default(cls) -> CompileCache | None:
        directory = cache_dir() if enabled() else None
        return cls(directory) if directory is not None else None

    def entry_path(self, config_path: str) -> Path:
        key = hashlib.sha256("\0".join([f"v{FORMAT}", self._code, os.getcwd(),
                                        os.path.abspath(config_path)]).encode()).hexdigest()[:40]
        return self.directory / f"{key}.json"

    def lookup(self, config_path: str) -> str | None:
        """The compiled JSON text if an entry exists and every input is unchanged, else None."""
        text = self._open(config_path)
        if text is None:
            self.misses += 1
        else:
            self.hits += 1
        return text

    def _open(self, config_path: str) -> str | None:
        path = self.entry_path(config_path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
                    return None
                entry = json.loads(fh.read())
            inputs = Inputs.from_json(entry["inputs"])
            digest = material(inputs, os.environ, config_path)
            return _decrypt(digest, entry).decode("utf-8")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, config_path: str, inputs: Inputs, digest: str, compiled: str, *, secrets: bool = True) -> bool:
        """Save ``compiled`` under the inputs it came from, if they still have the values the child
        saw (``digest``); a file changed meanwhile would otherwise pin a stale result.  ``secrets``:
        whether the compiled config holds any (see the module docstring for the key it decides)."""
        if material(inputs, os.environ, config_path) != digest:
            return False
        kdf = "sha256" if not secrets and not inputs.env and _all_public(inputs) else "scrypt"
        entry = {"format": FORMAT, "inputs": inputs.as_json(), **_encrypt(digest, compiled.encode("utf-8"), kdf)}
        import tempfile
        path = self.entry_path(config_path)
        fd, tmp = tempfile.mkstemp(prefix=".entry-", dir=self.directory)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            return False
        self.stores += 1
        return True


# --- sealing -------------------------------------------------------------------------------------
def _all_public(inputs: Inputs) -> bool:
    """Every file the validation read is readable by every user (so nothing in it is a secret to
    guess); a file that cannot be checked counts as private."""
    try:
        return all(os.stat(name).st_mode & stat.S_IROTH for name in inputs.files)
    except OSError:
        return False


_AAD = b"cron-container-scheduler config cache v2"  # binds an entry to this use of the key


def _key(digest: str, salt: bytes, kdf: str) -> bytes:
    """The entry's AES key: scrypt (costly per guess) or one SHA-256 (nothing to guess)."""
    if kdf == "scrypt":
        return hashlib.scrypt(bytes.fromhex(digest), salt=salt, dklen=32, maxmem=64 * 1024 * 1024, **SCRYPT)
    if kdf == "sha256":
        return hashlib.sha256(_AAD + salt + bytes.fromhex(digest)).digest()
    raise ValueError(f"unknown key derivation {kdf!r}")


def _encrypt(digest: str, plain: bytes, kdf: str) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    cipher = AESGCM(_key(digest, salt, kdf)).encrypt(nonce, plain, _AAD)
    return {"kdf": kdf, "salt": salt.hex(), "nonce": nonce.hex(), "data": base64.b64encode(cipher).decode()}


def _decrypt(digest: str, entry: dict[str, Any]) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = bytes.fromhex(entry["salt"]), bytes.fromhex(entry["nonce"])
    cipher = base64.b64decode(entry["data"], validate=True)
    try:
        return AESGCM(_key(digest, salt, str(entry.get("kdf", "scrypt")))).decrypt(nonce, cipher, _AAD)
    except InvalidTag:
        raise ValueError("the inputs changed (or the entry is not ours)") from None
