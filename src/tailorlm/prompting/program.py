"""Render a System's prompt program (system message, user template, few-shot turns) into chat messages.

The messages are then rendered by the model's own chat template inside the engine, so the text the model
sees at inference is exactly the text a fine-tune trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2

from tailorlm.core.system import FewShotExample, PromptSpec
from tailorlm.errors import ConfigError
from tailorlm.models.engines.base import Message

# StrictUndefined: a template variable that is not supplied is an error, never a silent empty string.
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@lru_cache(maxsize=64)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render_template(template: str, variables: dict[str, Any], *, what: str = "prompt template") -> str:
    """Render a strict Jinja template; syntax errors and missing variables are ConfigErrors naming ``what``."""
    try:
        return _compile(template).render(**variables)
    except jinja2.TemplateSyntaxError as err:
        raise ConfigError(f"{what} has a syntax error on line {err.lineno}: {err.message}") from err
    except jinja2.UndefinedError as err:
        raise ConfigError(
            f"{what} uses a variable that was not given: {err.message}",
            hint=f"available: {', '.join(sorted(variables))}",
        ) from err


def render_user_turn(template: str | None, input: str, **variables: Any) -> str:
    return input if template is None else render_template(template, {**variables, "input": input})


def render_messages(
    prompt: PromptSpec | None, input: str, demos: Sequence[FewShotExample] | None = None, **variables: Any
) -> list[Message]:
    """[system] + few-shot (user, assistant) pairs + the user turn for ``input``.

    ``demos`` overrides the program's own ``few_shot`` list (per-input selection). A chain-of-thought trigger is
    appended to the real user turn only: the demonstrations show finished answers, as in the CoT papers' few-shot
    exemplars when they include their reasoning in ``output``.
    """
    if prompt is None:
        return [{"role": "user", "content": input}]
    messages: list[Message] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    for example in prompt.few_shot if demos is None else demos:
        messages.append({"role": "user", "content": render_user_turn(prompt.template, example.input, **variables)})
        messages.append({"role": "assistant", "content": example.output})
    user = render_user_turn(prompt.template, input, **variables)
    if prompt.chain_of_thought:
        user = f"{user}\n{prompt.chain_of_thought}"
    messages.append({"role": "user", "content": user})
    return messages
