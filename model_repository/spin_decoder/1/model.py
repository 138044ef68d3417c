"""spin_decoder: sequence features -> TEXT, CONFIDENCE, CHAR_PROBS (code: spinrec.serving.triton)."""

from spinrec.serving.triton import DecoderModel as TritonPythonModel  # noqa: F401
