"""Client of the SPIN Triton server: :class:`OcrClient` (word images), :class:`PageClient` (whole photographs) and
``spinrec-client`` (command line, also ``python -m spinrec_client``). Installs on its own (``pip install ./client``): tritonclient, NumPy and Pillow,
nothing of the server. :mod:`spinrec_client.contract` is the public serving contract, which the server imports."""

from spinrec_client.inputs import collect
from spinrec_client.ocr import ClientError, OcrClient, Result
from spinrec_client.page import PageClient, PageError, PageResult, Word

__all__ = ["ClientError", "OcrClient", "PageClient", "PageError", "PageResult", "Result", "Word", "collect"]
