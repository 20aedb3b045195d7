"""Optional second stages and query transforms, all off by default (measured in docs/rag.md, "Second stage"):

- a sentence-transformers CrossEncoder folder;
- ``llm``: any Engine asked to rate whether a passage answers the question (one generation per passage);
- ``likelihood[:MODEL]``: query likelihood (UPR, Sachan et al. 2022): a causal LM's mean log-probability of the
  question given the passage. No generation and no instruction following, so a small model can do it;
- query transforms with a causal LM: ``hyde`` (embed the question with a hypothetical answer, Gao et al. 2022)
  and ``rewrite`` (search with a rewritten query).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tailorlm.errors import ModelNotFoundError

_LLM_PROMPT = (
    "Rate how well the passage answers the question, from 0 (unrelated) to 10 (answers it directly). "
    "Reply with the number only.\n\nQuestion: {question}\n\nPassage:\n<<<\n{passage}\n>>>"
)


class CrossEncoderReranker:
    def __init__(self, folder: str) -> None:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"reranker folder not found: {folder}", hint="give a saved CrossEncoder folder")
        from sentence_transformers import CrossEncoder

        from tailorlm.models.weights import refuse_pickle_weights, safetensors_kwargs

        refuse_pickle_weights(path, kind="embedder", depth=1)
        self.model = CrossEncoder(
            str(path), device="cpu", local_files_only=True, model_kwargs=safetensors_kwargs() or None
        )

    def __call__(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return [float(s) for s in self.model.predict([(query, p) for p in passages], show_progress_bar=False)]


class LLMReranker:
    """Scores relevance 0–10 with an Engine (greedy); unparseable replies score 0. The passage is fenced as data."""

    def __init__(self, engine: Any, max_passage_chars: int = 2000) -> None:
        self.engine = engine
        self.max_passage_chars = max_passage_chars

    def __call__(self, query: str, passages: Sequence[str]) -> list[float]:
        from tailorlm.models.engines.base import GenerationParams

        messages = [
            [{"role": "user", "content": _LLM_PROMPT.format(question=query, passage=p[: self.max_passage_chars])}]
            for p in passages
        ]
        outs = self.engine.generate(messages, GenerationParams(max_new_tokens=4, temperature=0.0))
        return [_score(o.text) for o in outs]


def _score(text: str) -> float:
    m = re.search(r"\d+(?:\.\d+)?", text)
    value = float(m.group()) if m else 0.0
    return value if math.isfinite(value) else 0.0


_UPR_PROMPT = "Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"
_HYDE_PROMPT = "Write a short passage that answers the question.\nQuestion: {question}\nPassage:"
_REWRITE_PROMPT = "Rewrite the question as a short search query of keywords.\nQuestion: {question}\nQuery:"


class _CausalLM:
    """A causal LM loaded once (fp32 CPU or the model's device), for scoring and short generations."""

    def __init__(self, model: str = "default") -> None:
        from tailorlm.models.load import load_model

        loaded = load_model(model)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token


class LikelihoodReranker(_CausalLM):
    """Scores each passage by the mean log-probability of the question's tokens after the passage (UPR)."""

    def __init__(self, model: str = "default", max_passage_tokens: int = 384, batch_size: int = 8) -> None:
        super().__init__(model)
        self.max_passage_tokens = max_passage_tokens
        self.batch_size = batch_size

    def __call__(self, query: str, passages: Sequence[str]) -> list[float]:
        import torch

        tok = self.tokenizer
        q_ids = tok(" " + query.strip(), add_special_tokens=False)["input_ids"]
        rows = []
        for p in passages:
            p_ids = tok(p, add_special_tokens=False)["input_ids"][: self.max_passage_tokens]
            prompt = tok(_UPR_PROMPT.format(passage=tok.decode(p_ids)), add_special_tokens=False)["input_ids"]
            rows.append((prompt, q_ids))
        scores: list[float] = []
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i : i + self.batch_size]
            width = max(len(a) + len(b) for a, b in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, (a, b) in enumerate(batch):  # left padding: every question ends at the last position
                seq = a + b
                ids[j, width - len(seq) :] = torch.tensor(seq)
                mask[j, width - len(seq) :] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device))
            logp = torch.log_softmax(logits.logits[:, :-1].float(), dim=-1)
            n = len(q_ids)
            target = ids[:, -n:].to(logp.device)
            picked = logp[:, -n:].gather(-1, target[..., None])[..., 0]
            scores.extend(picked.mean(-1).tolist())
        return scores


class QueryTransform(_CausalLM):
    """``hyde``: the question followed by a generated hypothetical answer (what is embedded for the dense side);
    ``rewrite``: a generated keyword query (searched on both sides). Greedy, short."""

    def __init__(self, kind: str, model: str = "default", max_new_tokens: int = 64) -> None:
        super().__init__(model)
        self.kind = kind
        self.max_new_tokens = max_new_tokens

    def __call__(self, question: str) -> str:
        import torch

        template = _HYDE_PROMPT if self.kind == "hyde" else _REWRITE_PROMPT
        enc = self.tokenizer(template.format(question=question.strip()), return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(
                **enc.to(self.model.device), max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )  # fmt: skip
        text = self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        text = text.split("\n\n")[0].strip()
        if self.kind == "hyde":
            return f"{question} {text}".strip()
        return text.split("\n")[0].strip() or question
