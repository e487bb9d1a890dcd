"""Benchmarks: `xdt bench transfer` (and, later, platform and workflow benchmarks)."""
