"""Make user-controlled strings safe to show: in a terminal, in a Rich table, or on one line of an error.

Data files, task names and model outputs reach the CLI verbatim. A raw ``ESC [2J`` in a field name clears the
user's screen, ``ESC ]8;;`` plants a hyperlink, a right-to-left override (U+202E) reorders what they read, and
``[/]`` is Rich markup that either styles the text or raises ``MarkupError``. ``printable`` writes every
control and bidi-formatting character as a visible escape (``\\x1b``, ``\\u202e``); ``safe_cell`` also escapes
Rich markup, for text that goes into a table cell or a ``console.print`` with markup on.
"""

from __future__ import annotations

import re
import unicodedata

from rich.markup import escape

# C0 and C1 controls, DEL, and the invisible formatting characters that change how text is read or laid out:
# bidi embeddings, overrides and isolates, zero-width joiners, the line and paragraph separators, BOM.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep: str = "") -> str:
    """``text`` with control, bidi and lone-surrogate characters shown as escapes; characters in ``keep`` stay."""
    out = _UNSAFE.sub(lambda m: m.group(0) if m.group(0) in keep else _escape_char(m), text)
    out = _SURROGATE.sub(_escape_char, out)
    # Format characters outside the list above (e.g. tag characters) are rare; catch them by category.
    if any(unicodedata.category(c) == "Cf" for c in out if ord(c) > 0x7F):
        out = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" and c not in keep else c for c in out)
    return out


def safe_cell(text: object) -> str:
    """A user string for a Rich table cell or a markup-enabled print: printable, with Rich markup escaped."""
    return escape(printable(str(text)))
