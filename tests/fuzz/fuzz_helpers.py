"""Shared pieces of the fuzz tests: the case counter, the example budget, and mutations of real files.

Every property test body is wrapped in ``@counted("boundary")``, which counts the examples hypothesis tried per
boundary (shrinking re-runs included) and the ones that escaped as an exception other than the allowed kind.
``conftest.py`` prints the table at the end of the session and writes ``fuzz-counts.json``.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import strategies as st

from tailorlm.errors import TailorError

F = TypeVar("F", bound=Callable[..., Any])

PROFILE = os.environ.get("TAILOR_FUZZ_PROFILE", "ci")
# The long profile tries ten times as many examples per test; CI keeps the whole folder under a minute.
SCALE = {"ci": 1, "long": 10}.get(PROFILE, 1)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"

CASES: Counter[str] = Counter()
UNCAUGHT: Counter[str] = Counter()


def budget(n: int) -> int:
    """``max_examples`` for a test: ``n`` in the CI profile, ``n * 10`` in the long one."""
    return n * SCALE


def counted(boundary: str) -> Callable[[F], F]:
    """Count every example of the wrapped test body under ``boundary``; an escaping exception is "uncaught"."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            CASES[boundary] += 1
            try:
                return fn(*args, **kwargs)
            except BaseException as err:
                # Hypothesis' own control flow (e.g. ``assume``) is not a failure of the code under test.
                if type(err).__module__.startswith("hypothesis"):
                    raise
                UNCAUGHT[boundary] += 1
                raise

        return inner  # type: ignore[return-value]

    return wrap


# --- strings a user (or an attacker) can put in a file -------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</textarea><svg onload=alert(1)>",
    "\x1b[31mred\x1b[0m",
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[H",
    "\u202eevil\u202c",
    "\u2066isolate\u2069",
    "a\x00b",
    "\r\noverwritten",
    "[bold red]markup[/]",
    "[/]",
    "[link=https://evil.example]x[/link]",
    "{{ 7*7 }}",
    "${jndi:ldap://x}",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🤖 ﷽ Z͑ͫ̓ͪ̂ͫ̽͏̴̙̤̞͉͚̯̞̠͍",
    "\ud800",
    "",
    " ",
]

# Text with the characters that break parsers and terminals: controls, bidi overrides, surrogates, astral.
nasty_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(),
    st.text(alphabet=st.characters(codec=None, categories=("Cc", "Cf", "Cs", "Zl", "Zp", "So"))),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), nasty_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=12,
)


# --- byte-level mutations of real files ----------------------------------------------------------------------


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    """A real file with one to three corruptions: flips, cuts, NULs, invalid UTF-8, BOMs, CRLF, huge lines, ..."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["flip", "truncate", "nul", "bad_utf8", "bom", "crlf", "cr", "huge_line", "insert", "delete", "dup"]
            )
        )
        pos = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and data:
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "nul":
            data[pos:pos] = b"\x00" * draw(st.integers(1, 3))
        elif op == "bad_utf8":
            # A stray byte, a cut sequence, an encoded surrogate, a code point over U+10FFFF, UTF-16 noise.
            bad = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xfe\xfe"]
            data[pos:pos] = draw(st.sampled_from(bad))
        elif op == "bom":
            data[0:0] = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
        elif op == "crlf":
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
        elif op == "cr":
            data = bytearray(bytes(data).replace(b"\n", b"\r"))
        elif op == "huge_line":
            data[pos:pos] = draw(st.sampled_from([b"x", b"[", b"{", b"9", b'"', b","])) * draw(
                st.sampled_from([5_000, 70_000, 200_000])
            )
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "dup" and data:
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


# --- the property every boundary must keep -------------------------------------------------------------------

_FILE_LINE = re.compile(r":\d+: ")


def assert_user_error(err: TailorError, path: Path | str) -> None:
    """A user-facing error names the file, and each of its issues is one line ``file:line: field: message``."""
    name = str(path)
    text = str(err)
    assert text.strip(), "an error with no message"
    issues = getattr(err, "issues", [])
    assert name in text or any(name in str(i) for i in issues), f"the error does not name {name}: {text[:300]}"
    for issue in issues:
        line = str(issue)
        assert "\n" not in line and "\r" not in line, f"an issue spans lines: {line!r}"
        assert _FILE_LINE.search(line) and issue.line >= 0 and issue.field, f"not file:line: field: {line!r}"
        assert "\x1b" not in line, f"a raw terminal escape in an issue: {line!r}"
