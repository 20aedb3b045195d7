"""How the ct2 engine batches: only prompts of nearly equal length share a batch (CTranslate2 feeds the rest of a
longer prompt one token per decoding step, which made mixed batches slower than single rows)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailorlm.models.engines.ct2 import LENGTH_SLACK, length_groups

pytestmark = pytest.mark.unit


def test_equal_lengths_batch_together_up_to_the_batch_size() -> None:
    assert length_groups([5, 5, 5, 5, 5], batch_size=2) == [[0, 1], [2, 3], [4]]


def test_lengths_beyond_the_slack_run_alone_longest_first() -> None:
    lengths = [100, 600, 300]
    assert length_groups(lengths, batch_size=16) == [[1], [2], [0]]


def test_close_lengths_share_a_batch() -> None:
    assert length_groups([50, 50 + LENGTH_SLACK, 50 + LENGTH_SLACK + 1], batch_size=16) == [[2, 1], [0]]


@given(st.lists(st.integers(1, 2000), max_size=60), st.integers(1, 32))
def test_groups_cover_every_index_once_within_size_and_slack(lengths: list[int], batch_size: int) -> None:
    groups = length_groups(lengths, batch_size)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        spread = [lengths[i] for i in group]
        assert len(group) <= batch_size
        assert max(spread) - min(spread) <= LENGTH_SLACK
