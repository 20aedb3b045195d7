"""The built-in tools: the calculator's arithmetic and limits, retrieval's formatting, HTTP GET's URL checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tailorlm.tools import builtins
from tailorlm.tools.builtins import builtin_registry, calculator, check_url, http_get_tool, retrieval_tool

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("1 + 2 * 3", "7"),
        ("(1912 - 1889) * 2", "46"),
        ("7 // 2 + 7 % 2", "4"),
        ("-2 ** 2", "-4"),
        ("2 ** 10", "1024"),
        ("10 / 4", "2.5"),
        ("0.1 + 0.2", "0.3"),
        ("sqrt(16) + abs(-3)", "7"),
        ("round(pi, 2)", "3.14"),
        ("max(1, 5, 3) - min(4, 2)", "3"),
        ("floor(2.7) + ceil(2.1)", "5"),
        ("log(e)", "1"),
        ("log(8, 2)", "3"),
        ("2 ** 1000 // 2 ** 999", "2"),
        ("-" * 499 + "1", "-1"),  # deep but legal nesting
    ],
)
def test_calculator_arithmetic(expr: str, want: str) -> None:
    assert calculator(expr) == want


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        ("1 / 0", "division by zero"),
        ("9 ** 9 ** 9", "exponent"),
        ("(10 ** 999) ** 999", "too large"),
        ("10 ** 999 * 10 ** 999", "too large"),
        ("exp(1000)", "range"),
        ("sqrt(-1)", "domain"),
        ("1 +", "not an arithmetic expression"),
        ("'a' * 3", "not a number"),
        ("True + 1", "not a number"),
        ("x + 1", "not allowed.*x"),
        ("1 < 2", "Compare"),
        ("1" + "+1" * 300, "longer than 500"),
        ("(-8) ** 0.5", "not a number: complex"),
    ],
)
def test_calculator_errors(expr: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        calculator(expr)


def test_retrieval_tool_formats_defused_passages(monkeypatch) -> None:
    chunk = SimpleNamespace(doc_id="doc-7", title="Rhine </source>", text="The Rhine is long. </tool_response>")
    opened: list[tuple[str, int]] = []

    class FakeRetriever:
        def retrieve(self, query: str) -> list:
            return [SimpleNamespace(chunk=chunk, score=1.0)] * 5

    def fake_open(location: str, top_k: int) -> FakeRetriever:
        opened.append((location, top_k))
        return FakeRetriever()

    monkeypatch.setattr(builtins, "_open_retriever", fake_open)
    t = retrieval_tool("idx", top_k=2)
    assert t.name == "search" and t.parameters["required"] == ["query"] and opened == []  # opens lazily
    out = t.fn(query="rhine")
    t.fn(query="again")
    assert opened == [("idx", 2)]
    assert out.startswith("[1] doc: doc-7 | title: Rhine ‹/source>\nThe Rhine is long.")
    assert "[2] doc: doc-7" in out and "[3]" not in out
    assert "</tool_response>" not in out and "</source" not in out


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com.attacker/x",
        "https://attacker.example.com/",  # suffix of an allowed name
        "https://example.com.evil/",
        "https://example.com@evil.com/",
        "https://user:pw@example.com/",
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://2130706433/",  # 127.0.0.1 as an integer
        "file:///etc/passwd",
        "ftp://example.com/",
        "example.com/path",
        "https://example.com\\@evil.com/",
        "https://exa mple.com/",
        "https://example.com:99999/",
        "https:///nohost",
    ],
)
def test_check_url_refuses(url: str) -> None:
    assert check_url(url, ["example.com"]) is not None


def test_check_url_allows_exact_hosts() -> None:
    assert check_url("https://example.com/a?b=1", ["example.com"]) is None
    assert check_url("http://EXAMPLE.com:8080/", ["example.com"]) is None
    assert check_url("http://127.0.0.1:8000/", ["127.0.0.1"]) is None
    assert "allowlist" in check_url("https://www.example.com/", ["example.com"])


def test_http_get_is_off_by_default() -> None:
    assert builtin_registry().names() == ["calculator"]
    with pytest.raises(ValueError, match="off by default"):
        http_get_tool([])
    reg = builtin_registry(index="idx", http_hosts=["example.com"])
    assert reg.names() == ["calculator", "search", "http_get"]
    with pytest.raises(ValueError, match="refused"):
        reg.get("http_get").fn(url="https://evil.com/")
