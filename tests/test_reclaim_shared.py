"""Two gateways sweep one broker whose keys carry a `global_keyprefix`: a message popped
by a worker that never received it is queued again once, under the prefix, and runs once.

A real redis-server, two gateways and a worker; the test plays the worker whose reply
was lost, as in tests/test_reclaim.py.
"""

import json
from pathlib import Path

import grpc

from scripts.stack import Gateway, RedisServer, start_worker
from taskgate.server.publish.inflight import InflightKeys
from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc as pb_grpc
from tests.fault_helpers import await_result, fault_env, managed, poll, runs, unique, write_config
from tests.reclaim_helpers import RECLAIM_BOUND, RECLAIMED_LINE, looked_at_twice, sweeping

PREFIX = "tenant-a:"
QUEUE = "reclaim-shared"
KEYS = InflightKeys(PREFIX)


def test_two_gateways_with_a_key_prefix_queue_a_lost_message_again_once(tmp_path: Path) -> None:
    write_config(tmp_path, broker_transport_options={"global_keyprefix": PREFIX})
    with managed(RedisServer(tmp_path)) as redis_server, redis_server.client() as client:
        env = fault_env(redis_server.url, redis_server.url, config_dir=tmp_path)
        with (
            managed(Gateway(sweeping(env), tmp_path)) as first,
            managed(Gateway(sweeping(env), tmp_path)) as second,
            grpc.insecure_channel(first.address) as channel,
        ):
            stub = pb_grpc.TaskServiceStub(channel)
            key = unique()
            ask = pb.SubmitRequest(
                task="tests.count_run",
                args_json=json.dumps([key]),
                options=pb.SubmitOptions(queue=QUEUE),
            )
            task_id = stub.Submit(ask, timeout=10).task_id
            assert client.exists(KEYS.copy(task_id)), "no in-flight copy under the prefix"
            popped = client.brpop([PREFIX + QUEUE], timeout=5)  # the pop whose reply never came
            assert popped is not None
            assert task_id in popped[1].decode()

            poll(
                lambda: client.llen(PREFIX + QUEUE) == 1, "the message queued again", RECLAIM_BOUND
            )
            looked_at_twice(client, [task_id], KEYS)
            assert client.llen(PREFIX + QUEUE) == 1
            logs = first.log_text() + second.log_text()
            assert logs.count(f"task {task_id} was taken off") == 1, logs[-3000:]
            assert RECLAIMED_LINE in logs
            assert not client.exists(QUEUE), "a list without the prefix"

            with managed(start_worker(env, tmp_path, queues=QUEUE)):
                assert await_result(stub, task_id).state == pb.TASK_STATE_SUCCESS
            assert runs(client, key) == 1
