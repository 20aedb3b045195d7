"""Typed configs: YAML file → dotted command-line overrides → validated pydantic model.

Every config in tailorlm is a ``StrictModel``: an unknown key is an error, never silently ignored, because a
typo such as ``lrr: 1e-4`` that trains with the default learning rate wastes hours and lies in the report.
Errors name where the bad value came from (file or command line), the dotted key path, and for unknown keys
the closest valid key at that nesting level.

    cfg = load_config(SFTConfig, "recipe.yaml", ["train.lr=1e-4", "data.paths=[a.jsonl,b.jsonl]"])
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from tailorlm.core.safe_text import printable
from tailorlm.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

COMMAND_LINE = "command line"


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- YAML --------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-4``); everyone writes ``lr: 1e-4`` and would get
    the *string* "1e-4", which only works by accident where pydantic coerces it.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text; a syntax error becomes a ConfigError located as ``source:line:column``."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = err.problem or err.context or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {printable(problem)}") from None
    except yaml.YAMLError as err:  # e.g. a control character the YAML spec forbids; PyYAML's text spans lines
        line = text.count("\n", 0, err.position) + 1 if isinstance(err, yaml.reader.ReaderError) else None
        where = f"{source}:{line}" if line else source
        reason = err.reason if isinstance(err, yaml.reader.ReaderError) else " ".join(str(err).split())
        raise ConfigError(f"{where}: YAML error: {printable(reason)}") from None
    except RecursionError:  # ``[[[[...``: nested deeper than the parser's recursion allows
        raise ConfigError(f"{source}: YAML error: nested too deeply") from None
    except ValueError as err:  # an integer of more than 4,300 digits (CPython's int-parsing guard)
        raise ConfigError(f"{source}: YAML error: {str(err).split(';')[0]}") from None


def _override_source(text: str) -> str:
    """How errors name an override: its text, with control characters shown as escapes so it stays one line."""
    return f"{COMMAND_LINE} override '{printable(text)}'"


# --- walking annotations ------------------------------------------------------------------------------------


def _unwrap(ann: Any) -> Any:
    """Strip ``Annotated[...]`` so that we see the real type."""
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    return ann


def _is_union(ann: Any) -> bool:
    return get_origin(ann) in (Union, types.UnionType)


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


_SEQUENCES = (list, tuple, set, frozenset, Sequence)
_MAPPINGS = (dict, Mapping)


def _nested(ann: Any, value: Any, suffix: str = "") -> Iterator[tuple[str, type[BaseModel], dict]]:
    """Yield ``(path suffix, model class, sub-dict)`` for every nested model value inside ``value``.

    Looks through Optional/Union, ``list[Model]`` and ``dict[str, Model]``, which covers how configs nest.
    """
    ann = _unwrap(ann)
    if _is_union(ann):
        for arg in get_args(ann):
            found = list(_nested(arg, value, suffix))
            if found:
                yield from found
                return
        return
    if _is_model(ann) and isinstance(value, dict):
        yield suffix, ann, value
        return
    origin, args = get_origin(ann), get_args(ann)
    if origin in _SEQUENCES and args and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nested(args[0], item, f"{suffix}[{i}]")
    elif origin in _MAPPINGS and len(args) == 2 and isinstance(value, dict):
        for key, item in value.items():
            yield from _nested(args[1], item, f"{suffix}.{key}")


def _accepted_keys(cls: type[BaseModel]) -> dict[str, str]:
    """Map every key a model accepts (field names and string aliases) to the field name."""
    keys: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        keys[name] = name
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                keys[alias] = name
    return keys


def _unknown_keys(cls: type[BaseModel], data: dict, prefix: str = "") -> list[tuple[str, str, list[str]]]:
    """Every unknown key under ``data`` as ``(dotted path, key, valid keys at that level)``."""
    found: list[tuple[str, str, list[str]]] = []
    accepted = _accepted_keys(cls)
    forbid = cls.model_config.get("extra") == "forbid"
    for key, value in data.items():
        field_name = accepted.get(str(key))
        if field_name is None:
            # Open models (extra="allow"/"ignore") are deliberate placeholders: extra keys are theirs to keep.
            if forbid:
                found.append((f"{prefix}{key}", str(key), list(cls.model_fields)))
            continue
        for suffix, sub_cls, sub_value in _nested(cls.model_fields[field_name].annotation, value):
            found.extend(_unknown_keys(sub_cls, sub_value, f"{prefix}{key}{suffix}."))
    return found


def _suggest(key: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _raise_unknown(unknown: list[tuple[str, str, list[str]]], source: str) -> None:
    lines = []
    for path, key, choices in unknown:
        guess = _suggest(key, choices)
        lines.append(printable(f"{source}: {path}: unknown key" + (f"; did you mean '{guess}'?" if guess else "")))
    _, _, choices = unknown[0]
    parent = unknown[0][0].rpartition(".")[0]
    where = f"under '{parent}'" if parent else "at the top level"
    raise ConfigError("\n".join(lines), hint=printable(f"valid keys {where}: {', '.join(choices) or '(none)'}"))


# --- overrides ----------------------------------------------------------------------------------------------


def _split_key(key: str) -> list[str]:
    # `a.b[0].c` and `a.b.0.c` both address the first item of list `b`.
    return [part for part in re.split(r"\.|\[(\d+)\]", key) if part]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into key parts and a YAML-parsed value (``1e-4`` → float, ``null`` → None)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"{COMMAND_LINE}: override '{printable(text)}' must look like key=value",
            hint="for example train.lr=1e-4 or data.paths=[a.jsonl,b.jsonl]",
        )
    parts = _split_key(key)
    if not parts or any(not p.strip() for p in parts):
        raise ConfigError(f"{COMMAND_LINE}: override '{printable(text)}' has an empty key segment")
    # `key=` means the empty string; anything else is a YAML scalar or flow collection.
    value = "" if raw == "" else parse_yaml(raw, source=_override_source(text))
    return parts, value


def _set_path(data: dict, parts: list[str], value: Any, text: str) -> None:
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:i])
                raise ConfigError(printable(f"{COMMAND_LINE}: override '{text}': no list item '{part}' at '{where}'"))
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), dict | list):
                    if parts[i + 1].isdigit():  # `items.0.x=` needs an existing list; we won't invent one
                        where = ".".join(parts[: i + 1])
                        raise ConfigError(
                            printable(f"{COMMAND_LINE}: override '{text}': '{where}' is not a list here")
                        )
                    node[part] = {}
                node = node[part]
        else:
            where = ".".join(parts[:i])
            raise ConfigError(printable(f"{COMMAND_LINE}: override '{text}': '{where}' is not a mapping"))


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        both_dicts = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = _deep_merge(out[key], value) if both_dicts else value
    return out


# --- validation errors --------------------------------------------------------------------------------------


def _type_name(ann: Any) -> str:
    ann = _unwrap(ann)
    if ann is type(None):
        return "null"
    if _is_union(ann):
        return " | ".join(_type_name(a) for a in get_args(ann))
    if get_origin(ann) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(ann))
    origin, args = get_origin(ann), get_args(ann)
    if origin is not None and args:
        name = getattr(origin, "__name__", str(origin).replace("typing.", ""))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def _walk_loc(cls: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], Any]:
    """Turn a pydantic error ``loc`` into user-facing key parts and the annotation found there.

    pydantic inserts union member tags (``'int'``, ``'function-after[...]'``) into ``loc``; those are not keys
    the user wrote, so we drop whatever does not match the structure.
    """
    parts: list[str] = []
    ann: Any = cls
    for pos, item in enumerate(loc):
        ann = _unwrap(ann)
        if _is_union(ann):
            members = [a for a in get_args(ann) if _unwrap(a) is not type(None)]
            tagged = [a for a in members if _type_name(a) == item or getattr(_unwrap(a), "__name__", None) == item]
            if tagged:
                # A trailing tag means "this member rejected the value": report the whole union as expected.
                if pos < len(loc) - 1:
                    ann = tagged[0]
                continue
            ann = members[0] if len(members) == 1 else ann
            ann = _unwrap(ann)
        if _is_model(ann) and isinstance(item, str) and item in ann.model_fields:
            parts.append(item)
            ann = ann.model_fields[item].annotation
        elif get_origin(ann) in _SEQUENCES and isinstance(item, int):
            parts.append(str(item))
            ann = get_args(ann)[0] if get_args(ann) else Any
        elif get_origin(ann) in _MAPPINGS and len(get_args(ann)) == 2:
            parts.append(str(item))
            ann = get_args(ann)[1]
        elif _is_union(ann):
            continue  # a union tag we could not match to a member
        else:
            parts.append(str(item))
            ann = Any
    return parts, ann


def _format_path(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(top level)"


def _validation_error(
    cls: type[BaseModel], err: ValidationError, file_source: str, overrides: dict[tuple[str, ...], str]
) -> ConfigError:
    lines: dict[str, str] = {}
    for e in err.errors():
        parts, ann = _walk_loc(cls, tuple(e["loc"]))
        source = file_source
        for key_parts, text in overrides.items():
            n = min(len(parts), len(key_parts))
            if n and tuple(parts[:n]) == key_parts[:n]:
                source = _override_source(text)
        path = _format_path(parts)
        if path in lines:
            # pydantic reports one error per union member; one line saying no member fits is clearer.
            got = e.get("input")
            lines[path] = f"{source}: {path}: invalid value (expected {_type_name(ann)}, got {got!r})"
        elif e["type"] == "missing":
            lines[path] = f"{source}: {path}: required key is missing (expected {_type_name(ann)})"
        elif e["type"] == "extra_forbidden":
            lines[path] = f"{source}: {path}: unknown key"
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, dict | list) or len(repr(got)) < 60 else type(got).__name__
            lines[path] = f"{source}: {path}: {e['msg']} (expected {_type_name(ann)}, got {shown})"
    # One line per problem: keys and values come from the user, so their control characters are escaped.
    return ConfigError("\n".join(printable(line) for line in lines.values()))


# --- public API ---------------------------------------------------------------------------------------------


def load_config(
    cls: type[M],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    base: dict | None = None,
    context: dict[str, Any] | None = None,
) -> M:
    """Build a ``cls`` from ``base`` defaults, then the YAML file at ``path``, then dotted ``overrides``.

    ``context`` is handed to pydantic validators (``System`` uses it to resolve paths relative to its file).
    Raises ConfigError naming the file or the command line, the dotted key, and a suggestion for unknown keys.
    """
    data: dict = copy.deepcopy(base) if base else {}
    if base and (unknown := _unknown_keys(cls, data)):
        _raise_unknown(unknown, "base config")
    source = str(path) if path is not None else ("base config" if base else COMMAND_LINE)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found", hint="check the path, relative to the current directory")
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            raise ConfigError(f"{p}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x})") from None
        loaded = parse_yaml(text, source=str(p))
        if loaded is None:
            loaded = {}  # an empty file means "all defaults"
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of keys at the top level, got {type(loaded).__name__}")
        if unknown := _unknown_keys(cls, loaded):
            _raise_unknown(unknown, str(p))
        data = _deep_merge(data, loaded)

    applied: dict[tuple[str, ...], str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        _set_path(data, parts, value, text)
        # Anything unknown now was introduced by this override: everything before it was already checked.
        if unknown := _unknown_keys(cls, data):
            _raise_unknown(unknown, _override_source(text))
        applied[tuple(parts)] = text

    try:
        return cls.model_validate(data, context=context)
    except ValidationError as err:
        raise _validation_error(cls, err, source, applied) from None


def dump_config(config: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-safe dict snapshot of a config (paths, datetimes and enums become strings)."""
    if config is None:
        return {}
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return json.loads(json.dumps(dict(config), default=str))
