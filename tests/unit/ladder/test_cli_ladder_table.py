"""`tailor ladder`'s terminal rung table: a skipped or failed rung's reason is cut at a word and marked as cut
(it printed "… (set la" as if that were the whole reason); the full reason is printed above it and in the report."""

from __future__ import annotations

from rich.console import Console

from tailorlm.cli.ladder import _table
from tailorlm.ladder.result import RungResult

REASON = "not a reasoning task: the references are not numbers (set ladder.rungs to force it)"


def test_a_long_skip_reason_is_cut_at_a_word_and_marked() -> None:
    skipped = RungResult(name="chain-of-thought", title="chain-of-thought", family="prompting", status="skipped",
                         reason=REASON)  # fmt: skip
    console = Console(width=400, color_system=None)
    with console.capture() as out:
        console.print(_table([skipped], "f1"))
    text = " ".join(out.get().split())
    assert "not a reasoning task: the references are not numbers (set …" in text, text
    assert "(set la" not in text


def test_a_short_reason_is_shown_whole() -> None:
    failed = RungResult(name="lora", title="LoRA SFT", family="fine-tuning", status="failed", error="out of memory")
    console = Console(width=400, color_system=None)
    with console.capture() as out:
        console.print(_table([failed], "f1"))
    assert "out of memory" in out.get() and "…" not in out.get()
