"""Client of the SPIN Triton server: :class:`OcrClient` (library) and ``spinrec-client`` (command line, also
``python -m spinrec_client``). Installs on its own (``pip install ./client``): tritonclient, NumPy and Pillow,
nothing of the server. :mod:`spinrec_client.contract` is the public serving contract, which the server imports."""

from spinrec_client.inputs import collect
from spinrec_client.ocr import ClientError, OcrClient, Result

__all__ = ["ClientError", "OcrClient", "Result", "collect"]
