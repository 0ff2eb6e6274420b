"""The taskgate gateway: a grpc.aio server that dispatches calls to Celery by task name."""
