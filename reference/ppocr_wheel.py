"""PaddleOCR's own SPIN pre/post-processing, imported from the installed ``paddleocr`` wheel at test time.

``pip install --no-deps paddleocr==2.7.3`` puts PaddleOCR's ``ppocr`` and ``tools`` trees under
``site-packages/paddleocr/`` (the wheel has no model code, but it has the data and post-processing code).
Nothing is copied into this repository: the functions below are PaddleOCR's, run from that install.

Importing them the normal way would run PaddleOCR's aggregator ``__init__`` files, which import every
augmenter and post-processor of PaddleOCR and so need scikit-image, imgaug, lmdb, ... (none of which the
SPIN code uses). Instead the three aggregator packages ``ppocr.postprocess``, ``ppocr.data`` and
``ppocr.data.imaug`` are registered as plain packages pointing at their real directories, without running
their ``__init__``; the leaf modules are then imported unchanged, with their real imports:

- ``ppocr/postprocess/rec_postprocess.py`` (``SPINLabelDecode``): numpy, paddle;
- ``ppocr/data/imaug/rec_img_aug.py`` (``SPINRecResizeImg``): cv2, PIL, paddle.vision and two sibling
  augmentation modules (numpy/cv2 only);
- ``ppocr/data/imaug/label_ops.py`` (``SPINLabelEncode``): shapely (``pip install shapely``) and
  ``ppocr.utils.logging``.

``tools/infer/predict_rec.py`` (``TextRecognizer.resize_norm_img_spin``, the inference path) cannot be
imported that way: at import time it needs ``ppocr.postprocess.build_post_process``, which is defined in
the aggregator ``__init__``. That method does not use ``self``, so :func:`resize_norm_img_spin` compiles
exactly its source, read from the installed file, in a namespace with ``cv2`` and ``np``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import cv2
import numpy as np

WHEEL_VERSION = "2.7.3"
_AGGREGATORS = ("ppocr", "ppocr.postprocess", "ppocr.data", "ppocr.data.imaug")


def root() -> Path | None:
    """``site-packages/paddleocr`` of an installed wheel that has the SPIN sources, else None."""
    spec = importlib.util.find_spec("paddleocr")  # finds the package without running its __init__
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent
    needed = [
        "ppocr/postprocess/rec_postprocess.py",
        "ppocr/data/imaug/rec_img_aug.py",
        "ppocr/data/imaug/label_ops.py",
        "ppocr/utils/dict/spin_dict.txt",
        "tools/infer/predict_rec.py",
    ]
    return path if all((path / n).is_file() for n in needed) else None


def _register_plain_packages(base: Path) -> None:
    for name in _AGGREGATORS:
        existing = sys.modules.get(name)
        if existing is not None:
            continue
        module = types.ModuleType(name)
        module.__path__ = [str(base.joinpath(*name.split(".")))]
        module.__package__ = name
        sys.modules[name] = module
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, module)


def _module(name: str):
    base = root()
    if base is None:
        raise ImportError(f"paddleocr=={WHEEL_VERSION} is not installed (pip install --no-deps paddleocr=={WHEEL_VERSION})")
    _register_plain_packages(base)
    module = importlib.import_module(name)
    if not str(module.__file__).startswith(str(base)):
        raise ImportError(f"{name} was imported from {module.__file__}, not from {base}")
    return module


def spin_dict_path() -> str:
    return str(root() / "ppocr/utils/dict/spin_dict.txt")


def rec_postprocess():
    """``ppocr.postprocess.rec_postprocess`` (has ``SPINLabelDecode``)."""
    return _module("ppocr.postprocess.rec_postprocess")


def rec_img_aug():
    """``ppocr.data.imaug.rec_img_aug`` (has ``SPINRecResizeImg``)."""
    return _module("ppocr.data.imaug.rec_img_aug")


def label_ops():
    """``ppocr.data.imaug.label_ops`` (has ``SPINLabelEncode``); needs shapely."""
    return _module("ppocr.data.imaug.label_ops")


def resize_norm_img_spin():
    """PaddleOCR's ``TextRecognizer.resize_norm_img_spin`` as a function ``f(img) -> [1, 32, 100]`` float32.

    Compiled from the method's source in the installed ``tools/infer/predict_rec.py`` (file name kept
    for tracebacks); it refers to nothing but ``cv2`` and ``np``.
    """
    base = root()
    if base is None:
        raise ImportError(f"paddleocr=={WHEEL_VERSION} is not installed")
    path = base / "tools/infer/predict_rec.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TextRecognizer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "resize_norm_img_spin":
                    names = {n.id for n in ast.walk(item) if isinstance(n, ast.Name)}
                    unknown = names - {"self", "img", "mean", "std", "stdinv", "cv2", "np", "tuple"}
                    if unknown:
                        raise ImportError(f"resize_norm_img_spin uses names this loader does not provide: {unknown}")
                    namespace = {"cv2": cv2, "np": np}
                    exec(compile(ast.Module(body=[item], type_ignores=[]), str(path), "exec"), namespace)
                    method = namespace["resize_norm_img_spin"]
                    return lambda img: method(None, img)
    raise ImportError(f"TextRecognizer.resize_norm_img_spin not found in {path}")
