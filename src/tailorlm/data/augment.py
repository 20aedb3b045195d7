"""Data augmentation: more training records from the ones you have, each tagged with where it came from.

    from tailorlm.data.augment import augment
    result = augment(load_dataset("train.jsonl"), "paraphrase", engine=build_engine(System.load("teacher")), n=2)
    result.dataset          # originals + augmentations; write it with write_jsonl(result.dataset, "aug.jsonl")

Three methods, one loop: pick the texts to rewrite (the user turns by default: rewriting an answer risks changing
its facts), rewrite each ``n`` times, and keep a record only when it differs from its source and its siblings.

- ``paraphrase``: an Engine (any System: a local HF model, an OpenAI-compatible teacher) rewrites the text
  (Kumar et al. 2019, "Submodular optimization-based diverse paraphrasing"; the instruction-data variant of
  Wang et al. 2023, "Self-Instruct").
- ``backtranslate``: the Engine translates to a pivot language and back (Sennrich et al. 2016; Xie et al. 2020,
  "Unsupervised Data Augmentation"), two batched prompts.
- ``synonym``: EDA's synonym replacement (Wei & Zou 2019): about ``rate`` of the words that have a synonym are
  swapped, deterministically per (seed, record, copy). No engine; the thesaurus is the compact hand-made table in
  ``SYNONYM_GROUPS`` (WordNet would need nltk's corpus download, which this toolkit never does).

Every augmented record carries ``metadata.augmented = {method, source_id, index}``; ``source_id`` is the
``record_id`` of the original. ``Dataset.split`` (and so SFT's eval split) puts augmented records in train only,
and drops those whose original went to eval, so no paraphrase of an eval answer is trained on.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tailorlm.data.load import Dataset
from tailorlm.data.records import TextRecord, record_to_dict
from tailorlm.errors import DataError

Method = Literal["paraphrase", "backtranslate", "synonym"]
METHODS: tuple[str, ...] = ("paraphrase", "backtranslate", "synonym")
Targets = Literal["user", "assistant", "all"]

PARAPHRASE_PROMPT = (
    "Paraphrase the text below. Keep its meaning, facts, names and numbers; change the wording and sentence "
    "structure. Reply with the paraphrase only.\n\nText: {text}"
)
TRANSLATE_PROMPT = "Translate the text below into {language}. Reply with the translation only.\n\nText: {text}"

# EDA's synonym replacement needs a thesaurus. Each group lists interchangeable words of the same part of speech and
# inflection. Words that are often another part of speech are left out, because a swap there breaks the sentence:
# "start" (the start), "help" (for help), "right" (turn right), "make" (make sure), "still" (I still think).
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("big", "large", "huge", "sizable"),
    ("small", "little", "tiny", "compact"),
    ("fast", "quick", "rapid", "speedy"),
    ("good", "nice", "decent", "solid"),
    ("great", "excellent", "superb", "terrific"),
    ("bad", "poor", "awful", "terrible"),
    ("important", "significant", "crucial", "essential"),
    ("easy", "simple", "straightforward"),
    ("difficult", "tough", "challenging"),
    ("happy", "glad", "cheerful", "pleased"),
    ("sad", "unhappy", "gloomy", "downcast"),
    ("smart", "clever", "intelligent"),
    ("new", "fresh", "novel", "recent"),
    ("strange", "odd", "unusual", "peculiar"),
    ("beautiful", "lovely", "pretty", "attractive"),
    ("correct", "accurate", "exact"),
    ("wrong", "incorrect", "mistaken"),
    ("whole", "entire", "complete"),
    ("main", "primary", "principal", "chief"),
    ("common", "usual", "typical", "ordinary"),
    ("rare", "uncommon", "scarce"),
    ("rich", "wealthy", "affluent"),
    ("angry", "furious", "irate"),
    ("afraid", "scared", "frightened", "fearful"),
    ("tired", "weary", "exhausted", "sleepy"),
    ("quiet", "silent", "hushed"),
    ("loud", "noisy", "booming"),
    ("dirty", "filthy", "grimy"),
    ("friendly", "amiable", "cordial"),
    ("often", "frequently", "regularly"),
    ("maybe", "perhaps", "possibly"),
    ("quickly", "rapidly", "swiftly", "speedily"),
    ("slowly", "gradually", "leisurely"),
    ("really", "truly", "genuinely"),
    ("very", "extremely", "highly"),
    ("almost", "nearly", "practically"),
    ("explain", "describe", "clarify"),
    ("choose", "pick", "select"),
    ("buy", "purchase"),
    ("find", "discover", "locate"),
    ("give", "provide", "offer"),
    ("car", "automobile", "vehicle"),
    ("house", "home", "residence"),
    ("job", "occupation", "position"),
    ("problem", "issue", "difficulty"),
    ("problems", "issues", "difficulties"),
    ("idea", "notion", "concept", "thought"),
    ("ideas", "notions", "concepts", "thoughts"),
    ("methods", "approaches", "techniques"),
    ("goal", "aim", "objective", "target"),
    ("example", "instance", "illustration"),
    ("examples", "instances", "illustrations"),
    ("kid", "child", "youngster"),
    ("kids", "children", "youngsters"),
    ("friend", "companion", "pal"),
    ("city", "town"),
    ("trip", "journey", "voyage", "excursion"),
    ("story", "tale", "narrative"),
    ("mistake", "error", "blunder"),
    ("mistakes", "errors", "blunders"),
    ("summarize", "sum up", "recap"),
)

_WORD = re.compile(r"[A-Za-z]+")


def synonym_table(groups: Sequence[Sequence[str]] = SYNONYM_GROUPS) -> dict[str, list[str]]:
    """word → its synonyms (every other word of every group it is in), in table order, without duplicates."""
    table: dict[str, list[str]] = {}
    for group in groups:
        for word in group:
            others = table.setdefault(word, [])
            others.extend(w for w in group if w != word and w not in others)
    return table


_TABLE = synonym_table()


def _match_case(word: str, template: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if template[:1].isupper() else word


def synonym_replace(text: str, rng: random.Random, *, rate: float = 0.1, table: dict[str, list[str]] = _TABLE) -> str:
    """EDA synonym replacement: swap ``max(1, round(rate * words))`` words that have synonyms, chosen by ``rng``.

    Case is kept (``Big`` → ``Large``), as is everything between words (punctuation, spacing, markup).
    """
    matches = list(_WORD.finditer(text))
    candidates = [m for m in matches if m.group().lower() in table]
    if not candidates:
        return text
    count = min(len(candidates), max(1, round(rate * len(matches))))
    chosen = sorted(rng.sample(candidates, count), key=lambda m: m.start())
    out, last = "", 0
    for m in chosen:
        word = _match_case(rng.choice(table[m.group().lower()]), m.group())
        out = _article(out + text[last : m.start()], word) + word
        last = m.end()
    return out + text[last:]


_ARTICLE = re.compile(r"\b([Aa])(n?)(\s+)$")


def _article(before: str, word: str) -> str:
    """``a`` / ``an`` before the new word: "a strange" → "an unusual"."""
    m = _ARTICLE.search(before)
    if m is None:
        return before
    an = "n" if word[:1].lower() in "aeiou" else ""
    return before[: m.start()] + m.group(1) + an + m.group(3)


def clean_generation(text: str, source: str) -> str:
    """Strip what models wrap a rewrite in: a "Paraphrase:" label, quotes, and extra lines for a one-line source."""
    text = text.strip()
    text = re.sub(r"^(?:paraphrase|translation|text|rewritten text)\s*:\s*", "", text, flags=re.IGNORECASE)
    if "\n" not in source.strip():
        text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and not (source[:1] == source[-1:] == text[0]):
        text = text[1:-1].strip()
    return text


# --- the loop -----------------------------------------------------------------------------------------------


@dataclass
class AugmentResult:
    dataset: Dataset  # originals (unless left out) followed by augmentations
    made: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {"unchanged": 0, "duplicate": 0, "empty": 0})


def _slots(record: Any, targets: Targets) -> list[tuple[int | None, str]]:
    """The texts to rewrite: ``(message index, content)`` for chats, ``(None, text)`` for text records."""
    if isinstance(record, TextRecord):
        return [(None, record.text)]
    roles = {"user": ("user",), "assistant": ("assistant",), "all": ("user", "assistant")}[targets]
    return [(i, m.content) for i, m in enumerate(record.messages) if m.role in roles and m.content]


def _rebuild(record: Any, texts: dict[int | None, str], tag: dict[str, Any]) -> dict[str, Any]:
    data = record_to_dict(record)
    if isinstance(record, TextRecord):
        data["text"] = texts[None]
    else:
        for i, text in texts.items():
            assert i is not None
            data["messages"][i]["content"] = text
    data["metadata"] = {**(data.get("metadata") or {}), "augmented": tag}
    return data


def _rewrite_with_engine(
    engine: Any, method: Method, texts: list[str], *, k: int, seed: int, pivot: str, language: str, params: Any
) -> list[str]:
    """One batched pass (two for back-translation) of the engine over ``texts``; copy ``k`` samples with its seed."""
    from tailorlm.models.engines.base import GenerationParams

    base = params or GenerationParams(max_new_tokens=256, temperature=0.7, top_p=0.95)
    # Greedy decoding would give n identical copies: copies differ by their sampling seed.
    p = base.model_copy(update={"seed": seed + k})

    def ask(template: str, items: list[str], **fields: str) -> list[str]:
        completions = engine.generate([template.format(text=t, **fields) for t in items], p)
        return [clean_generation(c.text, src) for c, src in zip(completions, items, strict=True)]

    if method == "paraphrase":
        return ask(PARAPHRASE_PROMPT, texts)
    pivoted = ask(TRANSLATE_PROMPT, texts, language=pivot)
    back = ask(TRANSLATE_PROMPT, pivoted, language=language)
    return back


def augment(
    dataset: Dataset,
    method: Method,
    *,
    engine: Any = None,
    n: int = 1,
    seed: int = 0,
    targets: Targets = "user",
    rate: float = 0.1,
    pivot: str = "French",
    language: str = "English",
    params: Any = None,
    keep_originals: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> AugmentResult:
    """``n`` augmented copies of every original record of ``dataset`` (chat or text), tagged with their source.

    Records that are already augmentations are copied but not augmented again, so ``source_id`` always names an
    original. A copy identical to its source, to an earlier copy, or with an empty rewrite is skipped (counted).
    """
    if method not in METHODS:
        raise DataError(f"unknown augmentation method {method!r}", hint=f"choose one of: {', '.join(METHODS)}")
    if dataset.kind not in ("chat", "text"):
        raise DataError(f"augmentation works on chat or text records, not {dataset.kind}")
    if method != "synonym" and engine is None:
        raise DataError(f"{method} needs an engine", hint="pass --system SYSTEM (or --engine MODEL)")
    if n < 1:
        raise DataError(f"n must be at least 1, got {n}")

    sources = dataset.augmented_sources
    ids = dataset.record_ids
    todo = [i for i in range(len(dataset)) if sources[i] is None]
    slots = {i: _slots(dataset[i], targets) for i in todo}
    result = AugmentResult(dataset=dataset)
    made: list[dict[str, Any]] = []
    seen: dict[int, set[str]] = {i: {json.dumps([t for _, t in slots[i]])} for i in todo}
    for k in range(n):
        flat = [(i, j, text) for i in todo for j, text in slots[i]]
        if method == "synonym":
            new = []
            for i, j, text in flat:
                # Seeded by (seed, record, copy): the same record gets the same copy whatever the file order.
                rng = random.Random(f"tailorlm.augment/{seed}/{ids[i]}/{k}/{j}")
                new.append(synonym_replace(text, rng, rate=rate))
        else:
            new = _rewrite_with_engine(
                engine, method, [t for *_, t in flat], k=k, seed=seed, pivot=pivot, language=language, params=params
            )
        rewritten: dict[int, dict[int | None, str]] = {}
        for (i, j, _), text in zip(flat, new, strict=True):
            rewritten.setdefault(i, {})[j] = text
        for i in todo:
            texts = rewritten.get(i, {})
            if not texts or any(not t.strip() for t in texts.values()):
                result.skipped["empty"] += 1
                continue
            key = json.dumps([texts[j] for j, _ in slots[i]])
            if key in seen[i]:
                reason = "unchanged" if key == json.dumps([t for _, t in slots[i]]) else "duplicate"
                result.skipped[reason] += 1
                continue
            seen[i].add(key)
            tag: dict[str, Any] = {"method": method, "source_id": ids[i], "index": k}
            if method == "backtranslate":
                tag["pivot"] = pivot
            if engine is not None and method != "synonym":
                tag["engine"] = getattr(engine, "name", type(engine).__name__)
            made.append(_rebuild(dataset[i], texts, tag))
        if on_progress is not None:
            on_progress(len(todo))
    rows = (dataset.to_dicts() if keep_originals else []) + made
    out = Dataset.from_dicts(rows, dataset.kind) if rows else Dataset([], kind=dataset.kind)
    result.dataset, result.made = out, len(made)
    return result


def write_jsonl(dataset: Dataset, path: str | Path) -> Path:
    """Canonical records as JSON Lines (OpenAI messages for chat), written atomically."""
    from tailorlm.core.io import atomic_write_text

    lines = [json.dumps(r, ensure_ascii=False) for r in dataset.to_dicts()]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
