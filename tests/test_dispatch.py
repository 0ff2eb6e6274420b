"""Publish retries fitted to a deadline (no server needed)."""

from server.dispatch import fit_retries

POLICY = {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 1.0}


def test_without_a_deadline_the_policy_stands() -> None:
    assert fit_retries(POLICY, None) == POLICY


def test_only_the_pauses_that_end_before_the_deadline_are_kept() -> None:
    # Pauses 0.0, 0.2, 0.4 end at 0.0, 0.2 and 0.6 seconds.
    assert fit_retries(POLICY, 10)["max_retries"] == 3
    assert fit_retries(POLICY, 0.5)["max_retries"] == 2
    assert fit_retries(POLICY, 0.1)["max_retries"] == 1
    slow = {**POLICY, "interval_start": 1.0}
    assert fit_retries(slow, 0.3)["max_retries"] == 0
