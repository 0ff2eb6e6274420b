"""JSON text in and out: arguments are validated here before any worker sees them."""

import json
import math
from typing import Any

from taskgate.server.errors import InvalidArgument


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are Python extensions, not JSON: other languages cannot read them.
    raise ValueError(f"{name} is not valid JSON")


MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value`, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _finite(text: str) -> float:
    # 1e999 is valid JSON but becomes infinity, which other languages cannot read back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a double")
    return value


# One decoder for every call: json.loads with hooks builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)


def _loads(field: str, text: str) -> Any:
    size = len(text.encode())
    if size > MAX_JSON_BYTES:
        raise InvalidArgument(field, f"is {size} bytes; at most {MAX_JSON_BYTES} are accepted")
    too_deep = f"JSON nests deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = _DECODER.decode(text)
    except ValueError as exc:
        raise InvalidArgument(field, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument(field, too_deep) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidArgument(field, too_deep)
    return value


def parse_args(text: str, field: str = "args_json") -> list[Any]:
    """Parse positional arguments: a JSON array, where empty text means `[]`."""
    if not text.strip():
        return []
    value = _loads(field, text)
    if not isinstance(value, list):
        raise InvalidArgument(field, f"must be a JSON array, got {type(value).__name__}")
    return value


def parse_kwargs(text: str, field: str = "kwargs_json") -> dict[str, Any]:
    """Parse keyword arguments: a JSON object, where empty text means `{}`."""
    if not text.strip():
        return {}
    value = _loads(field, text)
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object, got {type(value).__name__}")
    return value


def dumps(value: Any) -> str:
    """Encode a task's result or meta as compact JSON text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
