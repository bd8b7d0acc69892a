"""Benchmarks of the whole mailing pipeline on one machine (`make bench`, docs/BENCHMARKS.md)."""
