"""The constitution file, principle sampling, the critique/revision requests and the cleaning of what comes back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tailorlm.errors import ConfigError
from tailorlm.train.align.constitution import (
    DEFAULT_CONSTITUTION,
    CritiqueExample,
    Principle,
    clean_critique,
    clean_revision,
    critique_messages,
    load_constitution,
    revision_messages,
    sample_principle,
)

pytestmark = pytest.mark.unit

ONE_PRINCIPLE = """\
principles:
  - name: honesty
    critique_request: Name the false claims.
    revision_request: Rewrite it truthfully.
"""


def test_default_constitution_loads_with_its_examples() -> None:
    c = load_constitution()
    assert DEFAULT_CONSTITUTION.is_file()
    assert 10 <= len(c.principles) <= 16
    assert len({p.name for p in c.principles}) == len(c.principles)
    assert all(p.critique_request and p.revision_request for p in c.principles)
    assert c.examples and 1 <= len(c.examples) <= 3


def test_own_file_without_examples_gets_the_default_ones_and_an_empty_list_means_none(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(ONE_PRINCIPLE)
    c = load_constitution(path)
    assert [p.name for p in c.principles] == ["honesty"]
    assert c.examples == load_constitution().examples
    path.write_text(ONE_PRINCIPLE + "examples: []\n")
    assert load_constitution(path).examples == []


def test_unknown_key_names_the_file_the_field_and_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(ONE_PRINCIPLE.replace("critique_request", "critque_request"))
    with pytest.raises(ConfigError) as err:
        load_constitution(path)
    message = str(err.value)
    assert str(path) in message
    assert "principles[0].critque_request" in message
    assert "critique_request" in message.split("did you mean", 1)[1]


def test_missing_and_empty_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(ONE_PRINCIPLE + "  - name: privacy\n    critique_request: '  '\n")
    with pytest.raises(ConfigError) as err:
        load_constitution(path)
    assert "principles[1].critique_request" in str(err.value)
    assert "principles[1].revision_request: required key is missing" in str(err.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("principles: []\n", "principles"),
        (ONE_PRINCIPLE + ONE_PRINCIPLE.split("\n", 1)[1], "repeated: honesty"),
        ("- name: x\n  critique_request: a\n  revision_request: b\n", "`principles:` key"),
    ],
    ids=["empty", "duplicate-names", "bare-list"],
)
def test_malformed_constitutions_are_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_constitution(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_constitution(tmp_path / "nope.yaml")


def test_principle_sampling_is_deterministic_per_prompt_seed_and_round() -> None:
    principles = load_constitution().principles
    draw = [sample_principle(principles, seed=0, key=f"k{i}", round=1).name for i in range(300)]
    assert draw == [sample_principle(principles, seed=0, key=f"k{i}", round=1).name for i in range(300)]
    # every principle gets drawn, none dominates: a uniform draw, not one stuck value
    counts = Counter(draw)
    assert set(counts) == {p.name for p in principles}
    assert max(counts.values()) < 60
    other_seed = [sample_principle(principles, seed=1, key=f"k{i}", round=1).name for i in range(300)]
    other_round = [sample_principle(principles, seed=0, key=f"k{i}", round=2).name for i in range(300)]
    assert draw != other_seed and draw != other_round


def test_a_prompt_draws_the_same_principle_whatever_else_is_sampled() -> None:
    principles = load_constitution().principles
    alone = sample_principle(principles, seed=3, key="abc", round=2)
    for i in range(20):
        sample_principle(principles, seed=3, key=f"other{i}", round=2)
    assert sample_principle(principles, seed=3, key="abc", round=2) == alone


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  I can't help with that.  ", "I can't help with that."),
        ("Revision: I can't help with that.", "I can't help with that."),
        ("**Revised response:** Be careful.", "Be careful."),
        ("Sure, here's the revised answer: Ask a locksmith.", "Ask a locksmith."),
        ("Here is my rewritten response:\n\nAsk a locksmith.", "Ask a locksmith."),
        ('Revision: "Ask a locksmith."', "Ask a locksmith."),
        ("Ask a locksmith.\n\nCritique request: is it harmful?\nCritique: no", "Ask a locksmith."),
        ("Ask a locksmith.\nUser: thanks\nAssistant: welcome", "Ask a locksmith."),
        ("Assistant: Revision: Ask a locksmith.", "Ask a locksmith."),
        ("Revision:", ""),
        ("", ""),
        ('He said "no" and "yes".', 'He said "no" and "yes".'),
        ("Response time matters: be quick.", "Response time matters: be quick."),
        ("Line one.\nLine two about the revision: fine.", "Line one.\nLine two about the revision: fine."),
    ],
)
def test_clean_revision(raw: str, clean: str) -> None:
    assert clean_revision(raw) == clean


def test_clean_critique_drops_the_label_and_the_revision_it_went_on_to_write() -> None:
    assert clean_critique("Critique: The answer helps with a crime.\nRevision request: fix it") == (
        "The answer helps with a crime."
    )
    assert clean_critique("The answer is fine.") == "The answer is fine."


def test_requests_put_the_examples_before_the_real_turn() -> None:
    principle = Principle(name="p", critique_request="CRIT-REQ", revision_request="REV-REQ")
    ex = CritiqueExample(
        prompt="ex-p",
        answer="ex-a",
        critique_request="ex-cr",
        critique="ex-c",
        revision_request="ex-rr",
        revision="ex-r",
    )
    msgs = critique_messages("the prompt", "the answer", principle, [ex])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "ex-c"
    assert "User: the prompt\nAssistant: the answer" in msgs[-1]["content"]
    assert msgs[-1]["content"].endswith("Critique request: CRIT-REQ")
    msgs = revision_messages("the prompt", "the answer", principle, "the critique", [ex])
    assert msgs[2]["content"] == "ex-r"
    last = msgs[-1]["content"]
    assert "Critique: the critique" in last and "Revision request: REV-REQ" in last
    assert len(critique_messages("p", "a", principle, [])) == 2
