"""Observability: readiness for health checks, and the logs, traces and metrics an operator
reads, in the ecosystem's own formats."""
