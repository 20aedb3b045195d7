"""`tailor report` through Typer's CliRunner: the files, their self-containment, and atomic output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tailorlm.cli import report as report_cli
from tailorlm.cli._common import TailorGroup
from unit.eval.test_report_build import example_records, make_eval_run  # tests/ is on sys.path

pytestmark = pytest.mark.integration

runner = CliRunner()


def report_app() -> typer.Typer:
    """`report` registered the way main.py will register it, plus a no-op so Typer keeps the subcommand name."""
    app = typer.Typer(cls=TailorGroup, no_args_is_help=True)
    app.command("report")(report_cli.report)

    @app.command("noop")
    def _noop() -> None:
        """Keeps `report` a subcommand rather than the whole app."""

    return app


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_cli.console, "width", 200)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_eval_run(root, "base", example_records(tuned=False))
    make_eval_run(
        root,
        "tuned",
        example_records(tuned=True),
        canaries={"before": 0.41, "after": 0.40, "drop": 0.01, "max_drop": 0.05, "promotable": True},
    )
    return root


def _ids(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_report_writes_self_contained_html_and_markdown(root: Path, tmp_path: Path) -> None:
    base, tuned = _ids(root)
    out = tmp_path / "rep"
    res = runner.invoke(
        report_app(), ["report", base, tuned, "--root", str(root), "--out", str(out), "--title", "Base vs tuned"]
    )
    assert res.exit_code == 0, res.output
    assert str(out / "report.html") in res.output and "f1" in res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["categories.png", "cost.png", "metrics.png", "report.html", "report.json", "summary.md"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page = (out / "report.html").read_text()
    assert "<title>Base vs tuned</title>" in page
    # Self-contained: nothing is fetched (no scripts at all, no remote src/href), every image is inline.
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page
    imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    assert len(imgs) == 3 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", page)  # "0.300 [0.268, 0.332]"
    assert "promotable" in page

    md = (out / "summary.md").read_text()
    for name in ("metrics.png", "categories.png", "cost.png"):
        assert f"]({name})" in md  # relative links to the files beside it
    assert "| f1 |" in md and "Difference vs baseline" in md


def test_json_output_is_the_report_model(root: Path, tmp_path: Path) -> None:
    base, tuned = _ids(root)
    res = runner.invoke(
        report_app(), ["report", base, tuned, "--root", str(root), "--out", str(tmp_path / "r"), "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["id"] for r in data["runs"]] == [base, tuned]
    assert data["metrics"][0]["name"] == "f1" and data["metrics"][0]["diffs"][1]["source"] == "bootstrap"
    assert Path(data["files"]["html"]).is_file()


def test_single_run_defaults_to_the_run_dir(root: Path) -> None:
    base = _ids(root)[0]
    res = runner.invoke(report_app(), ["report", base, "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert (root / base / "report" / "report.html").is_file()
    assert (root / base / "report" / "summary.md").is_file()


def test_unknown_run_is_a_clean_error(root: Path, tmp_path: Path) -> None:
    res = runner.invoke(report_app(), ["report", "no-such-run", "--root", str(root), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "no run matches 'no-such-run'" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_malformed_predictions_name_file_and_line(root: Path, tmp_path: Path) -> None:
    tuned = _ids(root)[1]
    preds = root / tuned / "predictions.jsonl"
    preds.write_text(preds.read_text() + "not json\n")
    res = runner.invoke(report_app(), ["report", tuned, "--root", str(root), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "predictions.jsonl:21: invalid JSON" in " ".join(res.output.split())


def test_output_is_atomic(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report that fails half way leaves the previous report intact and no stray partial folder."""
    base, tuned = _ids(root)
    out = tmp_path / "rep"
    assert runner.invoke(report_app(), ["report", base, "--root", str(root), "--out", str(out)]).exit_code == 0
    before = (out / "report.html").read_text()

    from tailorlm.eval import report as report_pkg

    def boom(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt  # as if the user hit Ctrl-C while the files were being written

    real = report_pkg.atomic_write_text
    calls = {"n": 0}

    def flaky(path: Path, text: str) -> Path:
        calls["n"] += 1
        if calls["n"] == 2:  # report.html is written, then summary.md fails
            boom()
        return real(path, text)

    monkeypatch.setattr(report_pkg, "atomic_write_text", flaky)
    res = runner.invoke(report_app(), ["report", base, tuned, "--root", str(root), "--out", str(out)])
    assert res.exit_code != 0
    assert (out / "report.html").read_text() == before  # the old, complete report is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "runs"]  # no .rep.*.partial left behind


def test_minimal_run_without_predictions_cost_or_categories(tmp_path: Path) -> None:
    """Bare-number metrics, no predictions.jsonl, no cost: the report still renders, and says what is missing."""
    from tailorlm.core.io import atomic_write_json
    from tailorlm.core.run import Run
    from tailorlm.eval.report import create_report

    with Run.create("eval-min", root=tmp_path / "runs", kind="eval") as run:
        atomic_write_json(run.path / "metrics.json", {"metrics": {"accuracy": 0.5}})
    report, files = create_report([run.id], tmp_path / "runs", out=tmp_path / "r")
    assert report.examples is None and report.cost == [] and report.categories == []
    assert any("no predictions.jsonl" in w for w in report.warnings)
    assert [p.name for p in files.charts] == ["metrics.png"]
    assert "0.500" in files.html.read_text()
