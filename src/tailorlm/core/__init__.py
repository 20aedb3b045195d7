"""Core nouns: config loading, runs and systems."""
