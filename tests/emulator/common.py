"""Helpers every emulator module uses: the control-route error, the default region, JSON
digging and timestamps.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

DEFAULT_REGION = "us-east-1"
CONTROL_PREFIX = "/_kld/"
LOG = logging.getLogger("kld-emulator")

# --------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------


class ControlError(Exception):
    """A control-route failure answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def as_list(value: Any) -> list[Any]:
    """Policy and record fields may hold one value or a list; always return a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...`` or None as soon as a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from a number, a numeric string or an ISO 8601 string (naive = UTC)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def new_request_id() -> str:
    return str(uuid.uuid4())

def required(spec: dict[str, Any], name: str) -> Any:
    if spec.get(name) in (None, ""):
        raise ControlError(400, f"missing required field {name!r}")
    return spec[name]
