"""Benchmark plug-ins: one folder per benchmark, registered by name."""
