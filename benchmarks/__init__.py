"""Throughput and memory benchmarks of skindualgen against reference implementations, measured side by side.

Run all of them with `python -m benchmarks.run` (or `make bench`); see benchmarks/README.md for what each
benchmark compares and how the numbers are taken.
"""
