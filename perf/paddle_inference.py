"""Paddle Inference with oneDNN running SPIN: a proxy for PaddleOCR's own in-process recognizer.

What it measures, on one spinrec checkpoint's weights, at batch 1 and batch 32, with N CPU threads:

- ``recognizer``: request bytes -> texts as PaddleOCR's ``tools/infer/predict_rec.py`` (``TextRecognizer``)
  does it for SPIN: ``resize_norm_img_spin`` (here :func:`spinrec.preprocess.preprocess_batch`, bit-identical
  to it in ``tests/test_paddle_fidelity.py``), one predictor call on the batch (then ``try_shrink_memory``,
  as PaddleOCR does), ``SPINLabelDecode`` (here :func:`spinrec.decoding.decode` with ``stop_at_eos=False``,
  identical to it in the same tests: all 26 steps, no early stop);
- ``predictor``: the Paddle Inference call alone, ``[N, 1, 32, 100]`` -> probabilities ``[N, 26, classes]``;
- agreement with spinrec's PyTorch model on the same preprocessed batch: largest absolute difference of the
  probabilities and how many decoded texts are equal.

Why it is a proxy: PaddleOCR's model code (``ppocr/modeling``) is not in the installable ``paddleocr`` wheel
and nothing can be downloaded here. The network is ``reference/spin_paddle.py`` instead: SPIN in
Paddle with PaddleOCR's module structure and parameter names, written independently of spinrec and checked
against it stage by stage. It gets the checkpoint's weights through :func:`spinrec.weights.to_paddle` and is
exported as PaddleOCR's ``tools/export_model.py`` exports a recognizer (``paddle.jit.to_static`` +
``paddle.jit.save``, input ``[None, 1, 32, 100]``). The predictor is configured as PaddleOCR's
``tools/infer/utility.create_predictor`` configures one for CPU with ``enable_mkldnn``, except for two
settings that fail on Paddle 3.3.1 with the PIR (``.json``) model ``paddle.jit.save`` writes:

- ``enable_memory_optim()`` is left out: predictor creation fails with "Not find predictor_id 0 and pass_name
  memory_optimize_pass" (PaddlePaddle/Paddle#75496). It saves memory, not time.
- ``onednn_placement_pass`` is deleted: it moves ``bilinear_interp`` (the AIN offsets' upsampling) to a
  oneDNN kernel that the executor cannot build ("ConvertPirAttribute2RuntimeAttribute not support
  [pir::ArrayAttribute<pir::DoubleAttribute>]", PaddlePaddle/Paddle#79749). The oneDNN fusion passes still
  run: in the optimised program every convolution (fused with its batch norm and ReLU), the fully connected
  layers and most matmuls are oneDNN ops; pooling, element-wise ops, softmax, the LSTMs and the remaining
  matmuls run on Paddle's own CPU kernels instead of oneDNN ones.

    python -m perf.paddle_inference --weights model_repository/spin_decoder/1/model.safetensors [--threads 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from spinrec import weights
from spinrec.charset import Charset
from spinrec.decoding import decode
from spinrec.models.spin import SPIN, SPINConfig

INPUT_SHAPE = [None, 1, 32, 100]
#: What ``SPINPaddle`` hard-codes: the published transform (AIN offsets and TPS), its input and 26 decoding steps.
REFERENCE_FIXED = {"in_channels": 1, "image_size": (32, 100), "offsets": True, "stn": True, "default_type": 6, "max_text_length": 25}


def _spin_paddle():
    """``reference/spin_paddle.py``, imported when used: it needs Paddle."""
    from reference import spin_paddle

    return spin_paddle


def reference_kwargs(config: SPINConfig) -> dict:
    """``SPINPaddle`` constructor arguments for ``config``; ValueError for a config the reference cannot build."""
    wrong = [f"{k}={getattr(config, k)!r} (reference: {v!r})" for k, v in REFERENCE_FIXED.items() if getattr(config, k) != v]
    if wrong:
        raise ValueError("the Paddle reference (reference/spin_paddle.py) cannot build this SPIN config: " + ", ".join(wrong))
    return {
        "backbone_out": config.backbone_out_channels,
        "neck_hidden": config.neck_hidden_size,
        "neck_out": tuple(config.neck_out_channels),
        "head_hidden": config.head_hidden_size,
        "num_classes": config.num_classes,
    }


def export(checkpoint: str | Path, directory: str | Path) -> Path:
    """Write the checkpoint's network as a Paddle inference model: ``directory/inference.json`` + ``.pdiparams``
    (input ``x`` ``[N, 1, 32, 100]`` float32 -> probabilities ``[N, 26, classes]``). Returns the path prefix."""
    import paddle

    model = weights.load(checkpoint)
    net = _spin_paddle().SPINPaddle(**reference_kwargs(model.config))
    missing, unexpected = net.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.to_paddle(model).items()})
    if missing or unexpected:
        raise weights.CheckpointError(f"Paddle reference state dict: missing {missing}, unexpected {unexpected}")
    net.eval()
    # full_graph: AST transcription into one static program, the only dy2static mode of the Paddle 2.x that
    # PaddleOCR 2.7's export_model ran on (3.x defaults to bytecode tracing with graph breaks).
    static = paddle.jit.to_static(net, input_spec=[paddle.static.InputSpec(INPUT_SHAPE, "float32", "x")], full_graph=True)
    prefix = Path(directory) / "inference"
    paddle.jit.save(static, str(prefix))
    return prefix


class Predictor:
    """A Paddle Inference predictor on :func:`export`'s model, configured like PaddleOCR's ``create_predictor``
    on CPU (two exceptions: module docstring). ``[N, 1, 32, 100]`` float32 -> probabilities ``[N, 26, classes]``."""

    def __init__(self, prefix: str | Path, threads: int = 2):
        from paddle import inference

        config = inference.Config(f"{prefix}.json", f"{prefix}.pdiparams")
        config.disable_gpu()
        config.set_mkldnn_cache_capacity(10)
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        config.delete_pass("conv_transpose_eltwiseadd_bn_fuse_pass")
        config.delete_pass("matmul_transpose_reshape_fuse_pass")
        config.delete_pass("onednn_placement_pass")  # PaddlePaddle/Paddle#79749 (module docstring)
        config.switch_use_feed_fetch_ops(False)
        config.switch_ir_optim(True)
        self.predictor = inference.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.input.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        self.predictor.run()
        probs = self.output.copy_to_cpu()
        self.predictor.try_shrink_memory()  # PaddleOCR's TextRecognizer does this after every batch
        return probs


class PaddleRecognizer:
    """Request bytes -> texts the way PaddleOCR's ``TextRecognizer`` reads SPIN, on a :class:`Predictor`."""

    def __init__(self, predictor: Predictor, charset: Charset | None = None):
        self.predictor = predictor
        self.charset = charset or Charset()

    def preprocess(self, payloads: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> ``[N, 1, 32, 100]``; ValueError if any fails to decode."""
        from spinrec.preprocess import preprocess_batch

        batch, errors = preprocess_batch(list(payloads))
        if any(errors):
            raise ValueError([str(e) for e in errors if e])
        return batch

    def __call__(self, payloads: Sequence[bytes]) -> list[str]:
        return [r.text for r in decode(self.predictor(self.preprocess(payloads)), self.charset, stop_at_eos=False)]


def load(checkpoint: str | Path, threads: int = 2, charset: Charset | None = None) -> PaddleRecognizer:
    """Export the checkpoint to a temporary directory and load it; the predictor keeps the model in memory."""
    with tempfile.TemporaryDirectory(prefix="spin_paddle_") as d:
        return PaddleRecognizer(Predictor(export(checkpoint, d), threads), charset)


def optional(checkpoint: str | Path, threads: int = 2, charset: Charset | None = None) -> tuple[PaddleRecognizer | None, str | None]:
    """:func:`load`, or None and the reason when Paddle is not installed or the reference cannot build the config."""
    try:
        import paddle  # noqa: F401
    except ImportError as e:
        return None, f"paddlepaddle is not importable ({e}); scripts/setup.sh --dev installs it"
    try:
        return load(checkpoint, threads, charset), None
    except ValueError as e:
        return None, str(e)


def agreement(recognizer: PaddleRecognizer, model: SPIN, batch: np.ndarray) -> dict:
    """Paddle Inference vs spinrec's PyTorch model on ``batch`` ``[N, 1, 32, 100]``, both decoding all 26 steps
    (PaddleOCR's mode): largest absolute probability difference and equal decoded texts."""
    import torch

    with torch.inference_mode():
        ours = model(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
    theirs = recognizer.predictor(batch)
    texts = [(a.text, b.text) for a, b in zip(decode(ours, recognizer.charset, False), decode(theirs, recognizer.charset, False))]
    return {
        "max_abs_diff_probs": float(np.abs(ours - theirs).max()),
        "texts_equal": sum(a == b for a, b in texts),
        "texts_total": len(texts),
    }


def measure(checkpoint: str | Path, payloads: Sequence[bytes], threads: int = 2, rounds_b1: int = 16, rounds_b32: int = 4,
            charset: Charset | None = None) -> dict:
    """Everything in the module docstring; recognizer and predictor timed interleaved (:mod:`perf.timing`)."""
    import paddle
    import torch

    from perf.timing import interleaved, one_at_a_time, summary

    payloads = list(payloads)
    if len(payloads) < 32:
        raise ValueError("need at least 32 request payloads")
    torch.set_num_threads(threads)
    rec = load(checkpoint, threads, charset)
    x32 = rec.preprocess(payloads[:32])
    record = {"threads": threads, "paddle": paddle.__version__, **agreement(rec, weights.load(checkpoint), x32)}

    one = one_at_a_time(payloads)

    t1 = interleaved({"recognizer": lambda: rec(one()), "predictor": lambda: rec.predictor(x32[:1])}, rounds_b1, warmup=2, desc="paddle batch 1")
    t32 = interleaved({"recognizer": lambda: rec(payloads[:32]), "predictor": lambda: rec.predictor(x32)}, rounds_b32, warmup=1, desc="paddle batch 32")
    record["batch1"] = {k: summary(v, 1) for k, v in t1.items()}
    record["batch32"] = {k: summary(v, 32) for k, v in t32.items()}
    record["images_per_s"] = {"batch1": record["batch1"]["recognizer"]["items_per_s"], "batch32": record["batch32"]["recognizer"]["items_per_s"]}
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.paddle_inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="spinrec safetensors checkpoint")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=64, help="rendered request images (default %(default)s)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--rounds", type=int, default=16, help="timed batch-1 calls; batch 32 gets a quarter (default %(default)s)")
    p.add_argument("--out", type=Path, help="write the record as JSON here")
    args = p.parse_args(argv)

    from perf import data

    warnings.filterwarnings("ignore", category=UserWarning)
    samples = data.render_samples(args.images, args.seed)
    record = measure(args.weights, [s.data for s in samples], args.threads, args.rounds, max(2, args.rounds // 4))
    record["weights"] = str(args.weights)
    text = json.dumps(record, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
