"""Reliability harnesses: what happens when things go wrong, measured on real servers (not speed: that is perf/).

- :mod:`reliability.failover`: N CPU replicas behind HAProxy, scraped by Prometheus; one SIGKILLed mid-run and
  one rolling restart, with and without the client's retries (``python -m reliability.failover``; CI runs a
  shorter scenario in tests/test_failover.py, and tests/test_graceful_stop.py drives its cluster).
- :mod:`reliability.hostile_soak`: ten minutes of mixed good and hostile traffic through the front proxy with
  the server's memory sampled (``python -m reliability.hostile_soak``).

Results: ``reliability/results/``. They launch servers and render requests with perf's helpers
(:mod:`perf.run`, :mod:`perf.data`, :mod:`perf.machine`); perf never imports them.
"""
