"""An example package of tasks, built into a worker image by examples/worker-image/Dockerfile."""
