"""taskgate's own publish path to a Redis broker (design decision 10).

`message` builds the protocol-v2 message exactly as Celery's `send_task` would
put it in Redis, from Celery's and kombu's own pure pieces; `broker` writes it
with `redis.asyncio` in one idempotent script; `batcher` coalesces the scripts
of concurrent calls into one pipeline; `publisher` picks this path or Celery's
`send_task` and fits retries to the call's deadline.
"""
