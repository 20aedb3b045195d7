import pytest

from tailorlm.models.engines.base import GenerationParams, Request, truncate_at_stop

pytestmark = pytest.mark.unit


def test_truncate_at_earliest_stop() -> None:
    assert truncate_at_stop("a STOP b END c", ["END", "STOP"]) == ("a ", True)
    assert truncate_at_stop("no stop here", ["END"]) == ("no stop here", False)
    assert truncate_at_stop("x", ["", "y"]) == ("x", False)


def test_request_coercion() -> None:
    assert Request.of("hi").messages == [{"role": "user", "content": "hi"}]
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert Request.of(msgs).messages == msgs
    raw = Request(prompt="raw text")
    assert Request.of(raw) is raw


def test_params_default_greedy_and_forbid_unknown() -> None:
    assert GenerationParams().greedy
    assert not GenerationParams(temperature=0.7).greedy
    with pytest.raises(ValueError, match="max_tokens"):
        GenerationParams(max_tokens=3)  # type: ignore[call-arg]
