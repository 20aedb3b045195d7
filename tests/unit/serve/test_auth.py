"""API keys: verification, what the key file holds (never a secret), its permissions, reloads and racing writers."""

from __future__ import annotations

import multiprocessing as mp
import stat
import time
from pathlib import Path

import pytest

from tailorlm.errors import ConfigError, TailorError
from tailorlm.serve.auth import ApiKeyError, KeyInfo, KeyStore, bearer_token, default_keys_path

pytestmark = pytest.mark.unit


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "keys.json"


def test_create_then_verify(path: Path) -> None:
    store = KeyStore(path)
    assert store.empty and not path.exists()  # nothing is written until the first key
    key, info = store.create("alice-laptop", rate_limit_rpm=30)
    assert key.startswith(f"tlm-{info.id}-") and info.id.startswith("k_") and len(info.id) == 10
    assert (info.name, info.scope, info.revoked, info.rate_limit_rpm, info.token_limit_tpm) == (
        "alice-laptop",
        "user",
        None,
        30,
        None,
    )
    assert store.verify(key) == info
    assert not store.empty
    admin_key, admin = store.create("ops", "admin")
    assert store.verify(admin_key) == admin and admin.scope == "admin"
    # A fresh process (a new KeyStore) verifies the same keys from the file.
    assert KeyStore(path).verify(key) == info


def test_wrong_malformed_and_revoked_keys_are_refused(path: Path) -> None:
    store = KeyStore(path)
    key, info = store.create("bob")
    secret = key.split("-", 2)[2]
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    other_id = f"tlm-k_00000000-{secret}"
    for bad in [wrong, other_id, "", "tlm", key + "x", key[:-1], key.replace("tlm-", "sk-"), " " + key, "x" * 10**6]:
        assert store.verify(bad) is None, bad
    assert store.revoke(info.id).revoked is not None
    assert store.verify(key) is None
    assert store.empty


def test_verify_is_fast(path: Path) -> None:
    store = KeyStore(path)
    key, _ = store.create("fast")
    store.verify(key)
    t0 = time.perf_counter()
    for _ in range(1000):
        store.reload_if_changed()
        assert store.verify(key) is not None
    assert (time.perf_counter() - t0) / 1000 < 1e-3


def test_file_holds_no_secret_and_is_owner_only(path: Path) -> None:
    store = KeyStore(path)
    keys = [store.create(f"user{i}")[0] for i in range(3)]
    store.revoke("user1")
    text = path.read_text()
    for key in keys:
        assert key not in text and key.split("-", 2)[2] not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_revoke_in_another_process_is_seen_after_reload(path: Path) -> None:
    server = KeyStore(path)
    key, info = server.create("carol")
    assert server.verify(key) == info
    admin = KeyStore(path)  # `tailor keys revoke` in another shell
    admin.revoke("carol")
    admin.create("dave")
    server.reload_if_changed()
    assert server.verify(key) is None
    assert [k.name for k in server.list()] == ["carol", "dave"]


def test_revoke_by_id_or_name_and_its_errors(path: Path) -> None:
    store = KeyStore(path)
    _, first = store.create("erin")
    revoked = store.revoke("erin")
    assert revoked.id == first.id and revoked.revoked is not None
    assert store.revoke(first.id) == revoked  # again: unchanged
    _, second = store.create("erin")  # the name is free again once revoked
    assert store.revoke("erin").id == second.id
    with pytest.raises(ApiKeyError, match="no key"):
        store.revoke("nobody")
    store.create("frank")
    with pytest.raises(TailorError, match="active key named"):
        store.create("frank")  # two active keys of one name would make `revoke NAME` ambiguous
    with pytest.raises(ApiKeyError):
        store.create("k_12345678")
    with pytest.raises(ApiKeyError):
        store.create("  ")
    with pytest.raises(ApiKeyError):
        store.create("ok", rate_limit_rpm=0)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"version": 1,\n "keys": [,]}', "line 2"),
        ('{"version": 1, "keys": [{"id": "k_1", "name": "x"}]}', "keys[0].id"),
        ('{"version": 2, "keys": []}', "version"),
        ('{"version": 1, "keys": [], "extra": 1}', "extra"),
        ("[1, 2]", "top level"),
    ],
)
def test_malformed_file_is_a_config_error_naming_it(path: Path, content: str, where: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path)) as err:
        KeyStore(path)
    assert where in str(err.value)


def test_file_broken_while_serving_fails_closed(path: Path) -> None:
    server = KeyStore(path)
    key, _ = server.create("gina")
    path.write_text("{ not json")
    server.reload_if_changed()  # no exception on the request path
    assert server.verify(key) is None
    assert not server.empty  # broken is not "no keys": never a reason to run open
    with pytest.raises(ConfigError):
        KeyStore(path).create("hank")  # the CLI refuses to overwrite what it cannot read


def _create_many(path: str, prefix: str, n: int, start: mp.synchronize.Event, out: mp.Queue) -> None:
    store = KeyStore(Path(path))
    start.wait()
    out.put([store.create(f"{prefix}{i}")[0] for i in range(n)])


def test_two_processes_creating_keys_keep_every_key(path: Path) -> None:
    ctx = mp.get_context("fork")  # fork: the child needs no re-import of this (importlib-mode) test module
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(str(path), p, 20, start, out)) for p in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    keys = [k for _ in procs for k in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    store = KeyStore(path)
    assert len(store.list()) == 40 == len(keys)
    assert all(store.verify(k) is not None for k in keys)


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in [None, "", "Bearer", "Bearer ", "Basic abc", "abc", "Bearer a b", "Token abc"]:
        assert bearer_token(bad) is None, bad


def test_default_keys_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAILOR_KEYS_FILE", str(tmp_path / "k.json"))
    assert default_keys_path() == tmp_path / "k.json"
    monkeypatch.delenv("TAILOR_KEYS_FILE")
    assert default_keys_path().parts[-2:] == ("tailor", "keys.json")


def test_key_info_is_frozen_and_has_no_hash() -> None:
    info = KeyInfo(id="k_0123abcd", name="x", scope="user", created=1.0)
    assert "sha256" not in info.model_dump()
    with pytest.raises(ValueError):
        info.name = "y"  # type: ignore[misc]
