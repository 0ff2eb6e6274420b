"""The Celery side of taskgate: the shared app factory and the bundled example tasks.

The worker never imports the gateway or gRPC.
"""
