"""``tailor feedback export``: turn served feedback into training data for the ladder's next climb.

Three files, each in a format ``tailorlm.data`` loads (and ``tailor data validate`` accepts):

- ``sft.jsonl`` (``openai``: chat): the request's messages, then the user's edited answer as the assistant turn.
- ``preference.jsonl`` (``preference``): ``{prompt, chosen, rejected}`` from
  - pairwise choices: the preferred answer over the other one, when both answered the same prompt (a tie says
    nothing about which is better, and is skipped);
  - edits: the edited answer over the original it corrects (skipped when they are the same after strip).
  A thumbs-up and a thumbs-down on two answers to the same prompt are *not* paired: they usually come from
  different users in different sessions, one answer could be paired many times over, and the binary file
  already gives KTO that signal without inventing comparisons no one made.
- ``binary.jsonl`` (``binary``, KTO's unpaired format): ``{prompt, completion, label}`` from thumbs (up true,
  down false) and 1–5 scores (4–5 true, 1–2 false, a neutral 3 skipped); a thumbs rating wins over a score
  given in the same feedback.

A conversational request (``messages``) gives conversational records (the prompt a list of messages, the
answers ``[{"role": "assistant", ...}]``), as TRL expects; a ``/v1/completions`` request gives plain strings.

What is kept: the latest feedback of each kind per (response, user), so a re-click is not a second vote; only
responses sent with status 200; shadow answers too, since what is learned is the user's judgement of a text
shown to them (in a compare view), not which System wrote it. ``since``/``until`` select feedback by the time
it was given; ``model`` keeps feedback on responses whose requested model *or* answering System has that name.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tailorlm.core.io import atomic_write_json, atomic_write_text
from tailorlm.data.records import MESSAGE_KEYS, ROLES, validate_record
from tailorlm.serve.store import FeedbackRecord, FeedbackStore, ResponseRecord

FILES = {"sft": ("sft.jsonl", "openai", "chat"), "preference": ("preference.jsonl", "preference", "preference")}
FILES["binary"] = ("binary.jsonl", "binary", "binary")
Prompt = list[dict[str, Any]] | str


def _content(value: Any) -> Any:
    """OpenAI content parts (``[{"type": "text", "text": ...}]``) → their text joined; anything else as is."""
    if isinstance(value, list):
        texts = [p.get("text") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(t for t in texts if isinstance(t, str))
    return value


def prompt_of(request: dict[str, Any]) -> Prompt | None:
    """The prompt a response answered: its request's messages (canonical keys only), or a completion prompt."""
    if isinstance(messages := request.get("messages"), list):
        out = []
        for m in messages:
            if not isinstance(m, dict):
                return None
            m = {k: (_content(v) if k == "content" else v) for k, v in m.items() if k in MESSAGE_KEYS}
            if m.get("role") == "developer":  # OpenAI's newer name for the system role
                m["role"] = "system"
            out.append({k: v for k, v in m.items() if v is not None})
        return out if out and all(m.get("role") in ROLES for m in out) else None
    prompt = request.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:  # the completions API takes a list of one prompt too
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else None


def _answer(prompt: Prompt, text: str) -> Any:
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


class _Exporter:
    """Collects the records of the three files, counting why anything was skipped."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {name: [] for name in FILES}
        self.seen: set[str] = set()
        self.skipped: Counter[str] = Counter()

    def add(self, name: str, record: dict[str, Any]) -> None:
        kind = FILES[name][2]
        _, problems = validate_record(kind, record)  # type: ignore[arg-type]
        if problems:
            self.skipped[f"{name}: invalid record"] += 1
            return
        key = name + json.dumps(record, sort_keys=True, ensure_ascii=False)
        if key in self.seen:
            self.skipped[f"{name}: duplicate"] += 1
            return
        self.seen.add(key)
        self.records[name].append(record)

    def binary(self, f: FeedbackRecord, r: ResponseRecord, prompt: Prompt) -> None:
        if f.rating is not None:
            label = f.rating == "up"
        elif f.score is not None and f.score != 3:
            label = f.score >= 4
        else:
            self.skipped["binary: neutral score 3"] += 1
            return
        self.add("binary", {"prompt": prompt, "completion": _answer(prompt, r.response), "label": label})

    def edit(self, f: FeedbackRecord, r: ResponseRecord, prompt: Prompt) -> None:
        edited = f.edited or ""
        if not edited.strip():
            self.skipped["edit: empty"] += 1
            return
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        self.add("sft", {"messages": [*messages, {"role": "assistant", "content": edited}]})
        if edited.strip() == r.response.strip():
            self.skipped["preference: edit identical to the answer"] += 1
            return
        self.add(
            "preference",
            {"prompt": prompt, "chosen": _answer(prompt, edited), "rejected": _answer(prompt, r.response)},
        )

    def choice(self, f: FeedbackRecord, r: ResponseRecord, other: ResponseRecord | None, prompt: Prompt) -> None:
        if f.choice == "tie":
            self.skipped["preference: tie"] += 1
            return
        if other is None or other.status != 200:
            self.skipped["preference: the other response failed"] += 1
            return
        if prompt_of(other.request) != prompt:
            self.skipped["preference: the two responses answer different prompts"] += 1
            return
        chosen, rejected = (r, other) if f.choice == "this" else (other, r)
        self.add(
            "preference",
            {
                "prompt": prompt,
                "chosen": _answer(prompt, chosen.response),
                "rejected": _answer(prompt, rejected.response),
            },
        )


def _latest(feedback: list[FeedbackRecord]) -> list[tuple[str, FeedbackRecord]]:
    """``(what, feedback)`` for the latest feedback of each kind per (response, user), in time order."""
    latest: dict[tuple[str, str, str | None], FeedbackRecord] = {}
    for f in feedback:  # ordered by time: a later one replaces an earlier one
        if f.rating is not None or f.score is not None:
            latest[("binary", f.response_id, f.user)] = f
        if f.edited is not None:
            latest[("edit", f.response_id, f.user)] = f
        if f.choice is not None and f.compare_to is not None:
            pair = "\0".join(sorted((f.response_id, f.compare_to)))
            latest[("choice", pair, f.user)] = f
    return sorted(((k[0], f) for k, f in latest.items()), key=lambda x: (x[1].created, x[1].id, x[0]))


def export_feedback(
    store: FeedbackStore,
    out_dir: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    model: str | None = None,
) -> dict[str, int]:
    """Write ``sft.jsonl``, ``preference.jsonl``, ``binary.jsonl`` and ``manifest.json`` into ``out_dir``.

    Every file is written atomically and always (an empty file when nothing qualifies), so a folder never mixes
    files of two exports. Returns the record count per file, plus ``feedback`` (feedback records considered)
    and ``skipped`` (candidate records not written: ties, neutral scores, failed responses, duplicates...;
    ``manifest.json`` counts them per reason).
    """
    out_dir = Path(out_dir)
    cache: dict[str, ResponseRecord | None] = {}

    def response(rid: str | None) -> ResponseRecord | None:
        if rid is None:
            return None
        if rid not in cache:
            cache[rid] = store.get_response(rid)
        return cache[rid]

    considered: list[FeedbackRecord] = []
    for f in store.feedback(since=since, until=until):
        r = response(f.response_id)
        if r is not None and (model is None or model in (r.model, r.system)):
            considered.append(f)
    ex = _Exporter()
    for what, f in _latest(considered):
        r = response(f.response_id)
        assert r is not None  # filtered above
        prompt = prompt_of(r.request)
        if r.status != 200:
            ex.skipped[f"{what}: the response failed"] += 1
        elif prompt is None:
            ex.skipped[f"{what}: request has no usable prompt"] += 1
        elif what == "binary":
            ex.binary(f, r, prompt)
        elif what == "edit":
            ex.edit(f, r, prompt)
        else:
            ex.choice(f, r, response(f.compare_to), prompt)

    files: dict[str, Any] = {}
    for name, (filename, fmt, kind) in FILES.items():
        lines = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in ex.records[name])
        atomic_write_text(out_dir / filename, lines)
        files[filename] = {"format": fmt, "kind": kind, "records": len(ex.records[name])}
    created = [f.created for f in considered]
    atomic_write_json(
        out_dir / "manifest.json",
        {
            "exported_at": time.time(),
            "since": since,
            "until": until,
            "model": model,
            "feedback": len(considered),
            "first_feedback": min(created, default=None),
            "last_feedback": max(created, default=None),
            "files": files,
            "skipped": dict(sorted(ex.skipped.items())),
        },
    )
    counts = {name: len(ex.records[name]) for name in FILES}
    return counts | {"feedback": len(considered), "skipped": sum(ex.skipped.values())}
