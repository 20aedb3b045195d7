"""API keys for `tailor serve`: created by `tailor keys`, stored hashed, verified in constant time.

A key reads ``tlm-<id>-<secret>``. The id (``k_`` + 8 hex digits) is public: it names the key in logs, in
`tailor keys list` and as the A/B sticky id. The secret is 256 random bits, shown once at creation and never stored;
the key file keeps only its SHA-256.

Why SHA-256 and not a slow password hash (scrypt, argon2): slow hashes exist to make guessing a *low-entropy* human
password expensive. A 256-bit random secret cannot be guessed at any hash speed, so a slow hash would only add
milliseconds to every request. A stolen key file therefore reveals no usable key.

Why one JSON file and not SQLite: a server holds tens of keys, an admin may want to read the file, and an atomic
rename gives every reader a whole snapshot without a database lock. Writers (`tailor keys create|revoke`, possibly
two at once) re-read the file under ``exclusive_lock`` before they change it, so no write loses another's key.
The file is owner-only (0600) from its first byte.

The server verifies on every request and calls ``reload_if_changed`` first: one ``stat``, so a `tailor keys revoke`
run from another shell takes effect on the next request without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tailorlm.core.io import DISK_FULL_ERRNOS, disk_full_error, exclusive_lock
from tailorlm.errors import ConfigError, TailorError

log = logging.getLogger(__name__)

Scope = Literal["user", "admin"]

KEYS_FILE_ENV = "TAILOR_KEYS_FILE"
KEY_PREFIX = "tlm"
FILE_VERSION = 1
_ID_RE = re.compile(r"k_[0-9a-f]{8}")
# token_urlsafe(32): 32 bytes → 43 base64url characters. Parsing is strict so a request can't make us hash megabytes.
_KEY_RE = re.compile(r"tlm-(k_[0-9a-f]{8})-([A-Za-z0-9_-]{43})")
_MAX_NAME = 64
# Compared against when the id is unknown, so an unknown id costs the same hash-and-compare as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"tailorlm-no-such-key").hexdigest()


class ApiKeyError(TailorError):
    """A key named on the command line is unknown or ambiguous, or a new key's name is unusable."""


class KeyInfo(BaseModel):
    """What the server knows about a key: everything except the key itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        pattern=rf"^{_ID_RE.pattern}$", description="Public id, e.g. k_3f9a2c1d: in logs and as the A/B id."
    )
    name: str = Field(min_length=1, max_length=_MAX_NAME, description="The admin's label, e.g. alice-laptop.")
    scope: Scope = "user"
    created: float = Field(description="Unix time of creation.")
    revoked: float | None = Field(default=None, description="Unix time of revocation; None while active.")
    rate_limit_rpm: int | None = Field(default=None, gt=0, description="Requests per minute; None: server default.")
    token_limit_tpm: int | None = Field(default=None, gt=0, description="Tokens per minute; None: server default.")

    @property
    def active(self) -> bool:
        return self.revoked is None


class _StoredKey(KeyInfo):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the secret, hex.")


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = FILE_VERSION
    keys: list[_StoredKey] = Field(default_factory=list)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def default_keys_path() -> Path:
    """``$TAILOR_KEYS_FILE``, else ``<user config dir>/tailor/keys.json`` (``~/.config/tailor/keys.json`` on Linux)."""
    if env := os.environ.get(KEYS_FILE_ENV):
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir()) / "tailor" / "keys.json"


def bearer_token(authorization_header: str | None) -> str | None:
    """``"Bearer X"`` → ``"X"``; anything else (no header, another scheme, no token, a space inside) → None.

    The scheme is case-insensitive (RFC 7235), the token is not."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


def _parse_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` for a well-formed key, else None. ``fullmatch`` on a length-bounded ASCII pattern."""
    match = _KEY_RE.fullmatch(presented) if len(presented) <= 64 else None
    return (match.group(1), match.group(2)) if match else None


def _file_signature(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file is replaced. The inode covers two renames within one mtime tick (mtime can be
    as coarse as a few ms), since each write is a new file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _read_file(path: Path) -> dict[str, _StoredKey]:
    """The keys in ``path`` by id ({} when it does not exist). ConfigError names the file and the line or field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: key file is not UTF-8 (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the key file: {err.strerror or err}") from None
    if not text.strip():
        return {}  # an empty file (e.g. `touch`ed by an admin) holds no keys
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path}: line {err.lineno} column {err.colno}: not valid JSON: {err.msg}",
            hint="fix the file, or move it away and create the keys again with `tailor keys create`",
        ) from None
    try:
        parsed = _KeyFile.model_validate(raw)
    except ValidationError as err:
        # Messages without the offending input: that could be a hash, and a hash has no business in a log.
        problems = [
            f"{''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in e['loc']).lstrip('.') or '(top level)'}: "
            f"{e['msg']}"
            for e in err.errors(include_input=False, include_url=False)
        ]
        raise ConfigError(f"{path}: malformed key file:\n  " + "\n  ".join(problems)) from None
    keys: dict[str, _StoredKey] = {}
    for i, key in enumerate(parsed.keys):
        if key.id in keys:
            raise ConfigError(f"{path}: keys[{i}].id: {key.id} appears twice")
        keys[key.id] = key
    return keys


def _write_private(path: Path, text: str) -> None:
    """``core.io.atomic_write_text`` (temp file, fsync, rename), but the file stays owner-only (0600).

    ``atomic_write_text`` widens files to what the umask allows, which is right for a shared cache; here even a
    moment of world-readability is wrong, so we keep ``mkstemp``'s 0600 from the first byte."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(err, path) from err
        raise


class KeyStore:
    """The API keys in one JSON file. Reads are lock-free snapshots; writes re-read and replace under a lock.

    Raises ConfigError at construction when the file is malformed: a server must never start open because its key
    file could not be read. A file that breaks *while* the server runs makes ``reload_if_changed`` fail closed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self._sig = _file_signature(self.path)
        self._keys: dict[str, _StoredKey] = _read_file(self.path)
        self._broken: ConfigError | None = None

    # -- reading ---------------------------------------------------------------------------------------------------

    def list(self) -> list[KeyInfo]:
        """Every key, revoked ones too, oldest first; fresh from the file (the CLI's view)."""
        self._sig, self._keys, self._broken = _file_signature(self.path), _read_file(self.path), None
        return [_public(k) for k in sorted(self._keys.values(), key=lambda k: k.created)]

    def verify(self, presented: str) -> KeyInfo | None:
        """The key's info if ``presented`` is an active key, else None (unknown, malformed, wrong secret, revoked).

        One SHA-256 of a 43-byte secret and one constant-time compare: microseconds, no cache needed."""
        parsed = _parse_key(presented) if isinstance(presented, str) else None
        if parsed is None:
            return None
        key_id, secret = parsed
        stored = self._keys.get(key_id)  # one dict read: safe against reload swapping the dict in another thread
        ok = hmac.compare_digest(_hash(secret), stored.sha256 if stored else _DUMMY_HASH)
        if not ok or stored is None or stored.revoked is not None:
            return None
        return _public(stored)

    def reload_if_changed(self) -> None:
        """Re-read the file if another process replaced it since we last read it. One ``stat`` when it has not.

        Never raises: a file that became malformed is logged (its path and problem, no key material) and every key
        is refused until it is fixed (fail closed); ``empty`` stays False meanwhile so nobody takes it for "no keys".
        """
        sig = _file_signature(self.path)
        if sig == self._sig:
            return
        try:
            keys = _read_file(self.path)
        except ConfigError as err:
            log.error("key file unreadable, refusing every key until it is fixed: %s", err.message)
            self._sig, self._keys, self._broken = sig, {}, err
            return
        self._sig, self._keys, self._broken = sig, keys, None

    @property
    def empty(self) -> bool:
        """No active key (and the file is readable): the server may run open, on localhost only."""
        return self._broken is None and not any(k.revoked is None for k in self._keys.values())

    # -- writing ---------------------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        scope: Scope = "user",
        *,
        rate_limit_rpm: int | None = None,
        token_limit_tpm: int | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key: ``(plaintext key, info)``. The plaintext exists only in the return value; show it once."""
        name = _check_name(name)
        with exclusive_lock(self.path):
            keys = _read_file(self.path)
            clash = [k.id for k in keys.values() if k.name == name and k.revoked is None]
            if clash:
                raise ApiKeyError(
                    f"an active key named {name!r} exists ({clash[0]})",
                    hint="pick another name, or revoke the old key first: names must tell active keys apart",
                )
            key_id = _new_id(keys)
            secret = secrets.token_urlsafe(32)
            try:
                stored = _StoredKey(
                    id=key_id,
                    name=name,
                    scope=scope,
                    created=time.time(),
                    rate_limit_rpm=rate_limit_rpm,
                    token_limit_tpm=token_limit_tpm,
                    sha256=_hash(secret),
                )
            except ValidationError as err:
                raise ApiKeyError(f"invalid key settings: {err.errors(include_url=False)[0]['msg']}") from None
            keys[key_id] = stored
            self._save(keys)
        return f"{KEY_PREFIX}-{key_id}-{secret}", _public(stored)

    def revoke(self, key_id_or_name: str) -> KeyInfo:
        """Revoke a key by id, or by the name of its one active key. Revoking a revoked key changes nothing."""
        with exclusive_lock(self.path):
            keys = _read_file(self.path)
            target = _resolve(keys, key_id_or_name, self.path)
            if target.revoked is None:
                target = target.model_copy(update={"revoked": time.time()})
                keys[target.id] = target
                self._save(keys)
            else:
                self._sig, self._keys, self._broken = _file_signature(self.path), keys, None
        return _public(target)

    def _save(self, keys: dict[str, _StoredKey]) -> None:
        body = {"version": FILE_VERSION, "keys": [k.model_dump() for k in keys.values()]}
        _write_private(self.path, json.dumps(body, indent=2) + "\n")
        self._sig, self._keys, self._broken = _file_signature(self.path), keys, None


def _public(stored: _StoredKey) -> KeyInfo:
    return KeyInfo.model_validate(stored.model_dump(exclude={"sha256"}))


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise ApiKeyError(f"a key name is 1–{_MAX_NAME} printable characters, got {name!r}")
    if _ID_RE.fullmatch(name):
        raise ApiKeyError(
            f"{name!r} looks like a key id", hint="`tailor keys revoke` takes ids and names; pick another"
        )
    return name


def _new_id(keys: dict[str, _StoredKey]) -> str:
    while (key_id := f"k_{secrets.token_hex(4)}") in keys:  # 32 bits: a clash is rare but possible; draw again
        pass
    return key_id


def _resolve(keys: dict[str, _StoredKey], key_id_or_name: str, path: Path) -> _StoredKey:
    """The key an admin means: an exact id, else the one active key of that name, else the newest revoked one."""
    if key_id_or_name in keys:
        return keys[key_id_or_name]
    named = [k for k in keys.values() if k.name == key_id_or_name]
    active = [k for k in named if k.revoked is None]
    if len(active) > 1:
        ids = ", ".join(k.id for k in active)
        raise ApiKeyError(f"{len(active)} active keys are named {key_id_or_name!r}: {ids}", hint="revoke one by id")
    if active:
        return active[0]
    if named:
        return max(named, key=lambda k: k.created)
    raise ApiKeyError(f"no key with id or name {key_id_or_name!r} in {path}", hint="see `tailor keys list`")
