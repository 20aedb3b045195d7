import pytest

from tailorlm.errors import ConfigError
from tailorlm.prompting.program import render_template, render_user_turn

pytestmark = pytest.mark.unit


def test_missing_variable_names_the_template_and_lists_what_exists() -> None:
    with pytest.raises(ConfigError, match="task input_template uses a variable") as info:
        render_template("{{ question }}", {"input": "x"}, what="task input_template")
    assert "available: input" in str(info.value)


def test_syntax_error_reports_the_line() -> None:
    with pytest.raises(ConfigError, match="syntax error on line 2"):
        render_template("ok\n{{ broken", {})


def test_user_turn_without_template_is_the_input() -> None:
    assert render_user_turn(None, "q") == "q"
    assert render_user_turn("Q: {{ input }}!", "q") == "Q: q!"
