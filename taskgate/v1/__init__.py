"""Generated stubs for the `taskgate.v1` proto package; regenerate with `make proto`."""
