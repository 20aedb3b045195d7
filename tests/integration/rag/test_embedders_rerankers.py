"""The other embedders (an OpenAI-compatible endpoint, plain sentence-transformers) and the rerankers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openai_stub import OpenAIStub
from tailorlm.rag.embedding import EmbedderConfig, build_embedder
from tailorlm.rag.rerank import CrossEncoderReranker, LLMReranker, _score

pytestmark = pytest.mark.integration

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "Bees make honey in hives."]


def test_openai_endpoint_embeds_batches_and_caches(tmp_path: Path) -> None:
    with OpenAIStub() as stub:
        config = EmbedderConfig(model="openai:stub-model", base_url=stub.base_url, batch_size=2)
        emb = build_embedder(config, cache_path=tmp_path / "cache.sqlite")
        vectors = emb.embed(TEXTS)
        assert vectors.shape == (3, 8)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        calls = stub.paths().count("/v1/embeddings")
        assert calls == 1 + 2  # the dimension probe, then two batches of at most 2
        assert np.array_equal(emb.embed(TEXTS[::-1]), vectors[::-1])  # from the cache
        assert stub.paths().count("/v1/embeddings") == calls


@pytest.mark.isa
def test_int8_onnx_agrees_with_sentence_transformers() -> None:
    onnx = build_embedder(EmbedderConfig(cache=False))
    torch = build_embedder(EmbedderConfig(backend="torch", cache=False))
    assert onnx.identity != torch.identity  # their vectors differ slightly, so they never share cache entries
    cos = (onnx.embed(TEXTS) * torch.embed(TEXTS)).sum(1)
    assert cos.min() > 0.9
    # Batches split across sessions land each text in its place. Not bit-identical to one call per text: dynamic
    # int8 quantization scales activations per batch, so a vector moves slightly with its batch mates.
    one_by_one = np.stack([onnx.embed([t])[0] for t in TEXTS * 30])
    assert (onnx.embed(TEXTS * 30) * one_by_one).sum(1).min() > 0.97


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BERT relevance head with MiniLM's tokenizer, saved as a CrossEncoder folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tailorlm.prompting.embed import default_embedder_dir

    folder = tmp_path_factory.mktemp("cross-encoder")
    tok = AutoTokenizer.from_pretrained(str(default_embedder_dir()))
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_cross_encoder_reranker_scores_every_passage(tiny_cross_encoder: Path) -> None:
    rerank = CrossEncoderReranker(str(tiny_cross_encoder))
    scores = rerank("Where is Paris?", TEXTS)
    assert len(scores) == 3 and all(np.isfinite(scores))
    assert scores == rerank("Where is Paris?", TEXTS)  # deterministic
    assert rerank("q", []) == []


def test_missing_cross_encoder_is_a_clear_error(tmp_path: Path) -> None:
    from tailorlm.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="reranker folder not found"):
        CrossEncoderReranker(str(tmp_path / "nope"))


def test_llm_reranker_asks_the_engine_once_per_passage(tiny_model_dir: Path) -> None:
    from tailorlm.models.engines.hf import HFEngine

    scores = LLMReranker(HFEngine(str(tiny_model_dir)))("Where is Paris?", TEXTS)
    assert len(scores) == 3 and all(s >= 0 for s in scores)  # a random model's replies parse to numbers or 0


def test_llm_reranker_score_parsing() -> None:
    assert _score("8") == 8.0 and _score("Score: 7.5/10") == 7.5 and _score("no idea") == 0.0


def test_likelihood_reranker_scores_the_questions_mean_log_probability(tiny_model_dir: Path) -> None:
    import torch

    from tailorlm.rag.rerank import _UPR_PROMPT, LikelihoodReranker

    reranker = LikelihoodReranker(str(tiny_model_dir), batch_size=2)
    passages = ["The cat sat on the mat.", "Stocks fell sharply on Monday after the report.", "A third passage."]
    scores = reranker("Where did the cat sit?", passages)
    assert len(scores) == 3 and all(s < 0 for s in scores)
    # By hand, one passage alone (no padding): the mean log-probability of the question's tokens after the prompt.
    tok, model = reranker.tokenizer, reranker.model
    prompt = tok(_UPR_PROMPT.format(passage=passages[1]), add_special_tokens=False)["input_ids"]
    question = tok(" Where did the cat sit?", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + question])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    expected = float(logp[-len(question) :].gather(-1, ids[0, -len(question) :, None]).mean())
    assert scores[1] == pytest.approx(expected, abs=1e-4)  # padded in a batch of two, the same score


def test_query_transforms_write_a_search_text(tiny_model_dir: Path) -> None:
    from tailorlm.rag.rerank import QueryTransform

    hyde = QueryTransform("hyde", str(tiny_model_dir), max_new_tokens=4)
    assert hyde("Where did the cat sit?").startswith("Where did the cat sit?")
    rewrite = QueryTransform("rewrite", str(tiny_model_dir), max_new_tokens=4)
    assert isinstance(rewrite("Where did the cat sit?"), str) and rewrite("Where did the cat sit?")
