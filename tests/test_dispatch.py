"""Publish retries fitted to a deadline, each try's own duration included (no server needed)."""

from taskgate.server.dispatch import PublishRetries

POLICY = {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 1.0}


def _pauses(
    time_left: float | None, try_seconds: float = 0.0, policy: dict[str, float] = POLICY
) -> list[float]:
    """The pauses taken before each retry when every try fails after `try_seconds`."""
    retries = PublishRetries.of(policy)
    pauses: list[float] = []
    if time_left is not None:
        time_left -= try_seconds
    while (pause := retries.pause_before(len(pauses) + 1, time_left, try_seconds)) is not None:
        pauses.append(pause)
        if time_left is not None:
            time_left -= pause + try_seconds
    return pauses


def test_without_a_deadline_the_policy_stands() -> None:
    assert _pauses(None) == [0.0, 0.2, 0.4]
    assert _pauses(None, try_seconds=5.0) == [0.0, 0.2, 0.4]


def test_tries_that_fail_at_once_are_retried_while_the_pauses_fit() -> None:
    assert _pauses(10.0) == [0.0, 0.2, 0.4]
    assert _pauses(0.5) == [0.0, 0.2]  # the third pause (0.4 s) ends past the 0.5 s left


def test_a_try_that_timed_out_is_retried_only_if_another_as_long_fits() -> None:
    # Tries that each hang for a 5 s socket timeout: the old fitting counted only the
    # pauses and kept one publish going for about 25 s whatever the deadline.
    assert _pauses(12.0, try_seconds=5.0) == [0.0]  # 5 + 0 + 5 = 10 s; a third try ends at 15.2
    assert _pauses(8.0, try_seconds=5.0) == []


def test_pauses_grow_by_the_step_up_to_the_maximum() -> None:
    slow = {"max_retries": 4, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
    assert _pauses(None, policy=slow) == [0.5, 1.0, 1.0, 1.0]
