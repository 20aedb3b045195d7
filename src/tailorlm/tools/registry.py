"""Tools from typed Python functions or from schema files, and the registry that holds them.

``@tool`` reads what a Python function already says about itself (its name, the first paragraph of its docstring,
its type hints, its defaults and the ``Args:`` section of its docstring) and turns that into the OpenAI function
definition a model sees. Pydantic builds the JSON schema, so ``Literal``, ``Optional``, ``list[...]`` and nested
pydantic models come out the way pydantic documents them; we only strip pydantic's ``title`` noise and inline its
``$defs``, because small models and some chat templates read the schema as text and choke on references.

Schema-only tools (``fn=None``) come from OpenAI tool dicts or BFCL function docs. BFCL writes Python-ish type
names ("dict", "float", "tuple", "any"); ``normalize_schema`` maps them to JSON schema so that one validator
(jsonschema) and one grammar compiler serve both.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, create_model

from tailorlm.errors import ConfigError
from tailorlm.tools.types import Tool

# BFCL (and other loose sources) → JSON schema. Java/JavaScript BFCL categories use their own language's names.
_TYPE_NAMES = {
    "dict": "object", "object": "object", "hashmap": "object", "map": "object",
    "float": "number", "double": "number", "number": "number",
    "int": "integer", "integer": "integer", "long": "integer",
    "str": "string", "string": "string", "char": "string",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "tuple": "array", "array": "array", "arraylist": "array",
    "null": "null", "none": "null",
}  # fmt: skip
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:?\s*$")
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
_GOOGLE_PARAM = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_PARAM = re.compile(r"^(\w+)\s*(?::.*)?$")


# --- schemas --------------------------------------------------------------------------------------------------


def normalize_schema(schema: Any) -> dict[str, Any]:
    """A loose schema (BFCL's ``"dict"``/``"float"``/``"tuple"``/``"any"``, Java's ``"String"``) as valid JSON
    schema, recursively. Unknown type names become "any" rather than an error: a validator that rejects every
    call is worse than one that checks a little less. The input is not changed."""
    if not isinstance(schema, dict):
        return {}
    out = copy.deepcopy(schema)
    t = out.get("type")
    if isinstance(t, str):
        mapped = _TYPE_NAMES.get(t.strip().lower())
        if mapped is None:
            out.pop("type")  # "any", "" or a name we do not know: accept any value
        else:
            out["type"] = mapped
    elif isinstance(t, list):
        names = [_TYPE_NAMES.get(str(x).strip().lower()) for x in t]
        if None in names:
            out.pop("type")
        else:
            out["type"] = list(dict.fromkeys(n for n in names if n))
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {k: normalize_schema(v) for k, v in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = normalize_schema(out[key])
    if isinstance(out.get("items"), list):  # the old tuple form of items
        out["items"] = [normalize_schema(s) for s in out["items"]]
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [normalize_schema(s) for s in out[key]]
    if out.get("type") == "object" and "properties" in out and not isinstance(out.get("required"), list):
        out["required"] = []
    return out


def _clean(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Pydantic's schema without ``title`` keys and with ``$ref``s inlined (a recursive model keeps its ref)."""
    if isinstance(node, list):
        return [_clean(x, defs, seen) for x in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.rsplit("/", 1)[1]
        if name not in seen and name in defs:
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return _clean({**defs[name], **siblings}, defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "properties" and isinstance(value, dict):  # property *names* may be "title": keep them
            out[key] = {k: _clean(v, defs, seen) for k, v in value.items()}
        elif key in ("default", "enum", "const", "examples"):
            out[key] = value  # values, not schemas
        else:
            out[key] = _clean(value, defs, seen)
    return out


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (the first paragraph, on one line) and the per-parameter descriptions of a Google- or
    NumPy-style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    first: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        first.append(line.strip())
    params: dict[str, str] = {}
    i = next((n for n, line in enumerate(lines) if _SECTION.match(line)), None)
    if i is None:
        return " ".join(first), params
    numpy = i + 1 < len(lines) and bool(_NUMPY_RULE.match(lines[i + 1]))
    body = lines[i + 2 if numpy else i + 1 :]
    indent = next((len(x) - len(x.lstrip()) for x in body if x.strip()), 0)  # the first entry's indent
    current: str | None = None
    for n, line in enumerate(body):
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        next_is_rule = n + 1 < len(body) and bool(_NUMPY_RULE.match(body[n + 1]))
        if depth < indent or next_is_rule or (depth == indent and _SECTION.match(line)):
            break  # the next section ("Returns:", "Raises", …)
        if depth == indent:
            m = (_NUMPY_PARAM if numpy else _GOOGLE_PARAM).match(line.strip())
            if m is None:
                break
            current = m.group(1).lstrip("*")
            params[current] = "" if numpy else m.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(first), params


def function_schema(fn: Callable[..., Any]) -> tuple[dict[str, Any], Any]:
    """The OpenAI parameters schema of ``fn`` and the pydantic model that validates (and converts) its
    arguments. ``*args``/``**kwargs`` have no schema, so they are an error."""
    _, docs = parse_docstring(fn.__doc__)
    # String annotations (``from __future__ import annotations``) resolve in the function's module, plus the
    # variables its closure captured; a type known only inside an enclosing function cannot be found.
    cells = zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False) if hasattr(fn, "__code__") else ()
    try:
        hints = typing.get_type_hints(fn, localns={n: c.cell_contents for n, c in cells}, include_extras=True)
    except (NameError, ValueError) as err:  # ValueError: an empty closure cell
        msg = f"tool {fn.__name__}: cannot resolve its type hints ({err}); define the types at module level"
        raise TypeError(msg) from None
    fields: dict[str, Any] = {}
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args/**kwargs cannot be described to a model; name each argument")
        default = ... if p.default is p.empty else p.default
        # Internal field names ``p0, p1, …`` with the real name as alias: a parameter called ``json``, ``copy``
        # or ``model_name`` would otherwise clash with BaseModel's own attributes.
        # A description from the docstring; without one, ``Annotated[..., Field(description=...)]`` keeps its own.
        extra = {"description": docs[p.name]} if docs.get(p.name) else {}
        field = Field(default, alias=p.name, **extra)
        fields[f"p{i}"] = (hints.get(p.name, Any), field)
    model = create_model(f"{fn.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields)
    raw = model.model_json_schema()
    schema = _clean(raw, raw.get("$defs", {}))
    params = {
        "type": "object",
        "properties": schema.get("properties", {}),
        "required": schema.get("required", []),
        "additionalProperties": False,
    }
    return params, model


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 10.0,
) -> Any:
    """``@tool``, ``@tool(name=..., timeout_s=...)`` or ``tool(fn)``: a typed function as a ``Tool``.

    The Tool's ``fn`` validates its keyword arguments with the function's own types before calling it (so a
    nested pydantic model arrives as a model instance, not a dict); the original is ``tool.fn.__wrapped__``.
    """

    def build(f: Callable[..., Any]) -> Tool:
        params, model = function_schema(f)
        names = list(params["properties"])  # the parameters, in order (field i is named ``p{i}``)

        @functools.wraps(f)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = dict(zip(names, args, strict=False)) | kwargs
            checked = model.model_validate(bound)
            return f(**{n: getattr(checked, f"p{i}") for i, n in enumerate(names)})

        summary, _ = parse_docstring(f.__doc__)
        return Tool(name or f.__name__, description or summary, params, call, timeout_s)

    return build(fn) if fn is not None else build


# --- the registry ---------------------------------------------------------------------------------------------


def tool_from_schema(spec: dict[str, Any]) -> Tool:
    """A schema-only Tool from an OpenAI tool dict (``{"type": "function", "function": {...}}``) or a bare
    function doc (``{"name", "description", "parameters"}``, BFCL's shape). Raises ValueError naming the field."""
    if not isinstance(spec, dict):
        raise ValueError(f"expected an object, got {type(spec).__name__}")
    fn = spec.get("function", spec)
    if not isinstance(fn, dict):
        raise ValueError("field 'function': expected an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("field 'name': missing or not a non-empty string")
    desc = fn.get("description", "")
    if not isinstance(desc, str):
        raise ValueError("field 'description': expected a string")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict):
        raise ValueError("field 'parameters': expected a JSON schema object")
    return Tool(name, desc, normalize_schema(params))


class ToolRegistry:
    """Tools by name, in registration order (the order a prompt lists them in)."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, tool_or_fn: Tool | Callable[..., Any]) -> Tool:
        """Add a Tool (or a typed function, through ``tool``). A second tool with the same name replaces the
        first: the registry describes what the model can call now."""
        t = tool_or_fn if isinstance(tool_or_fn, Tool) else tool(tool_or_fn)
        self._tools[t.name] = t
        return t

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` list."""
        return [t.schema() for t in self._tools.values()]

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        """The tools named (unknown names are skipped), in this registry's order."""
        wanted = set(names)
        return ToolRegistry(t for n, t in self._tools.items() if n in wanted)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @classmethod
    def from_schemas(cls, specs: Iterable[dict[str, Any]], source: str = "tools") -> ToolRegistry:
        """Schema-only tools from OpenAI tool dicts or BFCL function docs; a bad entry is a ConfigError that
        names ``source``, the entry's index and the field."""
        reg = cls()
        for i, spec in enumerate(specs):
            try:
                reg.register(tool_from_schema(spec))
            except ValueError as err:
                raise ConfigError(f"{source}[{i}]: {err}") from None
        return reg

    @classmethod
    def from_schema_file(cls, path: str | Path) -> ToolRegistry:
        """Tools from a JSON or YAML file holding a list of tool definitions (or ``{"tools": [...]}``)."""
        from tailorlm.core.config import parse_yaml

        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{p}: cannot read tool schemas: {err}") from None
        if p.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{p}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
        else:
            data = parse_yaml(text, str(p))
        if isinstance(data, dict) and isinstance(data.get("tools"), list):
            data = data["tools"]
        if not isinstance(data, list):
            raise ConfigError(f"{p}: expected a list of tool definitions, got {type(data).__name__}")
        return cls.from_schemas(data, source=str(p))


def agent_registry(system: Any) -> ToolRegistry:
    """The tools an agent System may call: its built-ins and its own ``module:function`` tools, nothing else."""
    import importlib

    from tailorlm.errors import ConfigError
    from tailorlm.tools.builtins import builtin_registry

    spec = system.agent
    index = spec.index or (system.retriever.index if system.retriever else None)
    if "search" in spec.builtins and index is None:
        raise ConfigError("the search tool needs an index", hint="set agent.index, or give the System a retriever")
    if "http_get" in spec.builtins and not spec.http_hosts:
        raise ConfigError("http_get needs agent.http_hosts: the exact hosts it may fetch from")
    full = builtin_registry(
        index=index if "search" in spec.builtins else None,
        http_hosts=spec.http_hosts if "http_get" in spec.builtins else None,
    )
    registry = full.subset([n for n in full.names() if n in spec.builtins])
    for path in spec.python:
        module, _, attr = path.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ConfigError(
                f"agent.python: cannot import {path!r}: {err}", hint="write it as module:function"
            ) from (err)
        registry.register(fn if isinstance(fn, Tool) else tool(fn, timeout_s=spec.timeout_s))
    return registry
