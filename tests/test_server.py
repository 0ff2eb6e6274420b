"""The gateway as an operator sees it: health, reflection, and a clean stop."""

import signal
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from scripts.stack import Gateway, ManagedProcess


def test_health_reports_serving(channel: grpc.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types lack Check
    for service in ("", "taskgate.v1.TaskService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_task_service(channel: grpc.Channel) -> None:
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
    names = {service.name for service in response.list_services_response.service}
    assert {"taskgate.v1.TaskService", "grpc.health.v1.Health"} <= names


def test_sigterm_stops_the_gateway_cleanly(stack_env: dict[str, str], tmp_path: Path) -> None:
    gateway = Gateway(stack_env, tmp_path)
    gateway.signal(signal.SIGTERM)
    assert gateway.popen.wait(timeout=15) == 0
    assert "stopping" in gateway.log_text()
    gateway.stop()


def test_both_sides_log_the_delivery_settings_in_force(
    gateway: Gateway, worker: ManagedProcess
) -> None:
    for process in (gateway, worker):
        log = process.log_text()
        assert "settings in force" in log
        assert "task_acks_late=True" in log
        assert "accept_content=['json']" in log
