"""Load generators; each runs as ``python -m benchmarks.NAME``."""
