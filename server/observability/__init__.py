"""What an operator watches: readiness for health checks, and Prometheus metrics."""
