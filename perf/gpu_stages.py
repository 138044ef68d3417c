"""GPU stage timings that decide the GPU configuration, on a machine with CUDA (no TensorRT needed).

- the attention decoder in CuPy (``spin_decoder/config.pbtxt``, KIND_GPU) against the NumPy one (the CPU
  config), per batch size: is the decoder worth a GPU instance, and from which batch on;
- the encoder in PyTorch eager on the GPU, fp32 (as PyTorch runs it by default: cuDNN convolutions in
  TF32) and under bf16 autocast: what the GPU gives before TensorRT, and the bar the engine must clear.

Published architecture (``SPINConfig()``), seeded random weights: timings do not depend on the values.
The decoder runs all 26 steps (``stop_at_eos`` off, the worst case). Medians of ``--repeats`` calls after
warm-up, CUDA synchronised around each call.

    python -m perf.gpu_stages --out perf/results/gpu_stages
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

BATCHES = (1, 8, 32, 64)


def median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.gpu_stages", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batches", default=",".join(map(str, BATCHES)))
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_stages.json and gpu_stages.md")
    a = p.parse_args(argv)
    import cupy
    import torch

    from spinrec import weights
    from spinrec.models.spin import SPIN, SPINConfig
    from spinrec.decoder import HeadDecoder

    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    batches = [int(b) for b in a.batches.split(",")]
    torch.manual_seed(0)
    model = SPIN(SPINConfig()).eval()
    ckpt = Path(tempfile.mkdtemp(prefix="spin-gpu-stages-")) / "r32.safetensors"
    weights.save(model, ckpt)
    rng = np.random.default_rng(0)
    record = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cupy": cupy.__version__,
              "numpy": np.__version__, "cpu": platform.processor() or platform.machine(), "repeats": a.repeats, "rows": []}
    cuda_sync = torch.cuda.synchronize
    numpy_dec = HeadDecoder(ckpt, stop_at_eos=False)
    cupy_dec = HeadDecoder(ckpt, stop_at_eos=False, device="gpu")
    model = model.cuda()
    for b in batches:
        feats = rng.standard_normal((b, 26, 512), dtype=np.float32)
        on_gpu = cupy.asarray(feats)
        images = torch.rand(b, 1, 32, 100, device="cuda") * 2 - 1
        with torch.inference_mode():
            row = {
                "batch": b,
                "decoder_numpy_ms": median_ms(lambda: numpy_dec(feats), a.repeats, lambda: None),
                "decoder_cupy_ms": median_ms(lambda: cupy_dec(on_gpu), a.repeats, cuda_sync),
                "encoder_torch_fp32_ms": median_ms(lambda: model.encode(images), a.repeats, cuda_sync),
            }
            with torch.autocast("cuda", dtype=torch.bfloat16):
                row["encoder_torch_bf16_autocast_ms"] = median_ms(lambda: model.encode(images), a.repeats, cuda_sync)
        row["decoder_cupy_speedup"] = row["decoder_numpy_ms"] / row["decoder_cupy_ms"]
        record["rows"].append(row)
        print(json.dumps(row), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_stages.json").write_text(json.dumps(record, indent=1))
    lines = [f"# GPU stages on {record['device']} (torch {record['torch']}, CuPy {record['cupy']}, NumPy {record['numpy']})", "",
             "Median ms per call; decoder 26 steps (no early stop); published architecture, random weights.", "",
             "| batch | decoder NumPy (CPU) | decoder CuPy | CuPy speed-up | encoder eager fp32 | encoder eager bf16 autocast | encoder fp32 img/s |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in record["rows"]:
        lines.append(f"| {r['batch']} | {r['decoder_numpy_ms']:.2f} | {r['decoder_cupy_ms']:.2f} | {r['decoder_cupy_speedup']:.2f}x | "
                     f"{r['encoder_torch_fp32_ms']:.2f} | {r['encoder_torch_bf16_autocast_ms']:.2f} | {1e3 * r['batch'] / r['encoder_torch_fp32_ms']:.0f} |")
    (a.out / "gpu_stages.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
