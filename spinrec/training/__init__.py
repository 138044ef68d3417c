"""Training data and training: synthetic word images (:mod:`.synth`, scene style :mod:`.scene`, photo
backgrounds in ``backgrounds/``), PaddleOCR's SPIN loss (:mod:`.loss`), the training loop (:mod:`.train`) and
function-preserving widening of a trained backbone (:mod:`.widen`)."""
