"""The openai engine against a real OpenAI-protocol server (tests/openai_stub.py), through the official client."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from openai_stub import OpenAIStub  # tests/ is on sys.path: pytest inserts the rootdir of tests/conftest.py
from tailorlm.errors import ModelNotFoundError, TailorError
from tailorlm.models.engines.base import Engine, GenerationParams, Request
from tailorlm.models.engines.openai import PLACEHOLDER_API_KEY, OpenAIEngine

pytestmark = pytest.mark.integration

MODEL = "stub-model"


@pytest.fixture(autouse=True)
def _no_ambient_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own key or base URL must not leak into these tests."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(answers={"capital of France?": "Paris is the capital of France ."}) as s:
        yield s


def engine_for(stub: OpenAIStub, **kw: object) -> OpenAIEngine:
    # Small timeouts and few retries keep every test to a second or so.
    opts: dict[str, object] = {"timeout_s": 5.0, "max_retries": 0, **kw}
    return OpenAIEngine(MODEL, base_url=stub.base_url, **opts)  # type: ignore[arg-type]


def test_is_an_engine(stub: OpenAIStub) -> None:
    engine = engine_for(stub)
    assert isinstance(engine, Engine)
    assert engine.name == MODEL


def test_batch_preserves_order_and_maps_usage(stub: OpenAIStub) -> None:
    stub.delay_s = 0.2  # makes the concurrent requests overlap on the server
    engine = engine_for(stub, concurrency=4)
    prompts = ["one two three", "capital of France?", "alpha beta", "x y z w"]
    outs = engine.generate(prompts, GenerationParams(max_new_tokens=50))

    assert [o.text for o in outs] == ["three two one", "Paris is the capital of France .", "beta alpha", "w z y x"]
    assert all(o.finish_reason == "stop" for o in outs)
    assert [o.usage.prompt_tokens for o in outs] == [3, 3, 2, 4]
    assert [o.usage.completion_tokens for o in outs] == [3, 7, 2, 4]
    assert all(o.latency_s >= 0.2 for o in outs)
    assert stub.max_in_flight > 1, "the batch should run concurrently"
    assert set(stub.paths()) == {"/v1/chat/completions"}


def test_max_tokens_gives_length(stub: OpenAIStub) -> None:
    out = engine_for(stub).generate(["capital of France?"], GenerationParams(max_new_tokens=2))[0]
    assert out.text == "Paris is"
    assert out.finish_reason == "length"
    assert out.usage.completion_tokens == 2


def test_params_are_mapped(stub: OpenAIStub) -> None:
    params = GenerationParams(max_new_tokens=7, temperature=0.7, top_p=0.9, stop=["\n\n"], seed=123)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    engine_for(stub).generate([messages], params)
    body = stub.requests[-1].body
    assert body is not None
    assert body["model"] == MODEL
    assert body["messages"] == messages
    assert body["max_tokens"] == 7
    assert body["temperature"] == 0.7
    assert body["top_p"] == 0.9
    assert body["stop"] == ["\n\n"]
    assert body["seed"] == 123
    assert "logprobs" not in body


def test_greedy_default_sends_temperature_zero(stub: OpenAIStub) -> None:
    engine_for(stub).generate(["hi"])
    body = stub.requests[-1].body
    assert body is not None
    assert body["temperature"] == 0.0  # the API's own default would be 1.0
    assert "seed" not in body and "top_p" not in body and "stop" not in body


def test_stop_strings_beyond_four_apply_client_side(stub: OpenAIStub) -> None:
    # The reply is "Paris is the capital of France ."; only the 5th stop string occurs in it.
    params = GenerationParams(stop=["zz1", "zz2", "zz3", "zz4", " capital"], logprobs=True)
    out = engine_for(stub).generate(["capital of France?"], params)[0]
    assert stub.requests[-1].body["stop"] == ["zz1", "zz2", "zz3", "zz4"]  # type: ignore[index]
    assert out.text == "Paris is the"
    assert out.finish_reason == "stop"
    assert out.logprobs is not None and len(out.logprobs) == 3  # trimmed with the text


def test_chat_logprobs(stub: OpenAIStub) -> None:
    out = engine_for(stub).generate(["a b c"], GenerationParams(logprobs=True))[0]
    assert stub.requests[-1].body["logprobs"] is True  # type: ignore[index]
    assert out.logprobs == pytest.approx([-0.1, -0.2, -0.3])


def test_raw_prompt_goes_to_completions(stub: OpenAIStub) -> None:
    params = GenerationParams(max_new_tokens=2, logprobs=True)
    out = engine_for(stub).generate([Request(prompt="once upon a time")], params)[0]
    req = stub.requests[-1]
    assert req.path == "/v1/completions"
    assert req.body is not None and req.body["prompt"] == "once upon a time" and req.body["logprobs"] == 1
    assert out.text == "time a"
    assert out.finish_reason == "length"
    assert out.usage.prompt_tokens == 4 and out.usage.completion_tokens == 2
    assert out.logprobs == pytest.approx([-0.1, -0.2])


def test_missing_usage_counts_zero() -> None:
    with OpenAIStub(usage=False) as stub:
        engine = engine_for(stub)
        out = engine.generate(["a b"])[0]
        assert out.text == "b a"
        assert out.usage.total_tokens == 0
        chunks = list(engine.stream("a b"))
        assert "".join(c.text for c in chunks) == "b a"
        assert chunks[-1].finish_reason == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0


@pytest.mark.parametrize("request_", ["capital of France?", Request(prompt="capital of France?")])
def test_stream_matches_generate(stub: OpenAIStub, request_: str | Request) -> None:
    engine = engine_for(stub)
    params = GenerationParams(max_new_tokens=4)
    full = engine.generate([request_], params)[0]
    chunks = list(engine.stream(request_, params))

    assert len(chunks) > 2, "the answer should arrive in pieces"
    assert "".join(c.text for c in chunks) == full.text == "Paris is the capital"
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage == full.usage
    body = stub.requests[-1].body
    assert body is not None and body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_stream_applies_extra_stop_strings(stub: OpenAIStub) -> None:
    params = GenerationParams(stop=["zz1", "zz2", "zz3", "zz4", "capital of"])
    chunks = list(engine_for(stub).stream("capital of France?", params))
    assert "".join(c.text for c in chunks) == "Paris is the "
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7  # what the server generated


@pytest.mark.parametrize("status", [500, 429])
def test_retry_succeeds_after_one_failure(stub: OpenAIStub, status: int) -> None:
    stub.fail_next(1, status=status)
    out = engine_for(stub, max_retries=2).generate(["a b"])[0]
    assert out.text == "b a"
    assert len(stub.requests) == 2  # the client retried once, by itself


def test_persistent_failure_names_base_url(stub: OpenAIStub) -> None:
    stub.fail_next(100, status=500)
    with pytest.raises(TailorError) as err:
        engine_for(stub, max_retries=1).generate(["a b"])
    assert stub.base_url in str(err.value)
    assert "500" in str(err.value)
    assert len(stub.requests) == 2


def test_connection_refused_names_base_url() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    engine = OpenAIEngine(MODEL, base_url=base_url, timeout_s=2.0, max_retries=0)
    with pytest.raises(TailorError) as err:
        engine.generate(["hi"])
    assert base_url in str(err.value)
    assert "server" in (err.value.hint or "")
    with pytest.raises(TailorError, match="cannot connect"):
        list(engine.stream("hi"))


def test_timeout_becomes_tailor_error(stub: OpenAIStub) -> None:
    stub.delay_s = 2.0
    engine = engine_for(stub, timeout_s=0.2)
    with pytest.raises(TailorError, match="timed out") as err:
        engine.generate(["hi"])
    assert stub.base_url in str(err.value)


def test_wrong_key_names_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_TEST_KEY", "wrong")
    with OpenAIStub(api_key="right") as stub:
        bad = engine_for(stub, api_key_env="TAILOR_TEST_KEY")
        with pytest.raises(TailorError, match="TAILOR_TEST_KEY") as err:
            bad.generate(["hi"])
        assert "401" in str(err.value)
        assert not isinstance(err.value, ModelNotFoundError)

        monkeypatch.setenv("TAILOR_TEST_KEY", "right")
        good = engine_for(stub, api_key_env="TAILOR_TEST_KEY")
        assert good.generate(["a b"])[0].text == "b a"
        assert stub.requests[-1].headers["authorization"] == "Bearer right"


def test_local_server_without_key_gets_placeholder(stub: OpenAIStub) -> None:
    engine_for(stub).generate(["hi"])
    assert stub.requests[-1].headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


def test_remote_server_without_key_is_an_error() -> None:
    with pytest.raises(TailorError, match="MY_KEY"):
        OpenAIEngine("gpt-x", base_url="https://api.example.com/v1", api_key_env="MY_KEY")


def test_unknown_model_is_model_not_found(stub: OpenAIStub) -> None:
    engine = OpenAIEngine("no-such-model", base_url=stub.base_url, timeout_s=5.0, max_retries=0)
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        engine.generate(["hi"])
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        list(engine.stream("hi"))


def test_empty_batch(stub: OpenAIStub) -> None:
    assert engine_for(stub).generate([]) == []
    assert stub.requests == []
