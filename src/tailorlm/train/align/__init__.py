"""Alignment: preference losses, reward models, DPO and its family, online RL and constitutional AI (issue #18).

The trainers are TRL's; what lives here is the math in small tested functions (``losses``, ``rl_math``), the
recipes that set each method's defaults, and the scorers that other parts (best-of-N, pairs, probes) call.
"""
