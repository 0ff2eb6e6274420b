"""Task arguments on the command line: each one a JSON literal, so `2` is a number
and a string needs its quotes (`'"text"'`)."""

import json
from collections.abc import Sequence
from typing import Any

import click


def json_literal(text: str, what: str) -> Any:
    """`text` decoded as JSON, or a usage error naming it."""
    try:
        return json.loads(text)
    except ValueError:
        hint = f" (a string needs quotes: '\"{text}\"')"
        if text.startswith("-"):
            hint = " nor an option of this command"
        raise click.UsageError(f"{what} {text!r} is not a JSON literal{hint}") from None


def task_args(texts: Sequence[str]) -> list[Any]:
    """The positional arguments, each decoded from JSON."""
    return [json_literal(text, "argument") for text in texts]


def task_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments from NAME=VALUE items, each VALUE decoded from JSON."""
    kwargs = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise click.UsageError(f"--kwarg {item!r} is not NAME=VALUE")
        kwargs[name] = json_literal(value, f"--kwarg {name}: value")
    return kwargs
