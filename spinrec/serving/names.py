"""Names clients see, shared by the Triton models, the client and the tests: the ensemble, its tensors,
and the preprocessor's custom metrics.

Per image (one row of the batch): ``IMAGE`` in; ``TEXT``, ``CONFIDENCE``, ``CHAR_PROBS`` (on request),
``ERROR`` (empty when the image was read, else why it was refused; its ``TEXT`` is then empty and its
``CONFIDENCE`` 0) and ``FLAG`` (empty, or why the reading of a degenerate image is doubtful, starting with
one of :data:`spinrec.preprocess.FLAGS`) out.
"""

MODEL = "spin_ocr"
IMAGE = "IMAGE"
TEXT = "TEXT"
CONFIDENCE = "CONFIDENCE"
CHAR_PROBS = "CHAR_PROBS"
ERROR = "ERROR"
FLAG = "FLAG"
#: The same per-image messages between the steps (preprocessor -> decoder, which returns them as ERROR, FLAG).
STEP_ERROR = "error"
STEP_FLAG = "flag"

#: Custom metrics the preprocessor exports on Triton's metrics port (counters, labelled ``model`` and
#: ``reason`` (one of spinrec.preprocess.REJECTIONS) / ``flag`` (one of spinrec.preprocess.FLAGS)).
REJECTED_METRIC = "spin_images_rejected_total"
FLAGGED_METRIC = "spin_readings_flagged_total"
