"""`tailor rag tune`: searches chunking and query settings on training questions, builds the best index, and
every later query uses the tuned settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.rag.index import Index

pytestmark = pytest.mark.integration
runner = CliRunner()

# Manual-like documents with plain-text section headings; each answer sentence occurs once.
SECTIONS = {
    "backup.txt": [
        ("NAME", "backup - copy files to a remote store."),
        ("DESCRIPTION", "The tool copies changed files only. Deleted files stay in the store for thirty days."),
        ("OPTIONS", "The --dry-run flag prints what would be copied without copying anything."),
        ("FILES", "The settings live in /etc/backup.conf and are read once at start."),
    ],
    "mailer.txt": [
        ("NAME", "mailer - send reports by mail."),
        ("DESCRIPTION", "Reports are sent every morning at six. A failed delivery is retried four times."),
        ("OPTIONS", "The --quiet flag suppresses the summary line printed after each run."),
        ("ENVIRONMENT", "The variable MAILER_HOST names the relay that receives the reports."),
    ],
    "sensor.txt": [
        ("NAME", "sensor - read the temperature probes."),
        ("DESCRIPTION", "Probes are polled every ten seconds. Readings outside the range raise an alarm."),
        ("OPTIONS", "The --celsius flag prints temperatures in degrees Celsius instead of Fahrenheit."),
        ("BUGS", "A probe that is unplugged while polling reports the last value it read."),
    ],
}
QUESTIONS = [
    ("How long are deleted files kept by the backup tool?", "Deleted files stay in the store for thirty days."),
    ("How do I see what backup would copy without doing it?", "prints what would be copied without copying"),
    ("Where is the backup configuration file?", "/etc/backup.conf"),
    ("When are reports mailed?", "Reports are sent every morning at six."),
    ("How many retries does the mailer make after a failed delivery?", "retried four times"),
    ("Which flag hides the mailer's summary line?", "--quiet"),
    ("Which environment variable sets the mail relay?", "MAILER_HOST"),
    ("How often are probes polled?", "Probes are polled every ten seconds."),
    ("What happens when a reading is out of range?", "Readings outside the range raise an alarm."),
    ("How do I get temperatures in Celsius?", "--celsius"),
    ("What does an unplugged probe report?", "reports the last value it read"),
    ("What does the backup tool copy?", "The tool copies changed files only."),
]


def write_corpus(root: Path) -> tuple[Path, Path]:
    docs = root / "docs"
    docs.mkdir(parents=True)
    for name, sections in SECTIONS.items():
        filler = " Other text about unrelated settings follows here to make the section longer." * 6
        body = "\n\n".join(f"{head}\n{text}{filler}" for head, text in sections)
        (docs / name).write_text(body + "\n", encoding="utf-8")
    questions = root / "train.jsonl"
    questions.write_text("".join(json.dumps({"question": q, "answers": [a]}) + "\n" for q, a in QUESTIONS))
    return docs, questions


def test_tune_builds_the_best_index_and_records_its_settings(tmp_path: Path) -> None:
    docs, questions = write_corpus(tmp_path)
    index = tmp_path / "idx"
    result = runner.invoke(app, ["rag", "tune", str(questions), "--docs", str(docs), "--index", str(index), "-k", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((index / "tune.json").read_text())
    assert report["questions"] == len(QUESTIONS) and report["k"] == 2
    assert report["best"]["recall@2"] >= report["default"]["recall@2"]
    assert {t["chunking"] for t in report["trials"]} == {"200-30", "200-30-plain", "120-20", "300-40"}
    assert "retrieval tuned" in result.output and (index / "tune.md").is_file()
    assert not list(tmp_path.glob(".idx.tune-work*"))  # the side builds are gone
    idx = Index.open(index)
    try:
        tuned = idx.config.retrieval.model_dump()
        assert all(tuned[k] == v for k, v in report["best"]["settings"].items())
        assert idx.config.retrieval.top_k == 2
        assert f"{idx.config.chunking.max_tokens}-{idx.config.chunking.overlap_tokens}" in report["best"]["chunking"]
        hits = idx.retriever().retrieve("Which flag hides the mailer's summary line?")
        assert len(hits) == 2 and "--quiet" in " ".join(h.chunk.text for h in hits)
        # A quoted phrase is no phrase query (LanceDB's index has no positions and raised): the same OR search.
        assert idx.retriever().retrieve('Which flag hides the "mailer summary line"?')
    finally:
        idx.close()
    # Plain-text headings became sections: every chunk knows its heading.
    out = runner.invoke(app, ["rag", "query", "--index", str(index), "relay host variable", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["hits"][0]["heading"]


def test_tune_refuses_to_overwrite_an_index_and_reports_bad_questions(tmp_path: Path) -> None:
    docs, questions = write_corpus(tmp_path)
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["rag", "tune", str(questions), "--docs", str(docs), "--index", str(tmp_path / "idx")])
    assert result.exit_code != 0 and "--replace" in result.output
    assert (tmp_path / "idx" / "keep.txt").read_text() == "mine"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answers": ["a"]}\n{"question": ""}\n')
    result = runner.invoke(app, ["rag", "tune", str(bad), "--docs", str(docs), "--index", str(tmp_path / "new")])
    assert result.exit_code != 0 and "bad.jsonl:2" in result.output
