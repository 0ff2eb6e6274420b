"""The API reference (`docs/api.md`), generated from the contract's comments.

`make proto` writes it with the stubs (`taskgate/codegen.py`); `tests/test_codegen.py`
fails when the committed file is stale, and when an element of the contract has no
comment (`undocumented`).
"""

from taskgate.apidoc.comments import undocumented
from taskgate.apidoc.markdown import render

__all__ = ["render", "undocumented"]
