"""The taskgate contract: generated gRPC stubs for `taskgate.v1` live in `taskgate.v1`."""
