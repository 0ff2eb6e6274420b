"""Run `tasks.add(2, 3)` through a running taskgate and print its result.

    make run                        # in another terminal
    .venv/bin/python examples/submit.py

TASKGATE_ADDRESS says where the gateway listens (127.0.0.1:50051).
"""

import sys

import taskgate


def main() -> int:
    """Submit the task, wait up to 10 s for its result, print it; 1 if it has none."""
    with taskgate.Client() as client:
        submitted = client.submit("tasks.add", [2, 3])
        print(f"submitted tasks.add(2, 3) as {submitted.task_id}")
        result = client.result(submitted.task_id, wait=10)
    if result.error is not None:
        print(f"failed: {result.error.type}: {result.error.message}", file=sys.stderr)
        return 1
    if not result.ready:
        print(f"not finished after 10 s (state {result.state})", file=sys.stderr)
        return 1
    print(result.value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
