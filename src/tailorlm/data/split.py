"""Deterministic train/eval splits.

Each record gets a rank, ``sha256(seed, record JSON)``, and the lowest ranks go to eval. Hashing instead of
``random.shuffle`` means the split depends only on the seed and the records themselves: not on the Python
version, not on the file's order, and identical duplicates rank next to each other, so they rarely straddle
the train/eval boundary (a duplicate on both sides would leak eval answers into training).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tailorlm.errors import DataError


def eval_count(n: int, *, eval_fraction: float | None = None, eval_size: int | None = None) -> int:
    """How many of ``n`` records go to eval; at least one each side, or a ``DataError``."""
    if (eval_fraction is None) == (eval_size is None):
        raise ValueError("pass exactly one of eval_fraction and eval_size")
    if eval_fraction is not None:
        if not 0.0 < eval_fraction < 1.0:
            raise DataError(f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
        count = max(1, round(n * eval_fraction))
    else:
        assert eval_size is not None
        if eval_size < 1:
            raise DataError(f"eval_size must be at least 1, got {eval_size}")
        count = eval_size
    if count > n - 1:
        raise DataError(
            f"cannot split {n} records into {count} for eval and at least 1 for training",
            hint="use a smaller eval_fraction/eval_size, or provide a separate eval file",
        )
    return count


def record_id(key: str) -> str:
    """A short, stable id of a record from its canonical JSON: what an augmented record names as its source."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def split_indices(
    keys: Sequence[str],
    *,
    eval_fraction: float | None = None,
    eval_size: int | None = None,
    seed: int = 0,
    sources: Sequence[str | None] | None = None,
) -> tuple[list[int], list[int]]:
    """Split record indices into ``(train, eval)``, each in the original order.

    ``keys`` holds one canonical JSON string per record. The same keys and seed always give the same split.
    ``sources[i]``, when set, marks record ``i`` as derived (augmented) from the record whose ``record_id`` it is.
    Derived records never go to eval (the size counts originals only), and they follow their source: one whose
    source went to eval is dropped, since training on a paraphrase of an eval item leaks its answer.
    """
    derived = [i for i in range(len(keys)) if sources is not None and sources[i] is not None]
    originals = [i for i in range(len(keys)) if sources is None or sources[i] is None]
    count = eval_count(len(originals), eval_fraction=eval_fraction, eval_size=eval_size)
    prefix = f"tailorlm.split/{seed}\0".encode()
    # The index breaks ties between identical records, so the count is exact even with duplicates.
    ranked = sorted(originals, key=lambda i: (hashlib.sha256(prefix + keys[i].encode()).digest(), i))
    eval_set = set(ranked[:count])
    held_out = {record_id(keys[i]) for i in eval_set} if derived else set()
    leaked = {i for i in derived if sources is not None and sources[i] in held_out}
    train = [i for i in range(len(keys)) if i not in eval_set and i not in leaked]
    return train, sorted(eval_set)
