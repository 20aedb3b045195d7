"""`tailor keys create/list/revoke` through Typer's CliRunner on the real command table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli import keys as keys_cli
from tailorlm.cli.main import app
from tailorlm.serve.auth import KeyStore

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich sizes its module-level console once (80 columns when not a terminal); tables need more to stay whole.
    monkeypatch.setattr(keys_cli.console, "width", 200)


def test_create_list_revoke_round_trip(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    made = runner.invoke(app, ["keys", "create", "alice", "--rpm", "30", "--file", str(file), "--json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    key, key_id = created["key"], created["id"]
    assert key.startswith(f"tlm-{key_id}-") and created["rate_limit_rpm"] == 30 and created["scope"] == "user"
    assert KeyStore(file).verify(key) is not None

    text = runner.invoke(app, ["keys", "create", "ops", "--scope", "admin", "--file", str(file)])
    assert text.exit_code == 0, text.output
    admin_key = next(line for line in text.stdout.splitlines() if line.startswith("tlm-"))
    assert "not stored" in text.output  # the warning (on stderr, so it never pollutes a captured key)
    assert KeyStore(file).verify(admin_key).scope == "admin"

    listed = runner.invoke(app, ["keys", "list", "--file", str(file)])
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.stdout and "alice" in listed.stdout and "admin" in listed.stdout
    listed_json = runner.invoke(app, ["keys", "list", "--file", str(file), "--json"])
    rows = json.loads(listed_json.stdout)
    assert [r["name"] for r in rows] == ["alice", "ops"]
    for out in (listed.stdout, listed_json.stdout):
        for secret in (key, key.split("-", 2)[2], admin_key.split("-", 2)[2], "sha256"):
            assert secret not in out

    revoked = runner.invoke(app, ["keys", "revoke", "alice", "--file", str(file)])
    assert revoked.exit_code == 0, revoked.output
    assert key_id in revoked.stdout
    assert KeyStore(file).verify(key) is None
    assert json.loads(runner.invoke(app, ["keys", "list", "--file", str(file), "--json"]).stdout)[0]["revoked"]


def test_errors_are_clean_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "keys.json"
    monkeypatch.setenv("TAILOR_KEYS_FILE", str(file))  # no --file: the env var names the file
    assert runner.invoke(app, ["keys", "create", "bob"]).exit_code == 0
    assert file.exists()
    unknown = runner.invoke(app, ["keys", "revoke", "nobody"])
    assert unknown.exit_code == 1 and "no key" in unknown.output and "Traceback" not in unknown.output
    file.write_text("{broken")
    broken = runner.invoke(app, ["keys", "list"])
    assert broken.exit_code == 1 and str(file) in broken.output.replace("\n", "")
    assert runner.invoke(app, ["keys", "create", "x", "--scope", "root"]).exit_code == 2


def test_list_empty(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "list", "--file", str(tmp_path / "none.json")])
    assert result.exit_code == 0 and "no keys" in result.stdout
