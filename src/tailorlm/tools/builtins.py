"""The tools tailorlm ships: a calculator, retrieval over a RAG index, and an allowlisted HTTP GET.

None of them runs shell commands or writes files. The calculator walks a whitelisted AST (never ``eval``) and
bounds the size of every number, so ``9**9**9`` is an error rather than a hung process. HTTP GET exists only when
the user names the hosts it may reach, and it re-checks the host on every redirect.
"""

from __future__ import annotations

import ast
import ipaddress
import math
import operator
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tailorlm.rag.answer import defuse
from tailorlm.tools.execute import defuse_markers
from tailorlm.tools.registry import ToolRegistry, tool
from tailorlm.tools.types import Tool

MAX_EXPRESSION = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**1000  # about 3,300 bits: cheap to multiply, far beyond any real question

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}  # fmt: skip
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "abs": abs, "round": round, "min": min, "max": max, "floor": math.floor, "ceil": math.ceil,
}  # fmt: skip
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _check(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is not finite")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError("result too large")
    return value


def _power(base: Any, exp: Any) -> Any:
    if abs(exp) > MAX_EXPONENT:
        raise ValueError(f"exponent {exp:g} is larger than {MAX_EXPONENT}")
    # Estimate the size before computing: 999**999 is fine, (999**999)**999 would be three million digits.
    if abs(base) > 1 and exp > 0 and exp * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise ValueError("result too large")
    return base**exp


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _check(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check(_power(left, right))
        return _check(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise ValueError(f"{node.func.id}() takes no keyword arguments here")
        args = [_eval(a) for a in node.args]
        if node.func.id == "round" and len(args) == 2:
            args[1] = int(args[1])
        return _check(_FUNCTIONS[node.func.id](*args))
    what = node.id if isinstance(node, ast.Name) else type(node).__name__
    raise ValueError(f"not allowed in an expression: {what}")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the number.

    Args:
        expression: Numbers with + - * / // % ** and parentheses, and sqrt, log, exp, sin, cos, tan, abs, round,
            min, max, floor, ceil, pi, e. For example "(1912 - 1889) * 2" or "sqrt(2) * pi".
    """
    if len(expression) > MAX_EXPRESSION:
        raise ValueError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, MemoryError, RecursionError) as err:  # nesting past the parser's limits too
        raise ValueError(f"not an arithmetic expression: {getattr(err, 'msg', None) or err}") from None
    try:
        value = _eval(tree)
    except RecursionError:
        raise ValueError("expression nested too deeply") from None
    except (ZeroDivisionError, OverflowError, TypeError) as err:
        raise ValueError(str(err)) from None
    if isinstance(value, float):
        return format(value, ".15g")  # 0.1 + 0.2 reads as 0.3
    return str(value)


# --- retrieval ------------------------------------------------------------------------------------------------


def _open_retriever(location: str, top_k: int) -> Any:
    from tailorlm.rag.index import Index

    return Index.open(location).retriever(top_k=top_k)


def retrieval_tool(index_location: str | Path, top_k: int = 3) -> Tool:
    """A ``search`` tool over a RAG index. The index opens on the first call, not here: building a registry
    should not load an embedder."""
    location = str(index_location)
    opened: list[Any] = []
    lock = threading.Lock()

    def search(query: str) -> str:
        """Search the knowledge base and return the most relevant passages with their document ids.

        Args:
            query: What to look for, in a few words.
        """
        with lock:
            if not opened:
                opened.append(_open_retriever(location, top_k))
        hits = opened[0].retrieve(query)[:top_k]
        if not hits:
            return "no passages found"
        parts = []
        for n, hit in enumerate(hits, 1):
            c = hit.chunk
            title = " ".join(defuse(c.title or "").split())
            head = f"[{n}] doc: {c.doc_id}" + (f" | title: {title}" if title else "")
            parts.append(f"{head}\n{defuse_markers(defuse(c.text)).strip()}")
        return "\n\n".join(parts)

    return tool(search, timeout_s=30.0)


# --- HTTP GET -------------------------------------------------------------------------------------------------


def check_url(url: str, allow_hosts: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """Why ``url`` may not be fetched, or None when it may. Only http(s), no userinfo (``allowed@evil``), no
    odd characters, and the host must equal an allowlisted name exactly: no suffix or prefix matching, and an IP
    literal only when that exact IP is listed. (A listed name that resolves to an internal address is the
    user's choice: we do not resolve names.)"""
    if not isinstance(url, str) or any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in url):
        return "URL contains whitespace, control characters or backslashes"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 — raises ValueError on a bad port
    except ValueError as err:
        return f"malformed URL: {err}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} not allowed; only http and https"
    if "@" in parts.netloc:
        return "URLs with user information (user@host) are not allowed"
    host = (parts.hostname or "").lower()
    if not host:
        return "URL has no host"
    allowed = {h.strip().lower() for h in allow_hosts if h.strip()}
    if host in allowed:
        return None
    try:
        ipaddress.ip_address(host)
        return f"IP address {host} is not in the allowlist"
    except ValueError:
        return f"host {host!r} is not in the allowlist ({', '.join(sorted(allowed)) or 'empty'})"


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an allowlisted URL: ``allowed.com → evil.com`` must not work."""

    max_redirections = 5

    def __init__(self, allow_hosts: list[str]) -> None:
        self.allow_hosts = allow_hosts

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        reason = check_url(newurl, self.allow_hosts)
        if reason is not None:
            raise urllib.error.HTTPError(newurl, code, f"redirect refused: {reason}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_get_tool(allow_hosts: list[str], timeout_s: float = 10, max_bytes: int = 100_000) -> Tool:
    """An ``http_get`` tool limited to ``allow_hosts``. Uses the standard library (environment proxies apply)."""
    hosts = [h for h in allow_hosts if h.strip()]
    if not hosts:
        raise ValueError("http_get needs a non-empty host allowlist; it is off by default")
    opener = urllib.request.build_opener(_CheckedRedirects(hosts))

    def http_get(url: str) -> str:
        """Fetch a web page by URL (only from allowed hosts) and return its text.

        Args:
            url: The full http:// or https:// URL.
        """
        reason = check_url(url, hosts)
        if reason is not None:
            raise ValueError(f"refused: {reason}")
        req = urllib.request.Request(url, headers={"User-Agent": "tailorlm-http-get"})
        with opener.open(req, timeout=timeout_s) as resp:
            body = resp.read(max_bytes + 1)
            charset = resp.headers.get_content_charset() or "utf-8"
        text = body[:max_bytes].decode(charset, errors="replace")
        return text + (f"\n[… truncated at {max_bytes} bytes]" if len(body) > max_bytes else "")

    return tool(http_get, timeout_s=timeout_s + 1)


def builtin_registry(*, index: str | Path | None = None, http_hosts: list[str] | None = None) -> ToolRegistry:
    """The calculator always; ``search`` when an index is given; ``http_get`` only when hosts are given."""
    reg = ToolRegistry([tool(calculator, timeout_s=5.0)])
    if index is not None:
        reg.register(retrieval_tool(index))
    if http_hosts:
        reg.register(http_get_tool(http_hosts))
    return reg
