"""What the gateway's log tells an operator: the settings in force, and outages without a flood."""

import time
from pathlib import Path

import grpc

from scripts.stack import Gateway, RedisServer, celery_env, with_config_module
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import poll, seconds, subscribed

LOST_LINE = "result subscription lost"
OUTAGE_SECONDS = 6.0

ROUTED_CONFIG = """
timezone = "Asia/Seoul"
task_routes = {"tasks.echo_request": "low-priority"}
task_annotations = {"tasks.add": {"rate_limit": "120/m"}}
"""


def test_the_settings_line_names_routes_annotations_and_timezone(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = celery_env(redis_server.db_url(4), redis_server.db_url(4))
    gateway = Gateway(with_config_module(env, tmp_path, "routedconfig", ROUTED_CONFIG), tmp_path)
    try:
        (line,) = [line for line in gateway.log_text().splitlines() if "settings in force" in line]
    finally:
        gateway.stop()
    assert "task_routes={'tasks.echo_request': 'low-priority'}" in line
    assert "task_annotations={'tasks.add': {'rate_limit': '120/m'}}" in line
    assert "timezone='Asia/Seoul'" in line


def test_a_lost_result_subscription_is_logged_once_not_every_second(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)
    gateway = Gateway(celery_env(redis_server.url, redis_server.url), tmp_path)
    try:
        stub = pb_grpc.TaskServiceStub(grpc.insecure_channel(gateway.address))
        task_id = stub.Submit(pb.SubmitRequest(task="tasks.add", args_json="[1, 2]")).task_id
        # A wait holds the gateway's subscription open while Redis is down.
        waiting = stub.GetResult.future(
            pb.GetResultRequest(task_id=task_id, wait=seconds(OUTAGE_SECONDS + 2)), timeout=30
        )
        with redis_server.client() as client:
            poll(lambda: subscribed(client, task_id), "the gateway subscribed")
        redis_server.stop()
        poll(lambda: LOST_LINE in gateway.log_text(), "the loss was logged")
        time.sleep(OUTAGE_SECONDS)  # the outage itself: the log is read over this window
        lost_lines = gateway.log_text().count(LOST_LINE)
        waiting.exception()
    finally:
        gateway.stop()
        redis_server.stop()
    assert lost_lines == 1, gateway.log_text()[-3000:]
