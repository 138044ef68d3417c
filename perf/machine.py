"""What a measurement ran on: CPU, cores, ISA flags, load, versions; and a server's resident memory.

Memory is read from ``/proc``: the tritonserver process that listens on the given port and all its
descendants (the Python-backend stubs, one per model instance). RSS counts pages shared between the
processes (libraries, the stub binary) once per process, so the sum over-states the machine's cost;
PSS (``smaps_rollup``) splits shared pages between their users and sums to the true total. Both are
reported.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable

#: ISA features that decide which kernels oneDNN / ONNX Runtime / OpenVINO can use.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
PACKAGES = (
    "numpy", "torch", "onnx", "onnxruntime", "openvino", "opencv-python-headless", "nvidia-pytriton", "tritonclient", "paddlepaddle", "spinrec",
)


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    flag_set = set(flags.group(1).split()) if flags else set()
    family = re.search(r"^cpu family\s*:\s*(\d+)$", text, re.M)
    model_no = re.search(r"^model\s*:\s*(\d+)$", text, re.M)
    return {
        "model_name": model.group(1).strip() if model else platform.processor(),
        "cpu_family": int(family.group(1)) if family else None,
        "cpu_model": int(model_no.group(1)) if model_no else None,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "flags": [f for f in FLAGS_OF_INTEREST if f in flag_set],
        "hypervisor": "hypervisor" in flag_set,
    }


def memory_total_gib() -> float:
    m = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return round(int(m.group(1)) / 2**20, 1) if m else float("nan")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def perf_analyzer_version(binary: str) -> str | None:
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else None


def machine_record() -> dict:
    return {"cpu": cpu_info(), "memory_gib": memory_total_gib(), "load_average_1_5_15": load_average(), "versions": versions()}


# --------------------------------------------------------------------------------------------- memory


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline")
    return [a for a in raw.split("\0") if a] if raw else []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _parent(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name is in parentheses and may contain spaces: the ppid follows the last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def processes(name: str, matches: Callable[[list[str]], bool] = lambda args: True) -> list[int]:
    """PIDs of the processes whose executable is called ``name`` and whose arguments ``matches``."""
    found = []
    for pid in _pids():
        args = _cmdline(pid)
        if args and Path(args[0]).name == name and matches(args):
            found.append(pid)
    return found


def find_server_pid(port: int) -> int | None:
    """The tritonserver whose command line names ``port`` (HTTP, gRPC or metrics)."""
    return next(iter(processes("tritonserver", lambda args: any(a.endswith(f"-port={port}") for a in args))), None)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _pids():
        parent = _parent(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _kib(text: str | None, key: str) -> int:
    if not text:
        return 0
    m = re.search(rf"^{key}:\s*(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def server_memory(port: int) -> dict | None:
    """RSS and PSS (MiB) of the tritonserver listening on ``port`` and of each descendant process."""
    root = find_server_pid(port)
    if root is None:
        return None
    procs = []
    for pid in descendants(root):
        args = _cmdline(pid)
        if not args:
            continue
        name = Path(args[0]).name
        if name == "triton_python_backend_stub" and len(args) > 8:
            name = f"stub:{args[8]}"  # the instance name, e.g. spin_encoder_0_0
        procs.append({
            "pid": pid,
            "name": name,
            "rss_mib": round(_kib(_read(f"/proc/{pid}/status"), "VmRSS") / 1024, 1),
            "pss_mib": round(_kib(_read(f"/proc/{pid}/smaps_rollup"), "Pss") / 1024, 1),
        })
    return {
        "server_pid": root,
        "processes": procs,
        "total_rss_mib": round(sum(p["rss_mib"] for p in procs), 1),
        "total_pss_mib": round(sum(p["pss_mib"] for p in procs), 1),
    }
