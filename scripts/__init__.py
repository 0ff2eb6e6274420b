"""Developer tooling: the local stack behind `make run` and the test suite."""
