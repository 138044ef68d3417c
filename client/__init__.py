"""Client of the SPIN Triton server: :class:`OcrClient` (library) and ``python -m client`` (command line)."""

from client.inputs import collect
from client.ocr import ClientError, OcrClient, Result

__all__ = ["ClientError", "OcrClient", "Result", "collect"]
