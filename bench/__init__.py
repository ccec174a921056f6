"""Benchmarks: run by hand, reported in docs/benchmarks.md; not run by CI."""
