"""The text detector's ONNX graph: where it comes from, the check it must pass, and how it enters the model repository.

The network is PaddleOCR's PP-OCRv6 det small (DB, Apache-2.0 weights, 9.9 MB), which the ``rapidocr`` wheel
(the ``serve`` extra) carries inside it; any other PaddleOCR DB export with one ``[N, 3, H, W]`` input and one
probability-map output can be given by path. Nothing is downloaded: the builder copies the file it finds.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

#: Inside the ``rapidocr`` package.
PACKAGED = Path("models", "PP-OCRv6_det_small.onnx")
INSTALL_HINT = "pip install 'rapidocr==3.10.0' (part of the serve extra), or pass --detector PATH to a PaddleOCR DB detector in ONNX"


class DetectorError(ValueError):
    """The detector graph is missing or is not a DB detector; the message says which."""


def packaged_detector() -> Path | None:
    """PP-OCRv6 det small inside the installed ``rapidocr`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("rapidocr")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / PACKAGED
        if path.is_file():
            return path
    return None


def find_detector(path: Path | None = None) -> Path:
    """``path``, else the packaged detector; :class:`DetectorError` naming what to install when neither exists."""
    if path is not None:
        if not path.is_file():
            raise DetectorError(f"detector graph not found: {path}")
        return path
    found = packaged_detector()
    if found is None:
        raise DetectorError(f"no text detector: {INSTALL_HINT}")
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(source: Path, target: Path) -> dict:
    """Check ``source`` and write it to ``target`` with the contract's tensor names (``DETECTOR_INPUT``,
    ``DETECTOR_OUTPUT``; PaddleOCR's exports name them ``x`` and ``fetch_name_0`` or ``sigmoid_0.tmp_0``), so the
    served model's configuration never depends on which export was given. Returns the build record's entry.

    The check: one float input ``[N, 3, H, W]``, one output; on a 64x96 test image ONNX Runtime returns a map
    ``[1, 1, 64, 96]`` of probabilities in ``[0, 1]``."""
    import numpy as np
    import onnx
    import onnxruntime

    from spinrec.contract import DETECTOR_INPUT, DETECTOR_OUTPUT

    try:
        model = onnx.load(str(source))
    except Exception as e:
        raise DetectorError(f"{source}: not an ONNX graph: {e}") from None
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise DetectorError(f"{source}: expected one input and one output, got {len(inputs)} and {len(graph.output)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[1].dim_value != 3:
        raise DetectorError(f"{source}: expected an input [N, 3, H, W], got {[d.dim_value or d.dim_param for d in dims]}")
    renames = {inputs[0].name: DETECTOR_INPUT, graph.output[0].name: DETECTOR_OUTPUT}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    inputs[0].name, graph.output[0].name = DETECTOR_INPUT, DETECTOR_OUTPUT
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    onnx.save(model, str(tmp))
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    probe = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    (prob,) = session.run([DETECTOR_OUTPUT], {DETECTOR_INPUT: probe})
    if prob.shape != (1, 1, 64, 96) or not (np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1):
        tmp.unlink()
        raise DetectorError(f"{source}: not a DB probability map: a 64x96 input gives {prob.shape} in [{prob.min():.3g}, {prob.max():.3g}]")
    tmp.replace(target)
    return {"source": str(source.resolve()), "sha256": sha256(source), "bytes": source.stat().st_size}
