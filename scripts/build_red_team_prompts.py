"""Build the packaged red-team prompts, ``src/tailorlm/eval/data/red_team.jsonl``, from Anthropic's HH-RLHF.

Deterministic: the same source file and seed give a byte-identical file. Run from the repository root:

    python scripts/build_red_team_prompts.py            # or --data PATH --out PATH --seed N --n N

Source: the ``harmless-base`` test split of HH-RLHF (Bai et al. 2022, "Training a Helpful and Harmless Assistant
with Reinforcement Learning from Human Feedback"; https://github.com/anthropics/hh-rlhf), MIT licence, © 2022
Anthropic (see src/tailorlm/eval/data/red_team.LICENSE.md). Only the first human turn of each transcript is kept:
that is the red-team attempt as a user would open with it, and it needs no model answer from the dataset.

Categories come from a keyword rule (first match wins, in the order of ``CATEGORIES``; ``other`` when none does).
They are rough: they exist to break a refusal rate down, not to label the data.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh_rlhf" / "harmless_base_test.jsonl.gz"
DEFAULT_OUT = REPO / "src" / "tailorlm" / "eval" / "data" / "red_team.jsonl"
SOURCE = "anthropic/hh-rlhf harmless-base test"

# The first turn of an HH transcript: "\n\nHuman: <prompt>\n\nAssistant: ..."
_FIRST_TURN = re.compile(r"\s*Human:(.*?)\n\nAssistant:", re.DOTALL)
# Very short prompts ("hi") test nothing, and long ones cost generation time without adding coverage.
MIN_CHARS, MAX_CHARS = 12, 300

# category → keywords: regular expressions matched as whole words, case-insensitive (``\\w*`` marks a stem). Earlier
# categories win: "kill myself" is self-harm before it is violence, and a home address is a privacy request
# whatever else the prompt says.
CATEGORIES: dict[str, list[str]] = {
    "privacy": [
        r"(?:home )?address",
        r"phone number",
        r"email",
        r"social security",
        r"contact details",
        r"next of kin",
    ],
    "self_harm": [r"suicid\w*", r"kill myself", r"hurt myself", r"self[- ]harm", r"cut myself", r"end my life"],
    "violence_harm": [
        r"kill\w*",
        r"murder\w*",
        r"hurt\w*",
        r"guns?",
        r"weapons?",
        r"bomb\w*",
        r"shoot\w*",
        r"stab\w*",
        r"attack\w*",
        r"beat\w*",
        r"punch\w*",
        r"fight\w*",
        r"poison\w*",
        r"explosiv\w*",
        r"tortur\w*",
        r"knife",
        r"skull",
        r"kidnap\w*",
        r"slaughter\w*",
        r"break someone's \w+",
        r"someone sick",
        r"laxatives?",
    ],
    "hate_discrimination": [
        r"racis\w*",
        r"(?:black|white|chinese|jewish) people",
        r"blacks",
        r"mexicans?",
        r"jews?",
        r"muslims?",
        r"gays?",
        r"immigrants?",
        r"homophob\w*",
        r"slurs?",
        r"n-word",
        r"nigger\w*",
        r"beaner",
        r"transgender",
        r"holocaust",
        r"nazi\w*",
        r"white supremac\w*",
        r"keep america white",
        r"native american",
        r"jamaicans",
        r"mormons",
        r"slavery",
    ],
    "drugs_alcohol": [
        r"drugs?",
        r"cocaine",
        r"meth",
        r"heroin",
        r"weed",
        r"marijuana",
        r"alcohol\w*",
        r"drunk",
        r"pills?",
        r"get high",
        r"smoke",
    ],
    "sexual": [
        r"sex\w*",
        r"porn\w*",
        r"naked",
        r"nude",
        r"prostitut\w*",
        r"rape\w*",
        r"genital\w*",
        r"penis",
        r"vagina",
        r"get laid",
        r"condoms?",
        r"dirty jokes?",
        r"pedophil\w*",
    ],
    "crime_fraud": [
        r"steal\w*",
        r"stole\w*",
        r"rob\w*",
        r"shoplift\w*",
        r"scam\w*",
        r"fraud\w*",
        r"defraud\w*",
        r"fake",
        r"counterfeit\w*",
        r"lie",
        r"cheat\w*",
        r"hack\w*",
        r"break into",
        r"break out",
        r"pick a lock",
        r"launder\w*",
        r"illegal\w*",
        r"get away with",
        r"(?:not|without \w+) (?:knowing|noticing|getting caught|get caught)",
        r"bribe\w*",
        r"smuggl\w*",
        r"crimes?",
        r"evidence",
        r"jail",
        r"prison",
        r"sneak\w*",
        r"virus",
        r"stalk\w*",
        r"vandal\w*",
        r"destroy\w* someone's",
    ],
    "insults_harassment": [
        r"stupid",
        r"idiots?",
        r"insults?",
        r"dumb",
        r"ugl\w*",
        r"hate",
        r"pranks?",
        r"bull(?:y|ies)",
        r"worst",
        r"get back at",
        r"asshole",
        r"shut up",
        r"fucking",
    ],
}
_RULES = [(name, re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)) for name, words in CATEGORIES.items()]


def categorize(prompt: str) -> str:
    """The first category whose keywords occur in ``prompt``; ``other`` when none does."""
    for name, rule in _RULES:
        if rule.search(prompt):
            return name
    return "other"


def first_turns(path: Path) -> list[tuple[int, str]]:
    """``(line number, first human turn)`` for each transcript, first occurrence of each prompt only."""
    seen: set[str] = set()
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            m = _FIRST_TURN.match(json.loads(line)["chosen"])
            if m is None:
                continue
            prompt = " ".join(m.group(1).split())  # one line: HH prompts carry stray double spaces
            if MIN_CHARS <= len(prompt) <= MAX_CHARS and prompt.casefold() not in seen:
                seen.add(prompt.casefold())
                out.append((line_no, prompt))
    return out


def build(data: Path, seed: int, n: int) -> list[dict[str, str]]:
    pool = first_turns(data)
    chosen = sorted(random.Random(seed).sample(pool, n))  # file order: diffs of a rebuild stay readable
    return [{"prompt": p, "category": categorize(p), "source": f"{SOURCE}, line {line_no}"} for line_no, p in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    rows = build(args.data, args.seed, args.n)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["category"]] = counts.get(r["category"], 0) + 1
    print(f"wrote {len(rows)} prompts to {args.out}: {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
