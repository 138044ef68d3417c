"""The plumbing floor at concurrency 1: the served ensemble with the work of its three models taken out.

The concurrency-1 target asks that ``spin_ocr`` over gRPC take at most 3 ms longer than the in-process
pipeline. What the server adds is the gRPC round trip, the ensemble scheduler and three Python-backend
hops (inputs into the stub's shared memory, a message to the stub process, its ``execute``, the outputs
back). This command measures that alone: a copy of the model repository whose three ``model.py`` read
their inputs and return zeros of the served shapes (an empty text from the decoder), with the same
configs (batching, instances, config names) and the same launcher. It then times, round by round and in
alternating order, one image in process, the same image through the real server and through the
pass-through one, and runs perf_analyzer at concurrency 1 on both servers.

    python -m perf.floor --model-repository R --out perf/results/floor

``R`` is a built repository (``python -m builders.build_repository``); the pass-through copy is written to
``OUT/raw/floor_repository``. Writes ``OUT/floor.json``, ``OUT/floor.md`` and ``OUT/floor.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from perf import analyzer, data
from perf.machine import machine_record
from perf.run import _SERVER_ENV, ENSEMBLE, ROOT, launch, stop
from spinrec import contract

# Zeros of each model's outputs as spinrec.contract describes them: empty strings, float32 zeros;
# variable dimensions (CHAR_PROBS) as for an 8-character word.
_NUMPY = {"TYPE_STRING": 'np.full({shape}, b"", dtype=object)', "TYPE_FP32": "np.zeros({shape}, np.float32)"}
_VARIABLE = 8


def _zeros(tensor: contract.Tensor) -> str:
    shape = "(rows, " + ", ".join(str(_VARIABLE if d < 0 else d) for d in tensor.dims) + ")"
    return f'pb_utils.Tensor("{tensor.name}", {_NUMPY[tensor.dtype].format(shape=shape)})'


#: What each pass-through model reads and the code of what it returns per request of ``rows`` images;
#: CHAR_PROBS only when a request asks for it, as served.
_STAGES = {
    name: (
        contract.MODELS[name].inputs[0].name,
        ", ".join(_zeros(t) for t in contract.MODELS[name].outputs if t.name != contract.CHAR_PROBS),
    )
    for name in (contract.PREPROCESS, contract.ENCODER, contract.DECODER)
}
_CHAR_PROBS = next(t for t in contract.MODELS[contract.DECODER].outputs if t.name == contract.CHAR_PROBS)

_MODEL_PY = '''"""Pass-through {name} written by perf.floor: reads {input}, returns zeros of the served outputs."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "{input}").as_numpy().shape[0]
            outputs = [{outputs}]
            if {char_probs} and "{char_probs_name}" in request.requested_output_names():
                outputs.append({char_probs_zeros})
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
'''


def build_floor_repository(source: Path, dest: Path) -> Path:
    """``source``'s configs (every ``config.pbtxt`` and ``configs/``) with pass-through ``model.py`` files."""
    if dest.exists():
        shutil.rmtree(dest)
    for model in (*_STAGES, ENSEMBLE):
        (dest / model / "1").mkdir(parents=True)
        shutil.copy2(source / model / "config.pbtxt", dest / model / "config.pbtxt")
        if (source / model / "configs").is_dir():
            shutil.copytree(source / model / "configs", dest / model / "configs")
    for name, (tensor, outputs) in _STAGES.items():
        code = _MODEL_PY.format(
            name=name, input=tensor, outputs=outputs, char_probs=name == contract.DECODER,
            char_probs_name=_CHAR_PROBS.name, char_probs_zeros=_zeros(_CHAR_PROBS),
        )
        configs = [dest / name / "config.pbtxt", *sorted((dest / name / "configs").glob("*.pbtxt"))]
        # A config may name its own file (the CPU encoder's default_model_filename): each gets the same code.
        files = {"model.py", *(m for c in configs for m in re.findall(r'default_model_filename:\s*"([^"]+)"', c.read_text()))}
        for filename in files:
            (dest / name / "1" / filename).write_text(code)
    return dest


def _quartiles(values_s: list[float] | np.ndarray) -> dict:
    ms = np.asarray(values_s) * 1e3
    return {"p50_ms": float(np.median(ms)), "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75))}


def measure(repository: Path, payloads: list[bytes], real_grpc: str, floor_grpc: str, rounds: int, threads: int) -> dict:
    """Per-round times of one image: in process, through the real server, through the pass-through one."""
    from perf.baselines import inprocess
    from perf.paired import GrpcOcr

    pipe = inprocess(repository, threads)
    paths = {"inprocess": lambda p: pipe.texts([p]), "server": GrpcOcr(real_grpc, 1).one, "floor": GrpcOcr(floor_grpc, 1).one}
    for p in payloads[:3]:  # warm every path
        for call in paths.values():
            call(p)
    times: dict[str, list[float]] = {k: [] for k in paths}
    order = list(paths)
    for i in tqdm(range(rounds), desc="rounds (in process, server, floor)"):
        p = payloads[i % len(payloads)]
        for name in order[i % 3 :] + order[: i % 3]:  # rotate who goes first
            t0 = time.perf_counter()
            paths[name](p)
            times[name].append(time.perf_counter() - t0)
    a = {k: np.array(v) for k, v in times.items()}
    return {
        "rounds": rounds,
        **{k: _quartiles(v) for k, v in a.items()},
        "overhead": _quartiles(a["server"] - a["inprocess"]),
        "overhead_minus_floor": _quartiles(a["server"] - a["inprocess"] - a["floor"]),
        "samples_s": {k: v.tolist() for k, v in a.items()},
    }


def markdown(result: dict) -> str:
    p = result["paired"]
    pa = result["perf_analyzer_c1"]
    lines = [
        "# The plumbing floor at concurrency 1",
        "",
        f"Model repository `{result['repository']}`; {p['rounds']} rounds, one image each, in rotating order; "
        f"machine: {result['machine']['cpu']['model_name']}, {result['machine']['cpu']['usable_cpus']} usable CPUs.",
        "",
        "| path (one image, gRPC client in Python) | p50 ms | p25 ms | p75 ms |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "inprocess": "in process (preprocess + encoder + decoder, no server)",
        "server": "`spin_ocr` through the server",
        "floor": "the same ensemble with pass-through models (the plumbing)",
        "overhead": "server - in process, per round (the target's overhead)",
        "overhead_minus_floor": "server - in process - floor, per round (stages slower in the server)",
    }
    for key, label in labels.items():
        q = p[key]
        lines.append(f"| {label} | {q['p50_ms']:.2f} | {q['p25_ms']:.2f} | {q['p75_ms']:.2f} |")
    lines += [
        "",
        "perf_analyzer, `spin_ocr` over gRPC at concurrency 1 (p50 ms): "
        + ", ".join(f"{name} {lv['p50_ms']:.2f}" if lv.get("p50_ms") else f"{name} failed: {lv.get('error')}" for name, lv in pa.items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["paired"]["samples_s"]
    names = ["inprocess", "server", "floor"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.boxplot([np.asarray(samples[n]) * 1e3 for n in names], tick_labels=["in process", "server", "plumbing floor"], showfliers=False)
    ax.set_ylabel("ms per image (concurrency 1)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(prog="python -m perf.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository", help="a built repository")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "floor")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--images", type=int, default=64, help="rendered word images cycled through")
    parser.add_argument("--threads", type=int, default=2, help="in-process encoder threads (the served encoder's)")
    parser.add_argument("--base-port", type=int, default=18500, help="real server on +0..2, pass-through on +10..12")
    args = parser.parse_args(argv)
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    binary = analyzer.find_perf_analyzer()
    floor_repo = build_floor_repository(args.model_repository, raw / "floor_repository")
    samples = data.render_samples(args.images, progress=False)
    payloads = [s.data for s in samples]
    input_data = data.write_input_data(raw / "input_image_bytes.json", data.input_data(payloads))
    servers = {}
    result: dict = {"repository": str(args.model_repository), "machine": machine_record(), "command": "python -m perf.floor " + " ".join(argv or sys.argv[1:])}
    try:
        for name, repo, port in (("server", args.model_repository, args.base_port), ("floor", floor_repo, args.base_port + 10)):
            servers[name] = (launch(port, raw / f"{name}.log", repo, dict(_SERVER_ENV)), port)
        grpc = {name: f"127.0.0.1:{port + 1}" for name, (_, port) in servers.items()}
        result["paired"] = measure(args.model_repository, payloads, grpc["server"], grpc["floor"], args.rounds, args.threads)
        result["perf_analyzer_c1"] = {}
        for name, (_, port) in servers.items():
            lv = analyzer.run_level(binary, ENSEMBLE, "grpc", grpc[name], f"127.0.0.1:{port}", input_data, "concurrency", 1, raw, request_count=100)
            result["perf_analyzer_c1"][name] = {"p50_ms": lv.p50_ms, "p90_ms": lv.p90_ms, "throughput": lv.throughput, "failed": lv.requests_failed, "error": lv.error, "command": lv.command}
    finally:
        stop([process for process, _ in servers.values()])
    (args.out / "floor.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "floor.md").write_text(markdown(result))
    plot(result, args.out / "floor.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
