"""Benchmarks: `python -m bench` (all sections, or `--only ...`), `python -m bench.load` (HTTP load), `bench/gpu.sh`.

Numbers, not assertions. Every comparison is measured side by side in one run (interleaved where possible)
and reported as a ratio, because the absolute figures depend on whatever else the machine is doing.
"""
