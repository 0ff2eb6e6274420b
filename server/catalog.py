"""The task catalog: which task names callers may submit. Closed by default."""

import logging
from collections.abc import Callable, Collection, Iterable
from fnmatch import fnmatchcase

from taskgate.server.errors import NotFound, Unavailable

logger = logging.getLogger(__name__)

# Celery's internal tasks (chord_unlock, backend_cleanup, ...) are never a caller's to run.
_NEVER = "celery.*"
_NAMES_KEPT = 4096  # task names whose decision is kept: a caller may send any names

ServedNames = Callable[[], Collection[str] | None]
"""The task names live workers serve now; None before any worker has answered."""


class Catalog:
    """Task-name patterns (shell style, `tasks.*`) that callers may submit.

    With `served` (TASKGATE_REQUIRE_REGISTERED), a name must also be one that a
    live worker serves: otherwise it would be queued and fail NotRegistered.
    """

    def __init__(self, patterns: tuple[str, ...], served: ServedNames | None = None) -> None:
        self.patterns = patterns
        self._served = served
        self._allowed: dict[str, bool] = {}  # by task name: the patterns never change

    def allows(self, task: str) -> bool:
        """True when `task` matches a pattern and is not one of Celery's own."""
        allowed = self._allowed.get(task)
        if allowed is None:
            allowed = not fnmatchcase(task, _NEVER) and any(
                fnmatchcase(task, pattern) for pattern in self.patterns
            )
            if len(self._allowed) < _NAMES_KEPT:
                self._allowed[task] = allowed
        return allowed

    def exact_names(self) -> list[str]:
        """The patterns that name one task each (no wildcards), and may be submitted."""
        return [p for p in self.patterns if not any(c in p for c in "*?[") and self.allows(p)]

    def check(self, task: str) -> None:
        """Raise NotFound, exactly as for a task that does not exist, unless allowed.

        A name outside the catalog and one no live worker serves answer the same,
        so that a caller cannot map the catalog by probing.
        """
        if self._served is None:
            if not self.allows(task):
                raise NotFound(f"no task named {task!r}")
            return
        served = self._served()
        if served is None:
            raise Unavailable(
                "no worker has reported its tasks yet (TASKGATE_REQUIRE_REGISTERED); "
                "try again shortly"
            )
        if not self.allows(task) or task not in served:
            raise NotFound(f"no task named {task!r} that a live worker serves")

    def unmatched(self, served: Iterable[str]) -> list[str]:
        """The patterns that match none of the `served` task names."""
        names = [name for name in served if self.allows(name)]
        return [p for p in self.patterns if not any(fnmatchcase(n, p) for n in names)]

    def warn_unmatched(self, served: Iterable[str]) -> None:
        """Log each pattern that matches no served task: a typo serves nobody, silently."""
        for pattern in self.unmatched(served):
            hint = "; patterns are separated by commas" if any(c in pattern for c in ";| ") else ""
            logger.warning(
                "TASKGATE_TASKS pattern %r matches no task that a live worker serves%s",
                pattern,
                hint,
            )
