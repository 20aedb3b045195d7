"""Structured JSON logs: one object per line, each request's lines tied by ``request_id``.

Prompt and answer text, and API keys, never reach a log line unless ``log_prompts`` is on; keys never at all (only
their public id).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str = "info") -> None:
    """Route the server's and uvicorn's logs through the JSON formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("tailorlm.serve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # uvicorn's access log would repeat each request without our fields; ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True


def log_request(logger: logging.Logger, **fields: Any) -> None:
    logger.info("request", extra={"fields": fields})
