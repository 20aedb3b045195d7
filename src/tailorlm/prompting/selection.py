"""Few-shot demonstration selection: which ``k`` pool examples to show before one query, and how many fit.

Strategies (``make_selector``):

- ``fixed``: the first ``k`` pool items (or the given ``indices``), the same for every query.
- ``random``: ``k`` items drawn with a generator seeded by ``(seed, query)``, so a query always gets the same
  demonstrations, whatever else is in the batch and in whichever process.
- ``semantic``: the ``k`` nearest pool inputs to the query by cosine similarity of sentence embeddings. Picking
  demonstrations by kNN in embedding space follows Liu et al. 2022, "What Makes Good In-Context Examples for
  GPT-3?" (DeeLIO), who found it beats random demonstrations on every task they tried.
- ``mmr``: maximal marginal relevance (Carbonell & Goldstein 1998, "The Use of MMR, Diversity-Based Reranking
  for Reordering Documents and Producing Summaries", SIGIR): relevant to the query *and* unlike the demos
  already chosen, so ``k`` near-duplicates do not crowd out everything else.
- ``balanced``: round-robin over labels for classification, so no label dominates the context (a majority
  label in the demonstrations biases the answer: Zhao et al. 2021, "Calibrate Before Use").

Every strategy skips pool items whose input equals the query: when the pool overlaps the eval set, showing the
model the very example it is scored on would leak the answer. Demonstrations come back most relevant first, so
``fit_to_budget`` drops from the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, get_args

import numpy as np

from tailorlm.errors import ConfigError

Strategy = Literal["random", "fixed", "semantic", "mmr", "balanced"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
_EMBEDDING_STRATEGIES = ("semantic", "mmr")


class TextEncoder(Protocol):
    """What selection needs from an embedder (``tailorlm.prompting.embed.Embedder`` is the real one)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 rows with unit L2 norm."""
        ...


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


# --- the math: small pure functions over unit vectors -------------------------------------------------------


def nearest(query: np.ndarray, docs: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[int]:
    """Indices of the ``k`` rows of ``docs`` (n, d) most similar to ``query`` (d,), most similar first.

    Rows are unit vectors, so the dot product is the cosine. Ties go to the lower index (stable sort), which
    keeps the choice independent of float noise in equal embeddings. ``allowed`` (n,) bool masks candidates.
    """
    sims = docs @ query  # (n,)
    order = np.argsort(-sims, kind="stable")
    if allowed is not None:
        order = order[allowed[order]]
    return [int(i) for i in order[:k]]


def mmr(query: np.ndarray, docs: np.ndarray, k: int, lam: float = 0.5, allowed: np.ndarray | None = None) -> list[int]:
    """Greedy maximal marginal relevance (Carbonell & Goldstein 1998), in selection order.

    Each step picks the candidate D_i that maximizes

        MMR = λ · sim(Q, D_i) − (1 − λ) · max_{D_j ∈ S} sim(D_i, D_j)

    where S is the set already selected (the max over an empty S is 0, so the first pick is the most relevant).
    λ = 1 is plain relevance ranking; λ = 0 is pure diversity. Ties go to the more relevant, then lower index.
    Memory stays O(n): similarities to the selected set are updated one picked row at a time, never an n×n
    matrix, so large pools are fine.
    """
    n = docs.shape[0]
    relevance = docs @ query  # (n,)
    candidate = np.ones(n, dtype=bool) if allowed is None else allowed.copy()
    redundancy = np.zeros(n, dtype=np.float32)  # (n,) max sim to anything in S so far
    chosen: list[int] = []
    index = np.arange(n)
    while len(chosen) < k and candidate.any():
        score = lam * relevance - (1.0 - lam) * redundancy
        pool = index[candidate]
        # lexsort: the last key is primary → highest score, then highest relevance, then lowest index.
        best = int(pool[np.lexsort((pool, -relevance[pool], -score[pool]))[0]])
        chosen.append(best)
        candidate[best] = False
        redundancy = np.maximum(redundancy, docs @ docs[best])
    return chosen


def round_robin(labels: Sequence[str | None], order: Sequence[int], k: int) -> list[int]:
    """Take ``k`` of ``order`` one label at a time: labels in order of first appearance in ``labels`` (stable),
    items within a label in the given ``order``. Stops early when every label is used up."""
    queues: dict[str | None, list[int]] = {label: [] for label in labels}  # dict keeps first-appearance order
    for i in order:
        queues[labels[i]].append(i)
    picked: list[int] = []
    depth = 0
    while len(picked) < k and any(depth < len(q) for q in queues.values()):
        for queue in queues.values():
            if depth < len(queue) and len(picked) < k:
                picked.append(queue[depth])
        depth += 1
    return picked


def _query_rng(seed: int, query: str) -> np.random.Generator:
    # Python's hash() is salted per process; a digest makes the draw the same across runs and workers.
    digest = hashlib.sha256(query.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


# --- the selector -------------------------------------------------------------------------------------------


class Selector:
    """Picks ``k`` demonstrations from a fixed pool for each query. Build it with ``make_selector``.

    One class with an explicit ``if strategy == …`` chain rather than a class per strategy: each strategy is a
    few lines over the same pool, mask and generator.
    """

    def __init__(
        self,
        strategy: Strategy,
        pool: list[dict[str, Any]],
        *,
        k: int,
        seed: int,
        embedder: TextEncoder | None,
        mmr_lambda: float,
        indices: Sequence[int] | None,
    ) -> None:
        self.strategy = strategy
        self.pool = pool
        self.k = k
        self.seed = seed
        self.embedder = embedder
        self.mmr_lambda = mmr_lambda
        self.indices = list(indices) if indices is not None else list(range(len(pool)))
        # Leakage checks compare stripped text: "Q " and "Q" are the same example to the model.
        self._inputs = [str(item["input"]).strip() for item in pool]
        self._labels: list[str | None] = [item.get("label") for item in pool]
        # Embedded once here, not per query: the pool is the larger side and does not change.
        self._pool_vectors: np.ndarray | None = None
        if strategy in _EMBEDDING_STRATEGIES and embedder is not None and pool:
            self._pool_vectors = embedder.encode([item["input"] for item in pool])  # (n, d)

    def select(self, query: str) -> list[dict[str, Any]]:
        """The demonstrations for ``query``, most relevant first (fewer than ``k`` if the pool runs out)."""
        return self.select_many([query])[0]

    def select_many(self, queries: Sequence[str]) -> list[list[dict[str, Any]]]:
        """``select`` for each query; the embedding strategies embed all queries in one batched call."""
        vectors: np.ndarray | None = None
        if self._pool_vectors is not None and queries and self.k > 0:
            assert self.embedder is not None
            vectors = self.embedder.encode(list(queries))  # (q, d)
        out = []
        for i, query in enumerate(queries):
            picked = self._pick(query, None if vectors is None else vectors[i])
            # Copies: callers may edit their demos (render, truncate) without touching the shared pool.
            out.append([dict(self.pool[j]) for j in picked])
        return out

    def _pick(self, query: str, vector: np.ndarray | None) -> list[int]:
        if self.k == 0 or not self.pool:
            return []
        allowed = np.array([text != query.strip() for text in self._inputs], dtype=bool)  # (n,) no self-selection
        eligible = [int(i) for i in np.flatnonzero(allowed)]
        if self.strategy == "fixed":
            return [i for i in self.indices if allowed[i]][: self.k]
        if self.strategy == "random":
            rng = _query_rng(self.seed, query)
            return [eligible[j] for j in rng.permutation(len(eligible))[: self.k]]
        if self.strategy == "balanced":
            # Which items represent each label is seeded per query, like ``random``; the label order is not.
            rng = _query_rng(self.seed, query)
            order = [eligible[j] for j in rng.permutation(len(eligible))]
            return round_robin(self._labels, order, self.k)
        assert self._pool_vectors is not None and vector is not None
        if self.strategy == "semantic":
            return nearest(vector, self._pool_vectors, self.k, allowed)
        if self.strategy == "mmr":
            return mmr(vector, self._pool_vectors, self.k, self.mmr_lambda, allowed)
        raise AssertionError(f"unhandled strategy {self.strategy}")  # make_selector validated it


def make_selector(
    strategy: Strategy,
    pool: list[dict[str, Any]],
    *,
    k: int,
    seed: int = 0,
    embedder: TextEncoder | None = None,
    mmr_lambda: float = 0.5,
    indices: Sequence[int] | None = None,
) -> Selector:
    """A ``Selector`` over ``pool`` (items ``{"input", "output", "label"?}``); see the module docstring.

    ``embedder`` is required by ``semantic`` and ``mmr`` (pass ``Embedder()`` for the packaged MiniLM);
    ``indices`` (``fixed`` only) replaces "the first k" with an explicit list of pool positions.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown few-shot selection strategy '{strategy}'", hint=f"one of: {', '.join(STRATEGIES)}")
    if k < 0:
        raise ConfigError(f"few-shot k must be >= 0, got {k}")
    if not 0.0 <= mmr_lambda <= 1.0:
        raise ConfigError(f"mmr_lambda must be in [0, 1], got {mmr_lambda}")
    for n, item in enumerate(pool):
        if not isinstance(item, Mapping) or not isinstance(item.get("input"), str) or "output" not in item:
            raise ConfigError(f"few-shot pool item {n} needs a string 'input' and an 'output'")
    if strategy in _EMBEDDING_STRATEGIES and embedder is None:
        raise ConfigError(
            f"few-shot selection '{strategy}' needs an embedder", hint="pass embedder=Embedder() (packaged MiniLM)"
        )
    if indices is not None:
        if strategy != "fixed":
            raise ConfigError(f"indices only apply to the 'fixed' strategy, not '{strategy}'")
        bad = [i for i in indices if not 0 <= i < len(pool)]
        if bad:
            raise ConfigError(f"few-shot indices {bad} are outside the pool of {len(pool)} items")
    return Selector(strategy, pool, k=k, seed=seed, embedder=embedder, mmr_lambda=mmr_lambda, indices=indices)


# --- the context budget -------------------------------------------------------------------------------------


def fit_to_budget(
    demos: list[dict[str, Any]], render: Callable[[list[dict[str, Any]]], int], budget: int
) -> list[dict[str, Any]]:
    """The longest prefix of ``demos`` whose full prompt fits in ``budget`` tokens (possibly empty).

    ``render(demos)`` is the token count of the whole prompt with those demos. Demos arrive most relevant first,
    so dropping from the end sheds the least relevant. We walk down one at a time rather than bisect: ``k`` is
    small, and a chat template need not make the count monotone in the number of demos. An empty list is
    returned even when the bare prompt alone exceeds the budget; truncating the query is the engine's call.
    """
    kept = len(demos)
    while kept > 0 and render(demos[:kept]) > budget:
        kept -= 1
    return list(demos[:kept])


def count_tokens(tokenizer: ChatTokenizer, messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt length in tokens as the model will see it: chat template applied, generation prompt added.

    transformers 5 returns a ``BatchEncoding`` (a dict with ``input_ids``) from ``apply_chat_template`` by
    default; older versions and ``return_dict=False`` return the id list. Both are handled.
    """
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True)
    ids = out["input_ids"] if isinstance(out, Mapping) or hasattr(out, "keys") else out
    if hasattr(ids, "shape") and len(ids.shape) == 2:  # a (1, n) tensor or array
        return int(ids.shape[1])
    if isinstance(ids, list) and ids and isinstance(ids[0], list):  # a batch of one conversation
        return len(ids[0])
    return len(ids)
