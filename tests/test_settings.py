"""Reading the gateway's environment: the forms accepted and the one-line refusals."""

import pytest

from taskgate.server.config import GatewaySettings
from taskgate.server.env import SettingsError, log_level


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "0.0.0.0:50051", "[::]:50051", "gw:8080"])
def test_host_and_port_are_accepted(listen: str) -> None:
    assert GatewaySettings.from_env({"TASKGATE_LISTEN": listen}).listen == listen


@pytest.mark.parametrize("listen", ["localhost", ":50051", "127.0.0.1:", "h:port", "h:70000"])
def test_an_address_without_a_usable_port_is_refused(listen: str) -> None:
    with pytest.raises(SettingsError, match=r"TASKGATE_LISTEN=.*expected host:port"):
        GatewaySettings.from_env({"TASKGATE_LISTEN": listen})


@pytest.mark.parametrize(("raw", "seconds"), [("2.5", 2.5), ("300", 300.0), ("1e2", 100.0)])
def test_durations_are_plain_seconds(raw: str, seconds: float) -> None:
    assert GatewaySettings.from_env({"TASKGATE_MAX_WAIT": raw}).max_wait_seconds == seconds


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "-1", "0", "30s", "PT30S"])
def test_a_duration_that_is_not_a_finite_positive_number_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match=rf"TASKGATE_MAX_WAIT='{raw}'.*expected a positive"):
        GatewaySettings.from_env({"TASKGATE_MAX_WAIT": raw})


def test_log_levels_are_checked_in_any_case() -> None:
    assert log_level({"TASKGATE_LOG_LEVEL": "debug"}) == "DEBUG"
    assert log_level({}) == "INFO"
    with pytest.raises(SettingsError, match="TASKGATE_LOG_LEVEL='verbose'; expected one of"):
        log_level({"TASKGATE_LOG_LEVEL": "verbose"})
