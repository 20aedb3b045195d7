"""PPO's rollout plumbing: which answer tokens count, and the sampler that repeats a batch for its updates."""

from __future__ import annotations

import pytest
import torch

from tailorlm.train.align.ppo import RepeatedBatches, answer_mask

pytestmark = pytest.mark.unit


def test_answer_mask_keeps_the_first_end_token_and_nothing_after() -> None:
    eos = 9
    completion = torch.tensor([[5, 6, eos, 0, 0], [5, eos, 7, eos, 0], [1, 2, 3, 4, 5], [eos, 0, 0, 0, 0]])
    assert answer_mask(completion, [eos]).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],  # no end token: cut at max_new_tokens, every token counts
        [1, 0, 0, 0, 0],
    ]
    assert answer_mask(torch.tensor([[1, 8, 2]]), [9, 8]).tolist() == [[1, 1, 0]]  # any of several end tokens


def test_repeated_batches_repeats_each_whole_batch_and_drops_the_rest() -> None:
    sampler = RepeatedBatches(n=7, batch_size=3, repeats=2, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 12
    batches = [order[i : i + 3] for i in range(0, 12, 3)]
    assert batches[0] == batches[1] and batches[2] == batches[3] and set(batches[0]).isdisjoint(batches[2])
    assert list(RepeatedBatches(n=7, batch_size=3, repeats=2, seed=0)) == order  # seeded: a resume sees the same
    assert list(sampler) != order  # a second pass shuffles anew
    with pytest.raises(ValueError, match="do not fill one batch"):
        RepeatedBatches(n=2, batch_size=3, repeats=1, seed=0)
