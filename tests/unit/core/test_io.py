"""Atomic writes under a full disk, torn JSONL tails, permissions a shared cache needs, and racing writers."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailorlm.core import io
from tailorlm.core.io import append_text, atomic_directory, atomic_write_text, exclusive_lock
from tailorlm.errors import DiskFullError

pytestmark = pytest.mark.unit


@pytest.fixture
def umask_002() -> Iterator[None]:
    """A group-sharing umask, as on a machine where a team shares one cache folder."""
    old = os.umask(0o002)
    yield
    os.umask(old)


def _fail_fsync(code: int):
    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    return fsync


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk quota exceeded")])
def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, '{"v": 1}\n')
    monkeypatch.setattr(io.os, "fsync", _fail_fsync(code))
    with pytest.raises(DiskFullError) as caught:
        atomic_write_text(target, '{"v": 2}\n')
    message = str(caught.value)
    assert f"{words} while writing {target}" in message
    assert "MB free on /" in message and "TAILOR_CACHE" in message and "--out" in message
    assert caught.value.exit_code != 0 and caught.value.__cause__.errno == code  # type: ignore[union-attr]
    assert target.read_text() == '{"v": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # the temp file is gone


def test_a_full_disk_while_filling_a_folder_keeps_the_previous_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"old")
    with pytest.raises(DiskFullError, match="disk full while writing"), atomic_directory(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"new, half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "weights.bin"))
    assert (target / "weights.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_replacing_a_folder_never_leaves_a_half_deleted_one_under_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "marker").write_text("old")
    seen: list[bool] = []
    real_rmtree = io.shutil.rmtree

    def rmtree(path: str | os.PathLike[str], ignore_errors: bool = False) -> None:
        # Whatever is being deleted, the real name already holds the new, whole folder.
        seen.append((target / "marker").read_text() == "new")
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(io.shutil, "rmtree", rmtree)
    with atomic_directory(target) as tmp:
        (tmp / "marker").write_text("new")
    assert seen == [True] and (target / "marker").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_appending_after_a_torn_line_does_not_swallow_the_new_record(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo')  # a writer killed mid-line
    append_text(path, '{"step": 3}\n', fsync=True)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 1} and json.loads(lines[-1]) == {"step": 3}
    assert lines[1] == '{"step": 2, "lo'  # the fragment stays one line, which readers skip
    append_text(path, '{"step": 4}\n')
    assert path.read_text().endswith('{"step": 3}\n{"step": 4}\n')


def test_append_on_a_full_disk_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io.os, "fsync", _fail_fsync(errno.ENOSPC))
    with pytest.raises(DiskFullError, match=r"preds\.jsonl"):
        append_text(tmp_path / "preds.jsonl", "{}\n", fsync=True)


def test_files_folders_and_locks_are_group_readable_under_the_umask(tmp_path: Path, umask_002: None) -> None:
    assert io.current_umask() == 0o002
    f = atomic_write_text(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(f.stat().st_mode) == 0o664  # mkstemp alone would give 0600: unreadable to the group
    with atomic_directory(tmp_path / "entry") as tmp:
        (tmp / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / "entry").stat().st_mode) == 0o775  # mkdtemp alone: 0700
    with exclusive_lock(tmp_path / "entry"):
        pass
    assert stat.S_IMODE((tmp_path / ".entry.lock").stat().st_mode) == 0o664


def test_a_lock_file_owned_by_another_user_still_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another user's lock file we may not open for writing: chmod cannot show that as root, so os.open refuses.
    (tmp_path / ".entry.lock").touch()
    real_open = io.os.open

    def open_(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(io.os, "open", open_)
    with exclusive_lock(tmp_path / "entry"):
        pass


def test_two_threads_converting_the_default_model_convert_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tailorlm.models import default

    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"gguf")
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(default, "default_gguf_path", lambda: gguf)
    conversions: list[int] = []

    def convert(source: Path, folder: Path, stamp: dict[str, object]) -> None:
        conversions.append(1)
        with atomic_directory(folder) as tmp:
            (tmp / "config.json").write_text("{}")
            time.sleep(0.3)  # a slow conversion: the other thread arrives while this one holds the lock
            (tmp / default.COMPLETE_MARKER).write_text(json.dumps(stamp))

    monkeypatch.setattr(default, "_convert", convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(default.ensure_default_model())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert conversions == [1]
    assert default.is_prepared(results[0], default._source_stamp(gguf))


RACER = """
import sys, time
from pathlib import Path
from tailorlm.core.io import atomic_directory, exclusive_lock
target, who, locked = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
def build():
    with atomic_directory(target) as tmp:
        for i in range(20):
            (tmp / f"part{i}").write_text(who)
            time.sleep(0.01)
        (tmp / "complete").write_text(who)
if locked:
    with exclusive_lock(target):
        if not (target / "complete").is_file():
            build()
else:
    build()
"""


@pytest.mark.parametrize("locked", [True, False], ids=["with-lock", "without-lock"])
def test_two_processes_writing_one_cache_entry_both_succeed(tmp_path: Path, locked: bool) -> None:
    target = tmp_path / "cache" / "entry"
    flag = "1" if locked else "0"
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(target), who, flag], stderr=subprocess.PIPE)
        for who in ("alice", "bob")
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()[-2000:]
    # One whole folder, written by one of them: never a mix, never a leftover temp folder beside it.
    owner = (target / "complete").read_text()
    assert {(target / f"part{i}").read_text() for i in range(20)} == {owner}
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == ["entry"]
