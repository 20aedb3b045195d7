"""Perplexity math against hand-computed values: the causal shift, ignored positions, token weighting."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tailorlm.train.pretrain.perplexity import heldout_perplexity, nll_sum, perplexity

pytestmark = pytest.mark.unit


def test_nll_sum_scores_position_t_against_token_t_plus_1() -> None:
    # Vocabulary of 3. Position 0 gives p = (1/4, 1/2, 1/4); position 1 is uniform; position 2's logits are unused
    # (nothing follows them). Targets: token 1 at position 1 (p=1/2), token 2 at position 2 (p=1/3).
    logits = torch.tensor([[[0.0, math.log(2), 0.0], [0.0, 0.0, 0.0], [9.0, -9.0, 9.0]]])
    labels = torch.tensor([[-100, 1, 2]])
    total, n = nll_sum(logits, labels)
    assert n == 2
    assert total == pytest.approx(math.log(2) + math.log(3), abs=1e-6)


def test_ignored_labels_count_for_nothing() -> None:
    logits = torch.zeros(1, 4, 5)  # uniform: every scored token costs log 5
    total, n = nll_sum(logits, torch.tensor([[7, -100, 3, -100]]))  # only label 3 at position 2 is a target
    assert (n, total) == (1, pytest.approx(math.log(5)))


def test_perplexity_is_token_weighted_not_a_mean_of_batches() -> None:
    # Batch a: 1 token at NLL 4; batch b: 3 tokens at NLL 1 each. Exact: exp((4 + 3) / 4) = exp(1.75).
    assert perplexity(4.0 + 3.0, 1 + 3) == pytest.approx(math.exp(1.75))
    mean_of_batches = (math.exp(4.0) + math.exp(1.0)) / 2
    assert perplexity(7.0, 4) != pytest.approx(mean_of_batches)
    assert math.isnan(perplexity(0.0, 0))


class UnigramModel(torch.nn.Module):
    """Predicts the same distribution everywhere, so the expected perplexity can be written down by hand."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_heldout_perplexity_over_packed_blocks_by_hand() -> None:
    p = [0.1, 0.2, 0.3, 0.4]
    model = UnigramModel(p)
    model.train()
    blocks = [
        # two documents [1, 2, 3] and [3, 0]: targets 2, 3 (first doc) and 0 (second); 1 and 3 start a document
        {"input_ids": [1, 2, 3, 3, 0], "seq_lengths": [3, 2]},
        # one document [2, 2]: target 2; padded to width 5 in the batch, padding is never a target
        {"input_ids": [2, 2], "seq_lengths": [2]},
        # a last batch of one block: [0, 1, 1] → targets 1, 1
        {"input_ids": [0, 1, 1], "seq_lengths": [3]},
    ]
    targets = [2, 3, 0, 2, 1, 1]
    expected_nll = -sum(math.log(p[t]) for t in targets)
    result = heldout_perplexity(model, blocks, pad_token_id=3, batch_size=2)
    assert result["tokens"] == len(targets) and result["blocks"] == 3
    assert result["nll_per_token"] == pytest.approx(expected_nll / len(targets), rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(expected_nll / len(targets)), rel=1e-6)
    assert model.training, "the model goes back to the mode it was in"
