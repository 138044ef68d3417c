"""Whole photographs: a DB text detector in front of SPIN (photograph bytes -> detect -> crop -> spin_ocr -> words).

:mod:`spinrec.page.detect` holds the detector's pre- and post-processing and the word crop; :mod:`spinrec.page.read`
the pipeline, the same in process and in Triton's ``spin_page`` model; :mod:`spinrec.page.detector` finds and checks
the detector's ONNX graph the repository builder installs; :mod:`spinrec.page.synthetic` draws the synthetic page the
tests and the detector engine's verification read.
"""
