"""Retrieval-augmented generation: ingest → chunk → embed → store → retrieve → answer with citations.

See docs/rag.md for the design and the measured choices (hybrid fusion, sentence max-sim, int8 ONNX embedding).
"""
