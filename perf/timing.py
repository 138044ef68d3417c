"""Interleaved timing: every candidate runs once per round, rounds repeat, medians are reported.

The development machines are shared (other engineers' tests, a training job): the available CPU
changes from second to second. Timing A for a minute and then B for a minute would measure the
neighbours as much as A and B. Alternating them call by call exposes every candidate to the same
background, so the *ratio* of their medians is meaningful even when absolute numbers drift.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm


def one_at_a_time(payloads: Sequence[bytes]) -> Callable[[], list[bytes]]:
    """A batch-1 feeder: each call returns the next payload (cycling) as a one-item list, so batch-1
    timings see every request size instead of one."""
    items = itertools.cycle(payloads)
    return lambda: [next(items)]


def interleaved(fns: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1, desc: str = "timing") -> dict[str, list[float]]:
    """Seconds per call of each ``fns[name]()``, ``rounds`` calls each, alternating (after ``warmup``
    untimed calls each, which pay one-off costs: lazy initialisation, JIT, cache warm-up)."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in tqdm(range(rounds), desc=desc, leave=False):
        # Rotate the order each round so that no candidate always follows the same neighbour.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def summary(seconds: list[float], items_per_call: int) -> dict:
    """Median / p90 latency (ms) and median throughput (items/s) of a list of call times."""
    a = np.asarray(seconds)
    med = float(np.median(a))
    return {
        "calls": len(a),
        "items_per_call": items_per_call,
        "latency_ms_p50": med * 1e3,
        "latency_ms_p90": float(np.percentile(a, 90)) * 1e3,
        "latency_ms_min": float(a.min()) * 1e3,
        "items_per_s": items_per_call / med,
        "items_per_s_best": items_per_call / float(a.min()),
    }
