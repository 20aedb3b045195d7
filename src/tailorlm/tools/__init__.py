"""Tool use: tools from Python functions, calling through the chat template, constrained arguments, execution and
agents (docs/tools.md)."""
