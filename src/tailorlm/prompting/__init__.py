"""Prompt programs: how a System turns one input into the messages its model sees."""

from tailorlm.prompting.program import render_messages

__all__ = ["render_messages"]
