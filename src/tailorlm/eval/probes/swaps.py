"""Demographic term swaps for counterfactual fairness: find an axis's terms in a text and rewrite them for a group.

An **axis** (gender, ethnicity by first name, nationality) has groups and rows; a row names the same term in each
group (``[she, he]``, ``[Ebony, Amanda]``, ``[French, German, ...]``). Rewriting a text for group ``g`` replaces every
term of the axis by its row's term for ``g``:

    swap("He thanked his mother.", gender, "female")  ->  "She thanked her mother."

- **Whole words.** A term matches only where no letter, digit, underscore or hyphen touches it: "he" is not found in
  "the", "man" not in "man-made". "he's" and "mother's" do match (the apostrophe is not part of a word here).
- **Case.** A row with ``exact_case`` (names, nationalities) matches only its capitalised or upper-case form, since
  "frank" and "china" are ordinary words; the others match in any case. The replacement copies the case of the word
  it replaces: "He" -> "She", "HIS" -> "HER", "he" -> "she".
- **One pass.** All of an axis's terms go into one regular expression and each match is replaced once, so "he said
  she" becomes "he said he" for ``male``, never swapped back by a second rule.
- **Readings.** "her" is "his" before a noun ("her book") and "him" elsewhere ("told her"). Rows may carry a
  ``reading`` (``determiner`` or ``pronoun``); the next word decides: a content word means determiner, and a function
  word, punctuation or the end of the text means pronoun. This is the heuristic of counterfactual data augmentation
  (Lu et al. 2018) without a tagger; it gets "gave her flowers" wrong ("gave his flowers").

The swap lists are YAML files (``data/*.yaml``); axes of the same name in several files are merged, so the gender axis
holds both gendered words and first names. Users can add their own files in the same format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from tailorlm.errors import ConfigError

Reading = Literal["determiner", "pronoun"]
PACKAGED_FILES = ("gender_words.yaml", "names.yaml", "nationalities.yaml")

# After "her"/"his", these words mean the pronoun reading ("told her about", "it is his and"): prepositions,
# conjunctions, articles, auxiliaries, particles and the gendered pronouns themselves ("told her her plan").
_FUNCTION_WORD_LIST = """
    a an the and or but nor so yet if as than that this these those then there here to of in on at by for from
    with without into onto upon about over under after before around through during against between among up down
    out off away back again too very also just only all both each either any some no not is was are were be been
    being am has have had do does did will would can could shall should may might must what when where which who
    whom why how her him his hers she he they them their it its me my you your we our us
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORD_LIST.split())
_NEXT_WORD = re.compile(r"\s*([A-Za-z][A-Za-z'-]*)")


@dataclass(frozen=True)
class Row:
    """One term per group of its axis, in the axis's group order."""

    terms: tuple[str, ...]
    reading: Reading | None = None
    exact_case: bool = False


@dataclass
class Axis:
    """A demographic axis: its groups, its rows, and a compiled matcher built on first use."""

    name: str
    groups: tuple[str, ...]
    rows: list[Row]
    description: str = ""
    sources: list[str] = field(default_factory=list)
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _lookup: dict[str, list[tuple[int, int]]] = field(default_factory=dict, repr=False, compare=False)

    def _compile(self) -> re.Pattern[str]:
        if self._pattern is not None:
            return self._pattern
        lookup: dict[str, list[tuple[int, int]]] = {}
        owner: dict[str, int] = {}
        alternatives: dict[str, str] = {}
        for r, row in enumerate(self.rows):
            for g, term in enumerate(row.terms):
                if not term:
                    continue
                key = term.casefold()
                if owner.setdefault(key, g) != g:
                    # A term in two groups of one axis could not be swapped consistently ("he" both male and female).
                    raise ConfigError(
                        f"swap axis {self.name!r}: {term!r} is listed for groups "
                        f"{self.groups[owner[key]]!r} and {self.groups[g]!r}"
                    )
                lookup.setdefault(key, []).append((r, g))
                if row.exact_case:
                    forms = {term, term[:1].upper() + term[1:], term.upper()}
                    alternatives.setdefault(key, "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
                else:
                    alternatives[key] = f"(?i:{re.escape(term)})"
        # Longest first, so "mother-in-law" wins over "mother" and "herself" over "her".
        ordered = sorted(alternatives, key=len, reverse=True)
        body = "|".join(alternatives[k] for k in ordered)
        self._pattern = re.compile(rf"(?<![\w-])(?:{body})(?![\w-])")
        self._lookup = lookup
        return self._pattern

    def find(self, text: str) -> list[str]:
        """The axis's terms in ``text``, as written, in order."""
        if not text:
            return []
        return [m.group(0) for m in self._compile().finditer(text)]

    def group_of(self, term: str) -> str:
        self._compile()
        return self.groups[self._lookup[term.casefold()][0][1]]

    def swap(self, text: str, group: str) -> str:
        """``text`` with every term of this axis rewritten as ``group``'s term (terms of ``group`` stay)."""
        if group not in self.groups:
            raise ConfigError(f"swap axis {self.name!r} has no group {group!r}", hint=f"groups: {self.groups}")
        if not text:
            return text
        target = self.groups.index(group)
        pattern = self._compile()

        def replace(m: re.Match[str]) -> str:
            word = m.group(0)
            candidates = [(r, g) for r, g in self._lookup[word.casefold()] if self.rows[r].terms[target]]
            if not candidates or candidates[0][1] == target:
                return word
            reading = _reading(text, m.end())
            fitting = [r for r, _ in candidates if self.rows[r].reading in (None, reading)]
            row = self.rows[fitting[0] if fitting else candidates[0][0]]
            return match_case(word, row.terms[target])

        return pattern.sub(replace, text)


def _reading(text: str, end: int) -> Reading:
    m = _NEXT_WORD.match(text, end)
    if m is None or m.group(1).casefold() in _FUNCTION_WORDS:
        return "pronoun"
    return "determiner"


def match_case(source: str, replacement: str) -> str:
    """``replacement`` in the case of ``source``: upper ("HE" -> "SHE"), capitalised ("He" -> "She") or as given."""
    if len(source) > 1 and source.isupper():
        return replacement.upper()
    if source[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


# --- loading ---------------------------------------------------------------------------------------------------


def _row(raw: Any, n_groups: int, exact_case: bool, where: str) -> Row:
    spec = raw if isinstance(raw, dict) else {"terms": raw}
    terms, reading = spec.get("terms"), spec.get("reading")
    unknown = set(spec) - {"terms", "reading"}
    if unknown or not isinstance(terms, list) or len(terms) != n_groups:
        raise ConfigError(f"{where}: a row needs {n_groups} terms (one per group), got {raw!r}")
    if reading not in (None, "determiner", "pronoun"):
        raise ConfigError(f"{where}: reading must be 'determiner' or 'pronoun', got {reading!r}")
    return Row(tuple(str(t or "") for t in terms), reading, exact_case)


def load_axes(files: Iterable[str | Path] | None = None) -> list[Axis]:
    """The swap axes of the packaged lists (``files`` None) or of the given YAML files, same-named axes merged."""
    texts: list[tuple[str, str]] = []
    if files is None:
        base = resources.files("tailorlm.eval.probes").joinpath("data")
        texts = [
            (f"tailorlm/eval/probes/data/{n}", base.joinpath(n).read_text(encoding="utf-8")) for n in PACKAGED_FILES
        ]
    else:
        for f in files:
            path = Path(f).expanduser()
            if not path.is_file():
                raise ConfigError(f"swap list {str(path)!r} not found")
            texts.append((str(path), path.read_text(encoding="utf-8")))
    axes: dict[str, Axis] = {}
    for where, text in texts:
        doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict) or not isinstance(doc.get("axes"), list):
            raise ConfigError(f"{where}: a swap list is a mapping with an `axes:` list")
        sources = [str(s) for s in doc.get("sources") or []]
        for spec in doc["axes"]:
            name, groups = spec.get("name"), tuple(spec.get("groups") or ())
            if not name or len(groups) < 2:
                raise ConfigError(f"{where}: every axis needs a name and at least two groups")
            label = f"{where}, axis {name}"
            rows = [_row(r, len(groups), bool(spec.get("exact_case")), label) for r in spec.get("rows") or []]
            if name in axes:
                if axes[name].groups != groups:
                    raise ConfigError(f"{label}: groups {groups} differ from {axes[name].groups} given earlier")
                axes[name].rows.extend(rows)
                axes[name].sources.extend(s for s in sources if s not in axes[name].sources)
            else:
                axes[name] = Axis(name, groups, rows, str(spec.get("description") or ""), list(sources))
    for axis in axes.values():
        axis._compile()  # a term listed for two groups is reported at load time, not mid-probe
    return list(axes.values())


def count_terms(texts: Sequence[str], axes: Sequence[Axis]) -> dict[str, dict[str, int]]:
    """``{axis: {term (lower case): occurrences}}`` over ``texts``: what a probe on them would swap."""
    counts: dict[str, dict[str, int]] = {a.name: {} for a in axes}
    for text in texts:
        for axis in axes:
            for term in axis.find(text):
                key = term.casefold()
                counts[axis.name][key] = counts[axis.name].get(key, 0) + 1
    return counts
