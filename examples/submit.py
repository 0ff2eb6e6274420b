"""Run `tasks.add(2, 3)` through a running taskgate and print its result.

    make run                        # in another terminal
    .venv/bin/python examples/submit.py

TASKGATE_ADDRESS says where the gateway listens (127.0.0.1:50051).
"""

import os
import sys

import grpc
from google.protobuf.duration_pb2 import Duration

from taskgate.v1 import task_service_pb2 as pb
from taskgate.v1 import task_service_pb2_grpc


def main() -> int:
    """Submit the task, wait up to 10 s for its result, print it; 1 if it has none."""
    address = os.environ.get("TASKGATE_ADDRESS") or "127.0.0.1:50051"
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        submitted = stub.Submit(pb.SubmitRequest(task="tasks.add", args_json="[2, 3]"), timeout=10)
        print(f"submitted tasks.add(2, 3) as {submitted.task_id}")
        request = pb.GetResultRequest(task_id=submitted.task_id, wait=Duration(seconds=10))
        result = stub.GetResult(request, timeout=15)
    if result.HasField("error"):
        print(f"failed: {result.error.type}: {result.error.message}", file=sys.stderr)
        return 1
    if not result.ready:
        print(f"not finished after 10 s (state {pb.TaskState.Name(result.state)})", file=sys.stderr)
        return 1
    print(result.result_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
