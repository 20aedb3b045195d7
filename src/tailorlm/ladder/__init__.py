"""The ladder: rungs from zero-shot to RAG + LoRA on one task, each measured for quality and cost."""
