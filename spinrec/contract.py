"""The serving contract: the one place the names, tensors, file layout and plugin identity are written.

Its public part (the ensemble's name :data:`ENSEMBLE`, the tensors a client sends and reads, the request
limits) is owned by the client, :mod:`spinrec_client.contract`, and imported from there: the client must work
without this package installed, and with one owner the server imports what the client publishes, never a
copy. (Reading the names from the server's model metadata was rejected: what each tensor means still has to
be known to the client.) This module adds the server-only facts: the internal steps and their tensors,
shapes, the model repository's artifact layout and the TensorRT plugin's identity.

Everything that builds, serves, calls or measures the models imports these values; the ``config.pbtxt``
files cannot import, so ``tests/test_contract.py`` checks each of them against :data:`MODELS`, and the
TensorRT plugin's C++ constants (``kPLUGIN_NAME``, ``kPLUGIN_VERSION``) against :data:`PLUGIN_OP` and
:data:`PLUGIN_VERSION`. Standard library only (and the client's contract, itself standard library only):
every process (the Triton stubs, the launcher) may import it without pulling anything else in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The client's (public) part, re-exported: spinrec.contract.TEXT etc. are the client's names.
from spinrec_client.contract import (  # noqa: F401
    CHAR_PROBS,
    CONFIDENCE,
    ENSEMBLE,
    ERROR,
    FLAG,
    IMAGE,
    MAX_BYTES,
    MAX_REQUEST_BYTES,
    MAX_WORDS,
    PAGE,
    PAGE_FLAG,
    QUADS,
    SCORE,
    TEXT,
)

# ------------------------------------------------------------------------------------------- models
PREPROCESS = "spin_preprocess"
ENCODER = "spin_encoder"
DECODER = "spin_decoder"
#: The text detector (PaddleOCR's DB, spinrec.page.detector) that spin_page calls before spin_ocr.
DETECTOR = "spin_detector"

# ---------------------------------------------------------------------------------------- tensors
#: Between the steps: the preprocessed batch (the encoder graph's input) and the encoder's features
#: (its output, the decoder's input). The ONNX graph uses the same two names.
ENCODER_INPUT = "image"
ENCODER_OUTPUT = "features"
#: The per-image messages from the preprocessor to the decoder, which returns them as ERROR and FLAG
#: (Triton 2.51's ensemble fails a request for an output of an earlier step, so every output comes from the last).
STEP_ERROR = "error"
STEP_FLAG = "flag"
#: Per-row shapes (the batch dimension excluded): channels, height, width of the preprocessed image, and
#: the encoder's time steps and channels.
IMAGE_SHAPE = (1, 32, 100)
FEATURES_SHAPE = (26, 512)
#: The ensemble's ``max_batch_size`` (its config's; tests/test_contract.py checks): spin_page sends its crops in
#: requests of at most this many rows.
ENSEMBLE_MAX_BATCH = 64
#: The detector's graph input (float32 ``[1, 3, H, W]``, H and W multiples of 32) and output (its text
#: probability map ``[1, 1, H, W]``): the repository builder renames PaddleOCR's export names to these.
DETECTOR_INPUT = "pixels"
DETECTOR_OUTPUT = "probability"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton's config name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]  # per row; -1 is variable


@dataclass(frozen=True)
class Model:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batched: bool = True  # batches on dimension 0 (dims per row); False: max_batch_size 0, dims are the whole tensor's


_MESSAGES = (Tensor(STEP_ERROR, "TYPE_STRING", (1,)), Tensor(STEP_FLAG, "TYPE_STRING", (1,)))
_READINGS = (
    Tensor(TEXT, "TYPE_STRING", (1,)),
    Tensor(CONFIDENCE, "TYPE_FP32", (1,)),
    Tensor(CHAR_PROBS, "TYPE_FP32", (-1,)),
    Tensor(ERROR, "TYPE_STRING", (1,)),
    Tensor(FLAG, "TYPE_STRING", (1,)),
)

#: What each model of the repository takes and returns (per row; every model batches on dimension 0).
MODELS = {
    PREPROCESS: Model(
        inputs=(Tensor(IMAGE, "TYPE_STRING", (1,)),),
        outputs=(Tensor(ENCODER_INPUT, "TYPE_FP32", IMAGE_SHAPE), *_MESSAGES),
    ),
    ENCODER: Model(
        inputs=(Tensor(ENCODER_INPUT, "TYPE_FP32", IMAGE_SHAPE),),
        outputs=(Tensor(ENCODER_OUTPUT, "TYPE_FP32", FEATURES_SHAPE),),
    ),
    DECODER: Model(inputs=(Tensor(ENCODER_OUTPUT, "TYPE_FP32", FEATURES_SHAPE), *_MESSAGES), outputs=_READINGS),
    ENSEMBLE: Model(inputs=(Tensor(IMAGE, "TYPE_STRING", (1,)),), outputs=_READINGS),
    # One photograph per request (max_batch_size 0): these dims are the whole tensor's.
    DETECTOR: Model(
        inputs=(Tensor(DETECTOR_INPUT, "TYPE_FP32", (1, 3, -1, -1)),),
        outputs=(Tensor(DETECTOR_OUTPUT, "TYPE_FP32", (1, 1, -1, -1)),),
        batched=False,
    ),
    PAGE: Model(
        inputs=(Tensor(IMAGE, "TYPE_STRING", (1,)),),
        outputs=(
            Tensor(QUADS, "TYPE_FP32", (-1, 4, 2)),
            Tensor(TEXT, "TYPE_STRING", (-1,)),
            Tensor(CONFIDENCE, "TYPE_FP32", (-1,)),
            Tensor(SCORE, "TYPE_FP32", (-1,)),
            Tensor(FLAG, "TYPE_STRING", (-1,)),
            Tensor(PAGE_FLAG, "TYPE_STRING", (1,)),
        ),
        batched=False,
    ),
}

#: Custom metrics the preprocessor exports on Triton's metrics port (counters, labelled ``model`` and
#: ``reason`` (one of spinrec.preprocess.REJECTIONS) / ``flag`` (one of spinrec.preprocess.FLAGS)).
REJECTED_METRIC = "spin_images_rejected_total"
FLAGGED_METRIC = "spin_readings_flagged_total"

# --------------------------------------------------------------------------- model repository layout
#: Artifacts inside a model repository, relative to its root.
ONNX = Path(ENCODER, "1", "model.onnx")
PLAN = Path(ENCODER, "1", "model.plan")
DETECTOR_ONNX = Path(DETECTOR, "1", "model.onnx")
DETECTOR_PLAN = Path(DETECTOR, "1", "model.plan")
CHECKPOINT = Path(DECODER, "1", "model.safetensors")
CHARSET = Path(DECODER, "1", "charset.txt")
RECORD = Path("build.json")
#: The INT8 encoders per runtime (spinrec.export.quantize; the builder writes them unless ``--no-int8``), file names beside :data:`ONNX`.
INT8_FILES = {"openvino": "model_int8.xml", "onnxruntime": "model_int8.onnx"}
#: What the CPU repository needs to serve (the TensorRT plan is built separately, on a GPU host).
ARTIFACTS = (ONNX, CHECKPOINT, CHARSET, DETECTOR_ONNX, RECORD)
#: The ``--model-config-name`` of the CPU configurations (``<model>/configs/cpu.pbtxt``).
CPU_CONFIG = "cpu"

# -------------------------------------------------------------------------------- SpinBlend plugin
#: The op's name in ONNX graphs, the TensorRT plugin's creator name (C++ ``kPLUGIN_NAME``) and the
#: onnxruntime-extensions PyOp type: TensorRT's parser maps a node to the plugin of the same name.
PLUGIN_OP = "SpinBlend"
PLUGIN_VERSION = "1"
#: The onnxruntime-extensions PyOp domain: ORT needs a registered domain, TensorRT ignores it.
PLUGIN_DOMAIN = "ai.onnx.contrib"
#: The node's inputs in order, and its attributes (the plugin's fields).
PLUGIN_INPUTS = ("image", "weights", "offsets", "gate", "norm_weight", "norm_bias")
PLUGIN_FIELDS = ("exponents", "eps")
#: The kernel and plugin sources (one CMake project), shipped inside the package.
KERNEL_DIR = Path(__file__).resolve().parent / "kernels" / "spinBlendPlugin"
