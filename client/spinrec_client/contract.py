"""The public part of the serving contract: what a client sends and reads back. Standard library only.

The client owns these names and the server imports them (:mod:`spinrec.contract` re-exports every one and
adds the server-only facts: the internal steps, shapes, artifact layout and plugin identity). Why here:

- the client must work without the server package installed (``pip install ./client`` alone), so the
  names cannot live in ``spinrec``;
- one owner: the server imports what the client publishes, never a copy, so the two cannot drift apart
  (``tests/test_contract.py`` checks every ``config.pbtxt`` against the names through :mod:`spinrec.contract`);
- reading the names from the server's model metadata instead was rejected: the metadata lists names and
  datatypes, but what each tensor means (``ERROR`` empty when the image was read, ``FLAG`` why a reading is
  doubtful, ``CHAR_PROBS`` only on request) still has to be known to the client, so the client would carry
  the contract anyway and only learn later, at run time, that the server changed it.
"""

from __future__ import annotations

#: The ensemble a client calls (``spin_preprocess -> spin_encoder -> spin_decoder`` on the server).
ENSEMBLE = "spin_ocr"

# ---------------------------------------------------------------------------------------- tensors
#: What clients see, per image (one row of the batch): ``IMAGE`` (encoded PNG, JPEG, ...; BYTES ``[-1, 1]``)
#: in; ``TEXT``, ``CONFIDENCE``, ``CHAR_PROBS`` (on request), ``ERROR`` (empty when the image was read, else
#: why it was refused; its ``TEXT`` is then empty and its ``CONFIDENCE`` 0) and ``FLAG`` (empty, or why the
#: reading of a degenerate image is doubtful: ``tiny: ...``, ``aspect_ratio: ...`` or ``blank: ...``) out.
IMAGE = "IMAGE"
TEXT = "TEXT"
CONFIDENCE = "CONFIDENCE"
CHAR_PROBS = "CHAR_PROBS"
ERROR = "ERROR"
FLAG = "FLAG"
#: The outputs, in the order the ensemble declares them.
OUTPUTS = (TEXT, CONFIDENCE, CHAR_PROBS, ERROR, FLAG)

# --------------------------------------------------------------------------------------------- limits
#: Largest accepted encoded image, in bytes (the server's preprocessor refuses larger ones per image; the client
#: does not send them).
MAX_BYTES = 8 * 1024 * 1024
#: Largest request body the server's front proxy lets through to Triton: one image of MAX_BYTES and room for
#: the request's own header (JSON / protobuf framing); larger ones are refused there (HTTP 413). The client
#: sizes its batches under it.
MAX_REQUEST_BYTES = MAX_BYTES + 64 * 1024

# ---------------------------------------------------------------------------------- whole photographs
#: The model that reads a whole photograph in one request: the text detector, then :data:`ENSEMBLE` on every
#: word it finds, inside the server.
PAGE = "spin_page"
#: In: ``IMAGE``, one photograph (BYTES ``[1]``). Out, one row per word in reading order: ``QUADS`` (FP32
#: ``[W, 4, 2]``, the corners clockwise from the word's top left, in the photograph's pixels), ``TEXT``,
#: ``CONFIDENCE`` and ``FLAG`` (as for a crop) and ``SCORE`` (FP32 ``[W]``, the detector's); ``PAGE_FLAG``
#: (BYTES ``[1]``): empty, or what the page could not do in full (``words_limited: ...``). A photograph the
#: server cannot read fails the request with the reason; one without text is an answer with no rows.
QUADS = "QUADS"
SCORE = "SCORE"
PAGE_FLAG = "PAGE_FLAG"
PAGE_OUTPUTS = (QUADS, TEXT, CONFIDENCE, SCORE, FLAG, PAGE_FLAG)
#: Most words read in one photograph: past it, the ones the detector is surest of (a dense page of small
#: print has a few hundred words; this bounds the work and the answer of one request).
MAX_WORDS = 500
