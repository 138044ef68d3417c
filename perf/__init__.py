"""Performance measurement of the SPIN pipeline: perf_analyzer sweeps against a running Triton server,
in-process baselines, the FLOP-count limit, and the CPU encoder-runtime comparison.

Entry point: ``python -m perf.run`` (see :mod:`perf.run`). Nothing here is imported by the package or
by the server; results go under ``perf/results/``.
"""
