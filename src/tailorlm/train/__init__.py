"""Training techniques: each one turns data and a base System into a new System (see docs/fine-tuning.md)."""
