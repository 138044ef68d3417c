"""Triton Python-backend models of the SPIN pipeline; each ``model.py`` in the model repository just
re-exports one of these classes as ``TritonPythonModel``.

Importable only inside Triton's Python stub (it provides ``triton_python_backend_utils``).
Dynamic batching hands ``execute`` a list of requests, each with its own ``[b_i, ...]`` inputs: every
model concatenates them, runs the stage once over the whole batch, and splits the result back. A bad
image costs only its own row: the preprocessor reports it in that row's ``error`` and the others go on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from spinrec.decoding import Reading
from spinrec.export.repository import read_record
from spinrec.preprocess import FLAGS, REJECTIONS, preprocess_outcomes
from spinrec.contract import (
    CHAR_PROBS, CONFIDENCE, DETECTOR, DETECTOR_INPUT, DETECTOR_OUTPUT, ENCODER_INPUT, ENCODER_OUTPUT, ENSEMBLE, ENSEMBLE_MAX_BATCH, ERROR, FLAG,
    FLAGGED_METRIC, IMAGE, MAX_WORDS, PAGE_FLAG, QUADS, REJECTED_METRIC, SCORE, STEP_ERROR, STEP_FLAG, TEXT,
)

#: What the decoder returns for a row whose image was refused (the features of its all-zero image are noise).
REFUSED = Reading("", 0.0, np.zeros(0, np.float32))


def _strings(values) -> np.ndarray:
    """Per-row messages (None: fine) -> a TYPE_STRING ``[N, 1]`` tensor, empty strings where fine."""
    return np.array([[("" if v is None else str(v)).encode("utf-8")] for v in values], dtype=object).reshape(len(values), 1)


class _StageModel:
    """Config parameters, the version folder, and the gather/split plumbing shared by the models."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.name = args["model_name"]
        self.args = args
        self.setup()

    def setup(self) -> None:
        raise NotImplementedError

    def int_param(self, key: str, default: int) -> int:
        value = self.params.get(key, str(default))
        try:
            return int(value)
        except ValueError:
            raise pb_utils.TritonModelException(f"{self.name}: parameter {key}={value!r} is not an integer") from None

    def artifact(self, key: str, default: str) -> Path:
        path = self.version_dir / self.params.get(key, default)
        if not path.is_file():
            raise pb_utils.TritonModelException(
                f"{self.name}: {path} is missing; build the repository first (python -m builders.build_repository)"
            )
        return path

    @staticmethod
    def rows(arrays) -> list[slice]:
        """Each request's rows in the concatenation of ``arrays`` (one per request)."""
        bounds = np.cumsum([0] + [len(a) for a in arrays])
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def gather(self, requests, name: str) -> tuple[np.ndarray, list[slice]]:
        """All requests' ``name`` inputs stacked on the batch axis, and each request's rows."""
        arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
        return np.concatenate(arrays), self.rows(arrays)


class PreprocessModel(_StageModel):
    """``IMAGE`` (encoded bytes, ``[b,1]``) -> ``image`` (float32 ``[b,1,32,100]``), ``error`` and ``flag``
    (strings ``[b,1]``, which the decoder returns as ``ERROR`` and ``FLAG``: :mod:`spinrec.contract`).
    A bad image gets an all-zero row and its reason in ``error``; the request and the other images go on. Every rejection is logged once, with the
    request id, and counted in :data:`REJECTED_METRIC`; every flag in :data:`FLAGGED_METRIC`."""

    def setup(self) -> None:
        import cv2
        from PIL import Image

        cv2.setNumThreads(self.int_param("threads", 1))
        # spinrec.preprocess.MAX_PIXELS, checked on the same header, is the one pixel limit here; Pillow's
        # larger one would otherwise refuse the biggest images first, without their size.
        Image.MAX_IMAGE_PIXELS = None
        # The families must outlive their metrics (the backend refuses to count into a deleted family).
        self.families = (
            pb_utils.MetricFamily(REJECTED_METRIC, "Images refused by the preprocessor, by reason", pb_utils.MetricFamily.COUNTER),
            pb_utils.MetricFamily(FLAGGED_METRIC, "Images read but flagged as degenerate, by flag", pb_utils.MetricFamily.COUNTER),
        )
        self.rejected = {r: self.families[0].Metric({"model": self.name, "reason": r}) for r in REJECTIONS}
        self.flagged = {f: self.families[1].Metric({"model": self.name, "flag": f}) for f in FLAGS}

    def execute(self, requests):
        images, rows = self.gather(requests, IMAGE)
        outcomes = preprocess_outcomes([bytes(row[0]) for row in images], capture_native_stderr=True)
        responses = []
        for request, r in zip(requests, rows):
            errors, flags = outcomes.errors[r], outcomes.flags[r]
            self.account(request, errors, flags)
            tensors = [pb_utils.Tensor(STEP_ERROR, _strings(errors)), pb_utils.Tensor(STEP_FLAG, _strings(flags))]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(ENCODER_INPUT, outcomes.batch[r]), *tensors]))
        return responses

    def account(self, request, errors, flags) -> None:
        """Log and count one request's rejections and flags."""
        request_id = request.request_id() or "(no id)"
        for i, e in enumerate(errors):
            if e is not None:
                self.rejected[e.reason].increment(1)
                pb_utils.Logger.log_warn(f"{self.name}: request {request_id} {IMAGE}[{i}] rejected ({e.reason}): {e}")
        for i, f in enumerate(flags):
            if f is not None:
                self.flagged[f.split(":", 1)[0]].increment(1)
                pb_utils.Logger.log_verbose(f"{self.name}: request {request_id} {IMAGE}[{i}] flagged: {f}")


class EncoderModel(_StageModel):
    """``image`` -> ``features`` with the exported ONNX graph in ONNX Runtime or OpenVINO (parameters
    ``runtime`` and ``precision``; the CPU stand-in for the TensorRT engine, same inputs and outputs)."""

    def setup(self) -> None:
        from spinrec.runtime import SERVED, open_encoder

        runtime = self.params.get("runtime", "onnxruntime")
        try:
            if runtime not in SERVED:  # the others need PyTorch or a GPU: not in this CPU stand-in
                raise ValueError(f"encoder runtime {runtime!r}: expected one of {', '.join(SERVED)}")
            self.encoder_graph = self.artifact("onnx_file", "model.onnx")
            self.encoder = open_encoder(runtime, self.encoder_graph, self.int_param("threads", 1), self.params.get("precision", "fp32"))
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{self.name}: {e}") from None
        # Which runtime and precision serve is the first thing to know about a CPU server's speed and texts.
        asked = "" if self.encoder.requested == self.encoder.precision else f" ({self.encoder.requested} configured, see the warning)"
        built = (read_record(Path(self.encoder_graph).parents[2]) or {}).get("precision")
        if built and self.encoder.requested == "int8":
            asked += f"; the build served {built['served']}: {built['reason']}"
        pb_utils.Logger.log_info(f"{self.name}: encoder on {self.encoder.name}, precision {self.encoder.precision}{asked}")

    def execute(self, requests):
        images, rows = self.gather(requests, ENCODER_INPUT)
        features = self.encoder(images)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(ENCODER_OUTPUT, features[r])]) for r in rows]


class DecoderModel(_StageModel):
    """``features``, ``error``, ``flag`` -> ``TEXT``, ``CONFIDENCE``, ``ERROR``, ``FLAG`` and, for requests that
    ask for it, ``CHAR_PROBS``; rows whose image the preprocessor refused (``error`` not empty) read as empty
    text, confidence 0.

    Parameter ``stop_at_eos``: ``true`` (default) keeps the characters before the first ``eos``;
    ``false`` is PaddleOCR's exact decoding (see :func:`spinrec.decoding.decode`).
    Parameter ``device``: ``cpu`` (default, NumPy) or ``gpu``: CuPy on the instance's GPU, with the
    features taken by DLPack wherever Triton hands them over (on the GPU when the config sets
    ``FORCE_CPU_ONLY_INPUT_TENSORS: no`` and the encoder left them there).
    """

    def setup(self) -> None:
        from spinrec.charset import Charset
        from spinrec.decoder import HeadDecoder

        stop = self.params.get("stop_at_eos", "true").strip().lower()
        if stop not in ("true", "false"):
            raise pb_utils.TritonModelException(f"{self.name}: parameter stop_at_eos must be true or false, got {stop!r}")
        self.device = self.params.get("device", "cpu").strip().lower()
        charset = Charset.from_file(str(self.artifact("charset_file", "charset.txt")))
        try:
            if self.device == "gpu":
                from spinrec.decoder import cupy_module

                cupy_module().cuda.Device(int(self.args.get("model_instance_device_id", 0))).use()
            self.decoder = HeadDecoder(self.artifact("weights_file", "model.safetensors"), charset, stop == "true", self.device)
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{self.name}: {e}") from None

    def gather_device(self, requests) -> tuple[object, list[slice]]:
        """:meth:`gather` for the GPU decoder: every request's features as a CuPy array, concatenated on
        the device. GPU tensors come by DLPack (no copy); Triton may still hand over host tensors (e.g.
        when the encoder ran on CPU), which CuPy cannot import by DLPack, so those are uploaded."""
        import cupy

        tensors = [pb_utils.get_input_tensor_by_name(r, ENCODER_OUTPUT) for r in requests]
        arrays = [cupy.asarray(t.as_numpy()) if t.is_cpu() else cupy.from_dlpack(t.to_dlpack()) for t in tensors]
        return cupy.concatenate(arrays), self.rows(arrays)

    def execute(self, requests):
        from spinrec.serving.stages import pack_readings

        features, rows = self.gather_device(requests) if self.device == "gpu" else self.gather(requests, ENCODER_OUTPUT)
        readings = self.decoder(features)
        errors, _ = self.gather(requests, STEP_ERROR)
        flags, _ = self.gather(requests, STEP_FLAG)
        for i in np.flatnonzero([len(e[0]) > 0 for e in errors]):
            readings[i] = REFUSED
        responses = []
        for request, r in zip(requests, rows):
            text, confidence, char_probs = pack_readings(readings[r])
            outputs = [pb_utils.Tensor(TEXT, text), pb_utils.Tensor(CONFIDENCE, confidence)]
            outputs += [pb_utils.Tensor(ERROR, errors[r]), pb_utils.Tensor(FLAG, flags[r])]
            if CHAR_PROBS in request.requested_output_names():
                outputs.append(pb_utils.Tensor(CHAR_PROBS, char_probs))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses


class DetectorModel(_StageModel):
    """``pixels`` -> ``probability`` with the detector's ONNX graph on OpenVINO or ONNX Runtime, float32 (the CPU
    stand-in for its TensorRT engine, same inputs and outputs)."""

    def setup(self) -> None:
        from spinrec.runtime import SERVED, open_encoder

        runtime = self.params.get("runtime", "openvino")
        if runtime not in SERVED:
            raise pb_utils.TritonModelException(f"{self.name}: runtime {runtime!r}: expected one of {', '.join(SERVED)}")
        # The encoder's runtime layer runs any one-input, one-output graph; the detector's shapes are dynamic, one per
        # photograph size, so OpenVINO's per-shape kernel cache is bounded (its default grows without end in practice).
        options = {"runtime_cache": self.int_param("runtime_cache", 16)} if runtime == "openvino" else {}
        self.detector = open_encoder(runtime, self.artifact("onnx_file", "model.onnx"), self.int_param("threads", 1), "fp32", **options)
        pb_utils.Logger.log_info(f"{self.name}: detector on {self.detector.name}, precision fp32")

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(DETECTOR_OUTPUT, self.detector(pb_utils.get_input_tensor_by_name(r, DETECTOR_INPUT).as_numpy()))])
            for r in requests
        ]


class _ServerError(RuntimeError):
    """A model this one called answered with an error."""


def _call(model: str, inputs: list, outputs: list[str]) -> list[np.ndarray]:
    """One BLS request to ``model`` inside this server; its outputs as arrays, in the order asked for."""
    response = pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs).exec()
    if response.has_error():
        raise _ServerError(f"{model}: {response.error().message()}")
    return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]


class PageModel(_StageModel):
    """``IMAGE`` (one photograph) -> ``QUADS``, ``TEXT``, ``CONFIDENCE``, ``SCORE``, ``FLAG`` (a row per word, in
    reading order) and ``PAGE_FLAG``: :class:`spinrec.page.read.PageReader` with ``spin_detector`` and ``spin_ocr``
    called in the server (BLS), every word of the photograph in one ``spin_ocr`` request (chunks of
    :data:`~spinrec.contract.ENSEMBLE_MAX_BATCH`). A photograph that cannot be read fails its request with the
    reason (logged and counted as the preprocessor's rejections are); a page without text has no rows."""

    def setup(self) -> None:
        import cv2

        from spinrec.page.detect import DetectorOptions
        from spinrec.page.read import PageReader

        cv2.setNumThreads(self.int_param("threads", 1))
        try:
            options = DetectorOptions.from_params(self.params)
            self.reader = PageReader(self.detect, self.recognize, options, self.params.get("tall", "both"), MAX_WORDS)
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{self.name}: {e}") from None
        self.families = (pb_utils.MetricFamily(REJECTED_METRIC, "Images refused by the preprocessor, by reason", pb_utils.MetricFamily.COUNTER),)
        self.rejected = {r: self.families[0].Metric({"model": self.name, "reason": r}) for r in REJECTIONS}

    @staticmethod
    def detect(pixels: np.ndarray) -> np.ndarray:
        return _call(DETECTOR, [pb_utils.Tensor(DETECTOR_INPUT, pixels)], [DETECTOR_OUTPUT])[0]

    @staticmethod
    def recognize(crops) -> list[tuple[str, float, str]]:
        import cv2

        from spinrec.page.read import CROP_FORMAT

        encoded = [cv2.imencode(CROP_FORMAT, c)[1].tobytes() for c in crops]
        out = []
        for start in range(0, len(encoded), ENSEMBLE_MAX_BATCH):
            chunk = np.array(encoded[start : start + ENSEMBLE_MAX_BATCH], dtype=object).reshape(-1, 1)
            text, confidence, error, flag = _call(ENSEMBLE, [pb_utils.Tensor(IMAGE, chunk)], [TEXT, CONFIDENCE, ERROR, FLAG])
            for t, c, e, f in zip(text[:, 0], confidence[:, 0], error[:, 0], flag[:, 0]):
                out.append((t.decode("utf-8"), float(c), f.decode("utf-8") or (f"error: {e.decode('utf-8')}" if e else "")))
        return out

    def execute(self, requests):
        from spinrec.page.read import refusal
        from spinrec.preprocess import ImageError

        responses = []
        for request in requests:
            image = bytes(pb_utils.get_input_tensor_by_name(request, IMAGE).as_numpy().reshape(-1)[0])
            try:
                page = self.reader(image)
            except ImageError as e:
                self.rejected[e.reason].increment(1)
                pb_utils.Logger.log_warn(f"{self.name}: request {request.request_id() or '(no id)'} {IMAGE} rejected ({e.reason}): {e}")
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(refusal(e), pb_utils.TritonError.INVALID_ARG)))
                continue
            except _ServerError as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
                continue
            words = page.words
            strings = lambda values: np.array([v.encode("utf-8") for v in values], dtype=object)  # noqa: E731
            outputs = [
                pb_utils.Tensor(QUADS, np.array([w.quad for w in words], np.float32).reshape(-1, 4, 2)),
                pb_utils.Tensor(TEXT, strings([w.text for w in words])),
                pb_utils.Tensor(CONFIDENCE, np.array([w.confidence for w in words], np.float32)),
                pb_utils.Tensor(SCORE, np.array([w.score for w in words], np.float32)),
                pb_utils.Tensor(FLAG, strings([w.flag for w in words])),
                pb_utils.Tensor(PAGE_FLAG, strings([page.note])),
            ]
            pb_utils.Logger.log_verbose(f"{self.name}: {len(words)} words; seconds " + ", ".join(f"{k} {v:.4f}" for k, v in page.seconds.items()))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
