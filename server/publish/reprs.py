"""`argsrepr` and `kwargsrepr` as Celery's `saferepr` renders them, without its cost for
the arguments most tasks get.

`saferepr` streams tokens through generators, a few microseconds an item: the largest
part of building a message from its template. Flat arguments (numbers, booleans, None,
strings) that fit in the size limit come out of it exactly as joined here; anything
else, and anything that might be cut, goes to `saferepr` itself.
"""

from typing import Any

from celery.utils.saferepr import saferepr

_NUMBERS = (int, float, bool)  # saferepr writes a Number with str()


def _flat_item(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        text: str = value
        return "'" + text.replace("'", "\\'") + "'"  # saferepr escapes quotes, nothing else
    if kind in _NUMBERS:
        return str(value)
    if value is None:
        return "None"
    return None


def _fits(text: str, maxsize: int | None) -> bool:
    # saferepr cuts a token as long as what is left of `maxsize`, or longer: a text
    # shorter than `maxsize` is never cut.
    return maxsize is None or len(text) < maxsize


def args_repr(args: list[Any], maxsize: int | None, maxlevels: int) -> str:
    """`saferepr(args, maxsize, maxlevels=maxlevels)`."""
    if type(args) is list and maxlevels > 0:
        items = [_flat_item(value) for value in args]
        if None not in items:
            text = "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
            if _fits(text, maxsize):
                return text
    return saferepr(args, maxsize, maxlevels=maxlevels)


def kwargs_repr(kwargs: dict[str, Any], maxsize: int | None, maxlevels: int) -> str:
    """`saferepr(kwargs, maxsize, maxlevels=maxlevels)`."""
    if type(kwargs) is dict and maxlevels > 0:
        pairs = [(_flat_item(key), _flat_item(value)) for key, value in kwargs.items()]
        if all(type(key) is str for key in kwargs) and all(v is not None for _, v in pairs):
            text = "{" + ", ".join(f"{key}: {value}" for key, value in pairs) + "}"
            if _fits(text, maxsize):
                return text
    return saferepr(kwargs, maxsize, maxlevels=maxlevels)
