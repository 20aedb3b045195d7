"""Constrained decoding: the model can only emit tokens that keep its output inside a grammar.

One ``Constraint`` describes what the output must be: a JSON document valid against a schema, any JSON object, a
regex match, one of a few strings, or tool calls in the fixed block format the call parser reads::

    <tool_call>
    {"name": "NAME", "arguments": ARGS}
    </tool_call>

The grammar engine is llguidance (docs/tools.md, "Constrained decoding", has the measurements against xgrammar and
outlines): it compiles a BFCL schema in ~1.5 ms, computes a token mask in microseconds, has no dependencies, and
its lazy lexemes let ``mode="auto"`` leave free text alone until ``<tool_call>`` appears.

The `hf` engine applies a constraint through ``batch_logits_processor``: one llguidance matcher per row of the
batch (None = that row is free), each fed the token its row sampled and each masking its row's logits. Compiling
is cached per (constraint, tokenizer); every generation starts from a copy of the compiled matcher.

A constrained output is valid when it ends on its own (finish reason "stop"); a row cut off by ``max_new_tokens``
holds a valid prefix only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from tailorlm.core.config import StrictModel
from tailorlm.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import LogitsProcessor

ConstraintType = Literal["json_schema", "json_object", "regex", "choice", "tool_calls"]

# JSON is written the way the tool-call format and json.dumps write it (", " and ": ", no newlines): a fixed layout
# keeps outputs short, and a free-whitespace grammar lets a weak model spend its whole budget on indentation.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
CACHE_SIZE = 256  # compiled grammars kept per tokenizer (a BFCL run has ~400 distinct tool sets)


class Constraint(StrictModel):
    """What a constrained output must be. Only the field its ``type`` needs is set."""

    # "schema" is the public name (OpenAI's response_format says schema); the attribute is schema_ because
    # BaseModel.schema exists. Dumps use the alias, so cache keys and system.yaml say "schema".
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True, serialize_by_alias=True)

    type: ConstraintType = Field(description="json_schema, json_object, regex, choice or tool_calls.")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="JSON schema (type json_schema).")
    pattern: str | None = Field(None, description="Regex the whole output must match (type regex).")
    choices: list[str] | None = Field(None, description="The output is exactly one of these (type choice).")
    tools: list[dict[str, Any]] | None = Field(None, description="OpenAI tool definitions (type tool_calls).")
    mode: Literal["auto", "required"] = Field(
        "auto", description="tool_calls: 'auto' lets the model answer in text instead; 'required' starts with a call."
    )
    parallel: bool = Field(
        True,
        description="tool_calls: several call blocks may follow each other (OpenAI's parallel_tool_calls); False "
        "allows one, which also stops a small model from repeating its call until the token budget runs out.",
    )

    @model_validator(mode="after")
    def _needs_its_field(self) -> Constraint:
        needed = {"json_schema": "schema_", "regex": "pattern", "choice": "choices", "tool_calls": "tools"}
        field = needed.get(self.type)
        # tool_calls without tools is a template: each request brings its own (an eval record's tools).
        template = self.type == "tool_calls" and self.tools is None
        if field is not None and not getattr(self, field) and not template:
            name = "schema" if field == "schema_" else field
            raise ValueError(f"a {self.type} constraint needs a non-empty '{name}'")
        if self.tools is not None:
            for tool in self.tools:
                _function(tool)  # raises on a definition without a name
        return self

    def key(self) -> str:
        """A stable hash of the constraint: the grammar cache key (with the tokenizer)."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def as_constraint(value: Constraint | dict[str, Any] | None) -> Constraint | None:
    """A Constraint from a Constraint, its dict form (``{"type": "regex", "pattern": ...}``) or None."""
    if value is None or isinstance(value, Constraint):
        return value
    return Constraint.model_validate(value)


# -- schemas -----------------------------------------------------------------------------------------------------


def normalize_schema(schema: Any) -> Any:
    """BFCL's Python-flavoured schema types made standard (``tools/registry.py`` does it for every tool schema)."""
    from tailorlm.tools.registry import normalize_schema as normalize

    return normalize(schema) if isinstance(schema, dict) else schema


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    """The function part of an OpenAI tool (``{"type": "function", "function": {...}}``) or of a bare definition."""
    fn = tool.get("function", tool)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"a tool definition needs a function name: {json.dumps(tool)[:200]}")
    return fn


def tool_call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one call ``{"name": NAME, "arguments": ARGS}`` to ``tool`` (an OpenAI tool dict).

    The arguments object gets ``additionalProperties: false`` unless it says otherwise: a call with an argument the
    tool does not declare is wrong (BFCL scores it so), and a free grammar invites the model to invent some.
    """
    fn = _function(tool)
    params = normalize_schema(fn.get("parameters") or {})
    args = {"type": "object", **params} if isinstance(params, dict) else {"type": "object"}
    if args.get("type") == "object" and "additionalProperties" not in args:
        args["additionalProperties"] = False
    return {
        "type": "object",
        "properties": {"name": {"const": fn["name"]}, "arguments": args},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


# -- grammars ----------------------------------------------------------------------------------------------------
def _lit(text: str) -> str:
    """A Lark string literal (JSON string syntax, which llguidance's Lark reads)."""
    return json.dumps(text, ensure_ascii=False)


def _json_rule(schema: dict[str, Any]) -> str:
    """A Lark rule body for a JSON schema, laid out with JSON_OPTIONS unless the schema's x-guidance says else."""
    return "%json " + json.dumps({**schema, "x-guidance": {**JSON_OPTIONS, **schema.get("x-guidance", {})}})


def grammar(constraint: Constraint) -> str:
    """The llguidance grammar (Lark with llguidance extensions) that ``constraint`` compiles to."""
    import llguidance

    c = constraint
    if c.type == "json_schema":
        assert c.schema_ is not None
        return llguidance.LLMatcher.grammar_from_json_schema(c.schema_, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
    if c.type == "json_object":
        return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
    if c.type == "regex":
        assert c.pattern is not None
        return llguidance.LLMatcher.grammar_from_regex(c.pattern)
    if c.type == "choice":
        assert c.choices
        return "%llguidance {}\nstart: " + " | ".join(_lit(choice) for choice in c.choices) + "\n"
    assert c.tools
    # One JSON schema for "a call to any of the tools": anyOf over the per-tool call schemas, each pinning its name.
    calls = [tool_call_schema(tool) for tool in c.tools]
    call = calls[0] if len(calls) == 1 else {"anyOf": calls}
    lines = [
        "%llguidance {}",
        f"block: {_lit(TOOL_CALL_OPEN + chr(10))} call {_lit(chr(10) + TOOL_CALL_CLOSE)}",
        f"call: {_json_rule(call)}",
    ]
    more = ' ("\\n" block)*' if c.parallel else ""
    if c.mode == "required":
        lines.insert(1, f"start: block{more}")
    else:
        # Free text, or free text up to the first "<tool_call>" and then only well-formed calls. The [lazy] rule
        # ends its lexeme the moment "<tool_call>" appears, so text can never contain an unfinished call.
        lines[1:1] = [
            f"start: TEXT | opened {_lit(chr(10))} call {_lit(chr(10) + TOOL_CALL_CLOSE)}{more}",
            "TEXT: /(.|\\n)*/",
            f"opened[lazy]: TEXT {_lit(TOOL_CALL_OPEN)}",
        ]
    return "\n".join(lines) + "\n"


# -- compiling, cached -----------------------------------------------------------------------------------------------
class _TokenizerGrammars:
    """The llguidance view of one HF tokenizer (costly: ~0.4 s for a 49k vocabulary) and its compiled grammars."""

    def __init__(self, tokenizer: Any) -> None:
        import llguidance.hf

        self.lltok = llguidance.hf.from_tokenizer(tokenizer, eos_token=tokenizer.eos_token_id)
        self.eos = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
        self.compiled: OrderedDict[str, Any] = OrderedDict()
        self.hits = self.misses = 0


# Keyed by the tokenizer object itself: two tokenizers never share compiled grammars (token ids differ), and a
# tokenizer that goes away takes its grammars with it.
_CACHE: weakref.WeakKeyDictionary[Any, _TokenizerGrammars] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # the server compiles from several threads
# Time spent inside the processors (feeding matchers, computing and applying masks), for the overhead benchmark.
MASK_TIME = {"seconds": 0.0, "calls": 0}


def _grammars_for(tokenizer: Any) -> _TokenizerGrammars:
    with _LOCK:
        state = _CACHE.get(tokenizer)
        if state is None:
            state = _CACHE[tokenizer] = _TokenizerGrammars(tokenizer)
        return state


def compiled_matcher(constraint: Constraint, tokenizer: Any) -> Any:
    """A fresh ``llguidance.LLMatcher`` for ``constraint``, copied from the cached compiled one.

    A grammar that does not compile (bad regex, unsupported schema keyword) is a ConfigError naming the reason.
    """
    import llguidance

    state = _grammars_for(tokenizer)
    key = constraint.key()
    with _LOCK:
        proto = state.compiled.get(key)
        if proto is not None:
            state.compiled.move_to_end(key)
            state.hits += 1
    if proto is None:
        try:
            text = grammar(constraint)
        except ValueError as err:  # llguidance rejects some schemas while translating them
            raise ConfigError(f"{constraint.type} constraint does not compile: {err}") from err
        proto = llguidance.LLMatcher(state.lltok, text, log_level=0)
        if proto.is_error():
            raise ConfigError(f"{constraint.type} constraint does not compile: {proto.get_error()}")
        with _LOCK:
            state.misses += 1
            state.compiled[key] = proto
            while len(state.compiled) > CACHE_SIZE:
                state.compiled.popitem(last=False)
    return proto.deep_copy()


def cache_info(tokenizer: Any) -> dict[str, int]:
    """Hits, misses and size of ``tokenizer``'s grammar cache (for tests and logs)."""
    state = _grammars_for(tokenizer)
    return {"hits": state.hits, "misses": state.misses, "size": len(state.compiled)}


# -- the logits processor --------------------------------------------------------------------------------------------
def batch_logits_processor(
    constraints: Sequence[Constraint | dict[str, Any] | None], tokenizer: Any
) -> LogitsProcessor | None:
    """One processor for a batch whose row ``i`` follows ``constraints[i]`` (None = free); None when all are free.

    It holds state (each row's position in its grammar): use it for one ``generate`` call only.
    """
    if all(c is None for c in constraints):
        return None
    # as_constraint: a dict can slip in through model_copy(update=...), which does not validate.
    matchers = [compiled_matcher(c, tokenizer) if (c := as_constraint(x)) is not None else None for x in constraints]
    return _make_processor(matchers, _grammars_for(tokenizer))


def logits_processor(constraint: Constraint, tokenizer: Any) -> LogitsProcessor:
    """A transformers LogitsProcessor that holds ``generate``'s rows (one or many) to ``constraint``."""
    processor = _make_processor([compiled_matcher(constraint, tokenizer)], _grammars_for(tokenizer))
    processor.broadcast = True  # type: ignore[attr-defined]
    return processor


def _make_processor(matchers: list[Any], state: _TokenizerGrammars) -> LogitsProcessor:
    from transformers import LogitsProcessor

    class RowMatchers(LogitsProcessor):
        """Per row: feed the sampled token to its matcher, then set the logits of forbidden tokens to -inf.

        Shapes: ``input_ids`` (batch, seq), ``scores`` (batch, vocab); the mask is (batch, ceil(vocab_llg / 32))
        int32 words, bit ``t % 32`` of word ``t // 32`` set when token ``t`` is allowed.
        """

        def __init__(self) -> None:
            self.matchers = matchers
            self.broadcast = False  # one constraint for every row: matchers are copied on the first call
            self.started = False
            self.finished: list[bool] = []

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            start = time.perf_counter()
            try:
                return self._mask(input_ids, scores)
            finally:
                MASK_TIME["seconds"] += time.perf_counter() - start
                MASK_TIME["calls"] += 1

        def _mask(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            import torch
            from llguidance.torch import fill_next_token_bitmask

            batch = input_ids.shape[0]
            if not self.started:
                if self.broadcast and batch > 1:
                    self.matchers = [self.matchers[0]] + [self.matchers[0].deep_copy() for _ in range(batch - 1)]
                if len(self.matchers) != batch:
                    raise ValueError(f"{len(self.matchers)} row constraints for a batch of {batch} rows")
                self.finished = [m is None for m in self.matchers]
            rows = []
            for i, matcher in enumerate(self.matchers):
                if self.finished[i]:
                    continue
                if self.started:
                    token = int(input_ids[i, -1])
                    # A row is done once it emitted an end token, or once its matcher rejects a token: that is a
                    # row transformers already finished (a stop string) and now pads, so its logits no longer count.
                    if token in state.eos or not matcher.consume_token(token):
                        self.finished[i] = True
                        continue
                rows.append(i)
            self.started = True
            if not rows:
                return scores
            words = (state.lltok.vocab_size + 31) // 32
            bitmask = torch.zeros((batch, words), dtype=torch.int32)
            for i in rows:
                # A finished grammar (is_stopped) yields a mask with only the end token: the row is made to stop.
                fill_next_token_bitmask(self.matchers[i], bitmask, i)
            allowed = _unpack(bitmask[rows], scores.shape[1]).to(scores.device)
            index = torch.tensor(rows, device=scores.device)
            scores[index] = scores[index].masked_fill(~allowed, float("-inf"))
            return scores

    return RowMatchers()


@functools.cache
def _shifts() -> torch.Tensor:
    import torch

    return torch.arange(32, dtype=torch.int32)


def _unpack(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows, words) int32 bitmask → (rows, vocab) bool. Tokens past the mask (padded logits) are forbidden.

    ~35 µs a row for a 49k vocabulary (a byte lookup table was no faster); with the mask itself (~60 µs) and the
    masked fill (~70 µs) a constrained row costs ~0.2 ms a step, against ~100 ms for a batch step of the model.
    """
    import torch

    allowed = ((bitmask.unsqueeze(-1) >> _shifts()) & 1).bool().reshape(bitmask.shape[0], -1)
    if allowed.shape[1] >= vocab:
        return allowed[:, :vocab]
    pad = torch.zeros((bitmask.shape[0], vocab - allowed.shape[1]), dtype=torch.bool)
    return torch.cat([allowed, pad], dim=1)
