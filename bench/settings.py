"""How big a benchmark run is: one frozen dataclass, with a full and a quick preset."""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BenchSettings:
    """The sizes and limits of one run; every front end gets the same."""

    sequential_calls: int = 300
    """Calls timed one after another, after the warm-up, per front end."""

    warmup_calls: int = 30
    """Untimed calls per front end before its first timed phase (still checked)."""

    throughput_tasks: int = 1000
    """Tasks per throughput phase, per front end and per concurrency."""

    concurrencies: tuple[int, ...] = (16, 64)
    """Callers (tasks in flight) in the throughput phases."""

    rounds: int = 3
    """Each phase is split into this many rounds, and the front ends take turns in
    every round, so a burst of load from elsewhere on a shared machine hits them alike."""

    worker_concurrency: int = 2
    """Prefork processes of the one Celery worker that every front end shares."""

    wait_seconds: float = 10.0
    """How long one call waits for a result before it waits again (at most 3 times)."""

    phase_seconds: float = 180.0
    """A round of a phase starts no new call after this long; skipped calls are reported."""

    idle_concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    """Calls in flight in the Submit-alone phases, into a queue no worker consumes."""

    idle_tasks: int = 6000
    """Submissions per Submit-alone phase, per front end and per concurrency."""

    batch_sizes: tuple[int, ...] = (100, 1000)
    """Items per SubmitBatch call; one call in flight at a time."""

    batch_tasks: int = 21_000
    """Items submitted per batch size (whole batches in each of 3 rounds)."""

    status_calls: int = 6000
    """GetStatus calls, and the ceiling's, at 64 in flight."""

    concurrent_waits: int = 5000
    """GetResult calls waiting at once on tasks that never run during the phase."""

    concurrent_wait_seconds: int = 10
    """How long each of those waits; every one must answer not ready within it."""

    @classmethod
    def quick(cls) -> "BenchSettings":
        """A smoke-test run: a few calls per phase, one small concurrency."""
        return cls(
            sequential_calls=20, warmup_calls=5, throughput_tasks=48, concurrencies=(8,), rounds=1,
            idle_concurrencies=(1, 64), idle_tasks=128, batch_tasks=1000, status_calls=256,
            concurrent_waits=1000, concurrent_wait_seconds=3,
        )  # fmt: skip

    @classmethod
    def submit_only(cls) -> "BenchSettings":
        """`--submit-only`: Submit at 64 in flight and SubmitBatch of 1000, nothing else."""
        return cls(idle_concurrencies=(64,), idle_tasks=9000, batch_sizes=(1000,))

    def split(self, count: int) -> list[int]:
        """`count` calls shared out over the rounds as evenly as they go."""
        share, extra = divmod(count, self.rounds)
        return [share + (1 if turn < extra else 0) for turn in range(self.rounds)]

    def with_worker_concurrency(self, concurrency: int | None) -> "BenchSettings":
        """These settings with another worker concurrency, when one is given."""
        return self if concurrency is None else replace(self, worker_concurrency=concurrency)
