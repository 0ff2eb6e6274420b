"""Benchmarks taskgate against raw Celery and Flower's REST API on one private stack.

`python -m bench` starts a private redis-server, one Celery worker, the gateway
and Flower, runs the same trivial task (`tasks.add`) through each front end, and
writes a Markdown report to `bench/results.md`. See `python -m bench --help`.
"""
