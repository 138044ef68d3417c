"""Accuracy on labelled word images: PaddleOCR's recognition metric (:mod:`.metrics`) and the evaluation of a
backend, in process or through the server (:mod:`.evaluate`)."""
