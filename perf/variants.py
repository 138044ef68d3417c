"""Configuration experiments without touching ``model_repository/``: a variant repository in a folder
of its own, then ``python -m perf.run --launch --launch-repository DIR`` measures it.

    python -m perf.variants OUT --encoder openvino --encoder-delay-us 5000

The variant links the built artifacts (same weights), copies the configs and rewrites only what the
options name: the encoder runtime (ONNX Runtime as served / without pool spinning / OpenVINO fp32 or
bf16) and precision (fp32 / bf16 / int8), instance counts, threads and dynamic-batching delays. Variant model files live in the variant folder
and subclass the served models (:mod:`spinrec.serving.triton`), so everything else is the served code.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from spinrec.runtime import PRECISIONS, SERVED

ROOT = Path(__file__).resolve().parents[1]

ENCODER_MODEL = '''"""Variant spin_encoder written by perf.variants: the served EncoderModel, ONNX Runtime without pool spinning."""
from spinrec.serving.triton import EncoderModel


class TritonPythonModel(EncoderModel):
    def setup(self):
        from spinrec.runtime import open_encoder

        self.encoder = open_encoder("onnxruntime", self.artifact("onnx_file", "model.onnx"), self.int_param("threads", 1), spinning=False)
'''

def _set(text: str, pattern: str, repl: str) -> str:
    new, n = re.subn(pattern, repl, text)
    if n == 0:
        raise ValueError(f"pattern {pattern!r} not found in config")
    return new


def _set_param(text: str, key: str, value: str) -> str:
    pat = rf'parameters \{{ key: "{key}" value: \{{ string_value: "[^"]*" \}} \}}'
    line = f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
    return re.sub(pat, line, text) if re.search(pat, text) else text + "\n" + line + "\n"


def _set_batching(text: str, instances: int | None, delay_us: int | None) -> str:
    """A config's CPU instance count and dynamic-batching delay, each only where given."""
    if instances is not None:
        text = _set(text, r"(instance_group \[ \{ kind: KIND_CPU count: )\d+", rf"\g<1>{instances}")
    if delay_us is not None:
        text = _set(text, r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {delay_us}")
    return text




def build_variant(source: Path, out: Path, encoder: str = "served", encoder_instances: int | None = None,
                  encoder_threads: int | None = None, preprocess_instances: int | None = None, decoder_instances: int | None = None,
                  encoder_delay_us: int | None = None, decoder_delay_us: int | None = None,
                  preprocess_delay_us: int | None = None, encoder_precision: str | None = None) -> Path:
    if out.exists():
        shutil.rmtree(out)
    for path in source.rglob("*"):
        rel = path.relative_to(source)
        dst = out / rel
        if path.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif path.suffix in (".pbtxt", ".py", ".json", ".txt") or path.name == ".gitkeep":
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst)
        else:  # weights: link, never copy (same bytes as the served repository)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(path.resolve())
    enc_cfg = out / "spin_encoder" / "configs" / "cpu.pbtxt"
    text = enc_cfg.read_text()
    if encoder in SERVED:  # the served model offers these through its runtime parameter; the others need a variant model
        text = _set_param(text, "runtime", encoder)
    elif encoder == "openvino_bf16":  # the served model's own option
        text = _set_param(_set_param(text, "runtime", "openvino"), "precision", "bf16")
    elif encoder != "served":
        (out / "spin_encoder" / "1" / "encoder_variant.py").write_text(ENCODER_MODEL)
        text = _set(text, r'default_model_filename: "[^"]*"', 'default_model_filename: "encoder_variant.py"')
    if encoder_precision is not None:  # int8 needs the INT8 encoders in the source (not built --no-int8)
        text = _set_param(text, "precision", encoder_precision)
    if encoder_threads is not None:
        text = _set_param(text, "threads", str(encoder_threads))
    enc_cfg.write_text(_set_batching(text, encoder_instances, encoder_delay_us))
    for cfg, instances, delay_us in ((out / "spin_decoder" / "configs" / "cpu.pbtxt", decoder_instances, decoder_delay_us),
                                     (out / "spin_preprocess" / "config.pbtxt", preprocess_instances, preprocess_delay_us)):
        cfg.write_text(_set_batching(cfg.read_text(), instances, delay_us))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.variants", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, default=ROOT / "model_repository")
    p.add_argument("--encoder", choices=("served", *SERVED, "ort_nospin", "openvino_bf16"), default="served")
    p.add_argument("--encoder-precision", choices=sorted({p for kind in SERVED for p in PRECISIONS[kind]}))
    p.add_argument("--encoder-instances", type=int)
    p.add_argument("--encoder-threads", type=int)
    p.add_argument("--preprocess-instances", type=int)
    p.add_argument("--decoder-instances", type=int)
    p.add_argument("--encoder-delay-us", type=int)
    p.add_argument("--decoder-delay-us", type=int)
    p.add_argument("--preprocess-delay-us", type=int)
    a = p.parse_args(argv)
    out = build_variant(a.source, a.out, a.encoder, a.encoder_instances, a.encoder_threads, a.preprocess_instances,
                        a.decoder_instances, a.encoder_delay_us, a.decoder_delay_us, a.preprocess_delay_us, a.encoder_precision)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
