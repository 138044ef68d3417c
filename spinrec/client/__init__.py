"""Client of the SPIN Triton server: :class:`OcrClient` (library) and ``spinrec-client`` (command line, also ``python -m spinrec.client``)."""

from spinrec.inputs import collect
from spinrec.client.ocr import ClientError, OcrClient, Result

__all__ = ["ClientError", "OcrClient", "Result", "collect"]
