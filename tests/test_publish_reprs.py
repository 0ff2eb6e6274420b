"""`argsrepr` and `kwargsrepr` are exactly what Celery's `saferepr` writes, for any JSON."""

from typing import Any

from celery.utils.saferepr import saferepr
from hypothesis import given, settings
from hypothesis import strategies as st

from taskgate.server.publish.reprs import args_repr, kwargs_repr

# Quotes, backslashes, line breaks, NUL and non-ASCII: what saferepr escapes and what not.
_TEXT = st.text(st.sampled_from("ab 'x\"\\\n\x00é\u2028"), max_size=40) | st.text(max_size=1100)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_SIZES = st.sampled_from([None, 1024, 100, 10, 3, 1])
_LEVELS = st.sampled_from([3, 2, 1, 0])


@settings(max_examples=600, deadline=None)
@given(st.lists(_JSON, max_size=6), _SIZES, _LEVELS)
def test_args_are_rendered_as_saferepr_renders_them(
    args: list[Any], maxsize: int | None, maxlevels: int
) -> None:
    assert args_repr(args, maxsize, maxlevels) == saferepr(args, maxsize, maxlevels=maxlevels)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(_TEXT, _JSON, max_size=5), _SIZES, _LEVELS)
def test_kwargs_are_rendered_as_saferepr_renders_them(
    kwargs: dict[str, Any], maxsize: int | None, maxlevels: int
) -> None:
    assert kwargs_repr(kwargs, maxsize, maxlevels) == saferepr(kwargs, maxsize, maxlevels=maxlevels)


def test_flat_arguments_within_the_limit_are_joined_and_long_ones_cut_by_saferepr() -> None:
    assert args_repr([1, 2.5, True, None, "it's"], 1024, 3) == "[1, 2.5, True, None, 'it\\'s']"
    assert kwargs_repr({"x": 1, "y": "a\\b"}, 1024, 3) == "{'x': 1, 'y': 'a\\b'}"
    long = ["y" * 2000]
    assert args_repr(long, 1024, 3) == saferepr(long, 1024, maxlevels=3)
    assert len(args_repr(long, 1024, 3)) < 1100
