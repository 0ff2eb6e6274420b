"""The task catalog: which task names callers may submit. Closed by default."""

from fnmatch import fnmatchcase

from server.errors import NotFound

# Celery's internal tasks (chord_unlock, backend_cleanup, ...) are never a caller's to run.
_NEVER = "celery.*"


class Catalog:
    """Task-name patterns (shell style, `tasks.*`) that callers may submit."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns

    def allows(self, task: str) -> bool:
        """True when `task` matches a pattern and is not one of Celery's own."""
        if fnmatchcase(task, _NEVER):
            return False
        return any(fnmatchcase(task, pattern) for pattern in self.patterns)

    def exact_names(self) -> list[str]:
        """The patterns that name one task each (no wildcards), and may be submitted."""
        return [p for p in self.patterns if not any(c in p for c in "*?[") and self.allows(p)]

    def check(self, task: str) -> None:
        """Raise NotFound, exactly as for a task that does not exist, unless allowed."""
        if not self.allows(task):
            raise NotFound(f"no task named {task!r}")
