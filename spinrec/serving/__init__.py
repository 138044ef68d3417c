"""Serving SPIN with Triton Inference Server.

The three stages run the package's shared code (:func:`spinrec.preprocess.preprocess_batch`,
:func:`spinrec.runtime.open_encoder`, :class:`spinrec.decoder.HeadDecoder`), plus :mod:`spinrec.serving.stages`
(readings -> output tensors; testable without a server); :mod:`spinrec.serving.triton` adapts them to the Python
backend's request/response API and is imported only inside Triton's Python stub; :mod:`spinrec.serving.launch` starts a server on the model repository,
:mod:`spinrec.serving.front` the proxy that refuses oversized requests in front of it. Names, tensors and
layout come from :mod:`spinrec.contract`.
No serving process imports PyTorch (the decoder is NumPy) and only the encoder loads OpenVINO or ONNX Runtime, so the
preprocessor and decoder processes stay light.
"""
