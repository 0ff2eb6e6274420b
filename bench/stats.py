"""What a phase measured: correct calls with their times, and everything that went wrong."""

import statistics
from dataclasses import dataclass, field

MAX_ERROR_SAMPLES = 3


@dataclass(frozen=True)
class Percentiles:
    """Median, 90th and 99th percentile of a sample, in milliseconds."""

    median_ms: float
    p90_ms: float
    p99_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> "Percentiles | None":
        """The percentiles of `seconds`; None for an empty sample."""
        if not seconds:
            return None
        if len(seconds) == 1:
            only = seconds[0] * 1000
            return cls(only, only, only)
        cuts = statistics.quantiles(seconds, n=100, method="inclusive")
        return cls(statistics.median(seconds) * 1000, cuts[89] * 1000, cuts[98] * 1000)


@dataclass
class Tally:
    """The calls of one phase of one front end; only correct answers are timed."""

    round_trips: list[float] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)
    wrong: int = 0
    errors: int = 0
    skipped: int = 0
    elapsed: float = 0.0
    error_samples: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each process used during the phase (see `bench.cpu`)."""

    @property
    def correct(self) -> int:
        """How many calls returned the right sum."""
        return len(self.round_trips)

    def record(self, expected: int, value: object, round_trip: float, submit: float | None) -> None:
        """Keep the times of a right answer; count a wrong one and drop its times."""
        if type(value) is int and value == expected:
            self.record_right(round_trip)
            if submit is not None:
                self.submits.append(submit)
        else:
            self.record_wrong(f"expected {expected}, got {value!r}")

    def record_right(self, seconds: float) -> None:
        """Keep the time of a call whose answer was checked and right."""
        self.round_trips.append(seconds)

    def record_wrong(self, what: str) -> None:
        """Count a call that answered, but not what it must; `what` says how."""
        self.wrong += 1
        self._sample(what)

    def fail(self, error: BaseException) -> None:
        """Count a call that raised instead of answering."""
        self.errors += 1
        self._sample(f"{type(error).__name__}: {error}")

    def _sample(self, text: str) -> None:
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(text[:300])

    def merge(self, other: "Tally") -> None:
        """Add another round of the same phase to this one."""
        self.round_trips += other.round_trips
        self.submits += other.submits
        self.wrong += other.wrong
        self.errors += other.errors
        self.skipped += other.skipped
        self.elapsed += other.elapsed
        room = MAX_ERROR_SAMPLES - len(self.error_samples)
        self.error_samples += other.error_samples[:room]
        for name, seconds in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + seconds

    @property
    def clean(self) -> bool:
        """True when every call ran and returned the right sum."""
        return not (self.wrong or self.errors or self.skipped)

    def cpu_ms_per_task(self) -> dict[str, float]:
        """CPU milliseconds per call that ran, by process, with their sum as "total"."""
        calls = self.correct + self.wrong + self.errors
        if not calls or not self.cpu:
            return {}
        per_task = {name: seconds * 1000 / calls for name, seconds in self.cpu.items()}
        return {**per_task, "total": sum(per_task.values())}

    @property
    def tasks_per_second(self) -> float | None:
        """Correct answers per second of wall time; None when nothing was timed."""
        return self.correct / self.elapsed if self.elapsed > 0 and self.correct else None
