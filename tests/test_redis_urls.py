"""Sentinel URLs read as kombu and Celery read them, and refused in one line when malformed."""

import sys
from typing import Any

import pytest

from taskgate.server.dispatch import create_gateway_app
from taskgate.server.publish.broker import same_redis
from taskgate.server.publish.events import broker_db
from taskgate.server.publish.publisher import own_path_broker_url
from taskgate.server.redis_urls import SentinelSet, check_urls, parse_sentinel_url
from taskgate.worker.config import CelerySettings
from taskgate.worker.factory import ConfigurationError, sanitized_url
from tests.test_startup_errors import _run, assert_one_line_error

MASTER = {"master_name": "mymaster"}
URL = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2;sentinel://10.0.0.3/2"


def test_every_sentinel_is_asked_and_the_first_url_gives_password_and_database() -> None:
    options: dict[str, Any] = {**MASTER, "sentinel_kwargs": {"password": "sentinels"}}
    assert parse_sentinel_url(URL, options, "broker_url") == SentinelSet(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)),
        master_name="mymaster",
        db=2,
        password="s3cret",
        sentinel_kwargs={"password": "sentinels"},
    )


MALFORMED = {
    "no host": ("sentinel://", MASTER, "is not a sentinel address"),
    "a port that is not one": ("sentinel://a:26x79", MASTER, "is not a sentinel address"),
    "a Redis URL in the list": ("sentinel://a;redis://b", MASTER, "'redis://b' is not a"),
    "a database that is not a number": ("sentinel://a/x", MASTER, "database 'x'"),
    "no master_name": ("sentinel://a;sentinel://b", {}, "'master_name' in broker_transport"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_sentinel_url_is_one_line_naming_the_setting(case: str) -> None:
    url, options, expected = MALFORMED[case]
    with pytest.raises(ConfigurationError) as raised:
        parse_sentinel_url(url, options, "broker_url", "broker_transport_options")
    assert expected in str(raised.value)
    assert str(raised.value).startswith("broker_url=")
    assert "\n" not in str(raised.value)


def test_passwords_are_masked_in_every_part_of_a_list() -> None:
    assert sanitized_url(URL.replace("10.0.0.2", ":two@10.0.0.2")).count("**") == 2
    assert "s3cret" not in sanitized_url(URL)


def test_one_sentinel_set_is_one_database_whatever_the_order_of_its_sentinels() -> None:
    reordered = ";".join(reversed(URL.split(";")))
    assert same_redis(URL, reordered, MASTER, MASTER)
    assert not same_redis(URL, URL.replace("/2", "/3"), MASTER, MASTER)
    assert not same_redis(URL, URL, MASTER, {"master_name": "other"})
    assert not same_redis(URL, "redis://10.0.0.1:6379/2", MASTER, {})


def test_the_gateway_publishes_itself_to_a_sentinel_broker() -> None:
    app = create_gateway_app(CelerySettings(broker_url=URL, result_backend=URL))
    app.conf.broker_transport_options = MASTER
    app.conf.result_backend_transport_options = MASTER
    check_urls(app.conf)
    assert own_path_broker_url(app) == URL
    assert broker_db(URL) == 2


def test_a_failover_list_of_plain_redis_urls_stays_with_send_task() -> None:
    app = create_gateway_app(CelerySettings(broker_url="redis://a;redis://b"))
    assert own_path_broker_url(app) is None


@pytest.mark.parametrize("variable", ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_a_sentinel_url_without_its_master_name_stops_the_gateway(
    stack_env: dict[str, str], variable: str
) -> None:
    url = "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2"
    env = {**stack_env, "TASKGATE_LISTEN": "127.0.0.1:0", variable: url}
    finished = _run([sys.executable, "-m", "taskgate.server"], env)
    assert_one_line_error(finished, variable, url, "master_name")
