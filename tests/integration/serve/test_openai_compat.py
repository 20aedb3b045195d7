"""The server through the official `openai` client: chat (plain, streamed, n, stop), completions, embeddings,
models, a RAG System's citations, feedback, and the errors (401, 404, 413, 429) in OpenAI's shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serve_harness import make_state, serving
from tailorlm.core.system import PromptSpec, RetrieverSpec, System

pytestmark = pytest.mark.integration

DOCS = {
    "backup.md": "# Backups\n\nThe backup server is rebooted every Sunday at 03:00 by the operations team.",
    "coffee.md": "# Coffee\n\nThe office coffee machine on floor two takes oat milk and is cleaned on Fridays.",
    "parking.md": "# Parking\n\nVisitors park in the north lot; badges are handed out at the front desk.",
}


@pytest.fixture(scope="module")
def rag_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tailorlm.rag.index import Index
    from tailorlm.rag.ingest import ingest

    root = tmp_path_factory.mktemp("rag")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    index = Index.open(root / "index", create=True)
    ingest(index, docs, progress=False)
    return str(root / "index")


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, rag_index: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("serve")
    generation = {"max_new_tokens": 8}
    systems = [
        System(name="tiny", model=str(tiny_model_dir), generation=generation),
        System(
            name="tiny-rag",
            model=str(tiny_model_dir),
            generation=generation,
            prompt=PromptSpec(system="Answer from the sources."),
            retriever=RetrieverSpec(index=rag_index, top_k=2),
        ),
    ]
    state = make_state(systems, tmp, limits={"body_bytes": 4096, "max_tokens": 64, "n": 3})
    with serving(state) as base:
        yield state, base


@pytest.fixture
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[1]}/v1", api_key="unused", max_retries=0)


def test_chat_plain_n_stop_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=6)
    assert r.object == "chat.completion" and r.model == "tiny"
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 6
    assert r.choices[0].model_extra["response_id"] == r.id
    many = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=6, n=3, temperature=0.9, seed=1
    )
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert len({c.model_extra["response_id"] for c in many.choices}) == 3
    # A stop string the greedy answer contains ends it there, and never appears in the text.
    full = r.choices[0].message.content
    if len(full) > 2:
        stop = full[1:3]
        cut = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=6, stop=[stop]
        )
        assert stop not in cut.choices[0].message.content and cut.choices[0].finish_reason == "stop"


def test_chat_streamed_matches_plain(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "tell me something"}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens


def test_completions_models_and_embeddings(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="The cat", max_tokens=5)
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")
    ids = {m.id for m in client.models.list()}
    assert ids == {"tiny", "tiny-rag"}
    e = client.embeddings.create(model="tiny-rag", input=["backup server", "coffee"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 384
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="tiny", input="no retriever here")


def test_rag_answer_carries_citations_and_sources_are_stored(client: openai.OpenAI, server: Any) -> None:
    r = client.chat.completions.create(
        model="tiny-rag", messages=[{"role": "user", "content": "When is the backup server rebooted?"}]
    )
    assert "citations" in r.model_extra and isinstance(r.model_extra["citations"], list)
    assert r.choices[0].model_extra["abstained"] is False
    record = server[0].store.get_response(r.id)
    assert record is not None and record.system == "tiny-rag" and record.citations is not None
    assert record.request["messages"][-1]["content"] == "When is the backup server rebooted?"


def test_feedback_is_stored_and_unknown_ids_are_404(client: openai.OpenAI, server: Any) -> None:
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    base = server[1]
    ok = httpx.post(f"{base}/v1/feedback", json={"response_id": r.id, "rating": "up", "comment": "good"})
    assert ok.status_code == 201, ok.text
    assert any(f.id == ok.json()["id"] and f.rating == "up" for f in server[0].store.feedback())
    missing = httpx.post(f"{base}/v1/feedback", json={"response_id": "chatcmpl-nope", "rating": "up"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"
    empty = httpx.post(f"{base}/v1/feedback", json={"response_id": r.id})
    assert empty.status_code == 400 and "error" in empty.json()


def test_errors_unknown_model_oversized_and_unsupported(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.APIStatusError) as big:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 10_000}])
    assert big.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=10_000)
    assert "max_tokens" in str(many.value)
    with pytest.raises(openai.BadRequestError) as bias:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], logit_bias={"42": 5.0}
        )
    assert "logit_bias" in str(bias.value)


def test_bad_key_is_401(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tailorlm.serve.auth import KeyStore

    key, _ = KeyStore(tmp_path / "keys.json").create("alice")
    state = make_state([System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 4})], tmp_path)
    with serving(state) as base:
        bad = openai.OpenAI(base_url=f"{base}/v1", api_key="tlm-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
        assert err.value.body["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        assert good.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}]).choices
        # Metrics need an admin key.
        assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 403


def test_queue_full_is_429_with_retry_after(tiny_model_dir: Path, tmp_path: Path) -> None:
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 64})
    state = make_state([system], tmp_path, batching={"max_batch": 1, "max_queue": 1, "window_ms": 0})
    statuses: list[int] = []
    headers: list[str | None] = []
    with serving(state) as base:

        def call() -> None:
            r = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "go"}], "max_tokens": 64},
                timeout=60,
            )
            statuses.append(r.status_code)
            headers.append(r.headers.get("retry-after"))
            if r.status_code == 429:
                assert r.json()["error"]["type"] == "rate_limit_error"

        threads = [threading.Thread(target=call) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 429 in statuses and 200 in statuses, statuses
        assert all(h is not None and int(h) >= 1 for s, h in zip(statuses, headers, strict=True) if s == 429)
        # Still serving afterwards.
        after = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "again"}], "max_tokens": 4},
            timeout=60,
        )
        assert after.status_code == 200, after.text
        assert json.loads(after.text)["choices"]
