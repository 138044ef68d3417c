"""``spinrec`` command line: ``convert-paddle``, ``recognize``, ``init``, and ``serve``, ``synth``,
``train``, ``evaluate`` (delegated to their modules)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spinrec_client.inputs import collect
from spinrec.preprocess import ImageError
from spinrec.export.repository import DEFAULT_WEIGHTS


def _convert(args: argparse.Namespace) -> int:
    from spinrec import weights

    model = weights.convert_paddle(args.src, args.dst)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.src} -> {args.dst} ({n:,} parameters)")
    return 0


def _recognize(args: argparse.Namespace) -> int:
    """Read like ``spinrec-client``, in process: the same lines (``FLAG: reason`` on doubtful readings, errors on
    stderr, codec messages folded into them), the same exit status (0 all read and none flagged, 1 some image
    failed or was flagged, 2 nothing could be read), progress on stderr for many images."""
    from tqdm import tqdm

    from spinrec_client.cli import report
    from spinrec_client.ocr import Result
    from spinrec.pipeline import Pipeline

    if args.weights is None and not DEFAULT_WEIGHTS.is_file():
        print(f"spinrec: error: no --weights and no shipped default ({DEFAULT_WEIGHTS})", file=sys.stderr)
        return 2
    if args.char_probs and (args.page or not args.json):
        print(f"spinrec: error: --char-probs {'is for word images, not --page' if args.page else 'needs --json'}", file=sys.stderr)
        return 2
    if args.draw and not args.page:
        print("spinrec: error: --draw draws a photograph's words: add --page", file=sys.stderr)
        return 2
    recognizer = Pipeline.open(args.weights or DEFAULT_WEIGHTS, stop_at_eos=not args.paddle_decoding)
    items = collect(args.images)
    if args.page:
        return _recognize_pages(recognizer, items, args)
    results: list[Result] = []
    with tqdm(total=len(items), desc="recognize", unit="img", file=sys.stderr, disable=len(items) < 2 * recognizer.batch_size) as bar:
        for start in range(0, len(items), recognizer.batch_size):  # one batch at a time, for the progress bar
            chunk = items[start : start + recognizer.batch_size]
            readable = [data for _, data in chunk if not isinstance(data, Exception)]
            read = iter(recognizer.read(readable, capture_native_stderr=True))
            for path, data in chunk:
                r, flag = (data, None) if isinstance(data, Exception) else next(read)
                if isinstance(r, Exception):
                    results.append(Result(path, error=str(r)))
                else:
                    probs = [float(p) for p in r.char_probs] if args.char_probs else None
                    results.append(Result(path, r.text, r.confidence, probs, flag=flag))
            bar.update(len(chunk))
    for r in results:
        report(r, args.json)
    failed, flagged = sum(not r.ok for r in results), sum(r.flagged for r in results)
    if len(results) > 1 or failed or flagged:
        print(f"spinrec: {len(results) - failed}/{len(results)} images read, {flagged} flagged", file=sys.stderr)
    return 1 if failed or flagged else 0


def _recognize_pages(recognizer, items, args: argparse.Namespace) -> int:
    """``recognize --page``: whole photographs in process, spin_page's pipeline with the detector on ONNX Runtime and
    the recognizer in PyTorch; printed, drawn and counted as ``spinrec-client --page`` does."""
    import numpy as np

    from spinrec_client.cli import report_pages
    from spinrec_client.page import PageResult, Word
    from spinrec.page.detector import DetectorError, find_detector
    from spinrec.page.read import PageReader, pipeline_recognizer, refusal
    from spinrec.runtime import open_encoder

    try:
        detector = open_encoder("onnxruntime", find_detector(args.detector), None, "fp32")
    except DetectorError as e:
        print(f"spinrec: error: {e}", file=sys.stderr)
        return 2
    reader = PageReader(detector, pipeline_recognizer(recognizer))

    def read(data: bytes) -> PageResult:
        try:
            page = reader(data)
        except ImageError as e:
            raise ImageError(refusal(e), e.reason) from None
        words = [Word(np.round(w.quad, 1).tolist(), w.text, w.confidence, w.score, w.flag) for w in page.words]
        return PageResult(words, page.note)

    failed, words = report_pages(items, read, ImageError, args)
    print(f"spinrec: {len(items) - failed}/{len(items)} photographs read, {words} words", file=sys.stderr)
    return 1 if failed else 0


def _init(args: argparse.Namespace) -> int:
    from spinrec import weights

    weights.save_untrained(args.dst, args.seed)
    print(f"wrote an untrained SPIN (seed {args.seed}) to {args.dst}: it reads nothing")
    return 0


#: Commands whose arguments all belong to another module's ``main``.
DELEGATED = {
    "serve": ("spinrec.serving.launch", "start Triton on the model repository"),
    "synth": ("spinrec.training.synth", "render synthetic word images"),
    "train": ("spinrec.training.train", "train or export a SPIN model"),
    "evaluate": ("spinrec.evaluation.evaluate", "word accuracy of a model on a labelled set"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spinrec", description="SPIN scene-text recognizer tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert-paddle", help="PaddleOCR best_accuracy.pdparams -> safetensors")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(func=_convert)
    p = sub.add_parser("recognize", help="read word images (or, with --page, whole photographs) with the PyTorch reference pipeline")
    p.add_argument("images", nargs="+", help="image files, directories (their images, recursively), globs, or - (stdin)")
    p.add_argument("--weights", type=Path, help=f"safetensors checkpoint (default: the shipped {DEFAULT_WEIGHTS.name})")
    p.add_argument("--paddle-decoding", action="store_true", help="PaddleOCR's decoding (never stops at eos)")
    p.add_argument("--json", action="store_true", help="JSON lines: path, text, confidence, flag if any (or error)")
    p.add_argument("--char-probs", action="store_true", help="with --json: add each character's probability")
    p.add_argument("--page", action="store_true", help="each image is a whole photograph: find its words and read them (as spin_page does)")
    p.add_argument("--draw", metavar="OUT", help="with --page: draw the words found into OUT (a PNG, or a folder of them for several photographs)")
    p.add_argument("--detector", type=Path, help="with --page: the text detector's ONNX graph (default: PP-OCRv6 det small from the installed rapidocr)")
    p.set_defaults(func=_recognize)
    p = sub.add_parser("init", help="write a deterministic untrained checkpoint (for plumbing tests)")
    p.add_argument("dst")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_init)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=f"{help_text} (options: `spinrec {name} --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[args.command][0]).main(rest, prog=f"spinrec {args.command}")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        from spinrec import weights  # the commands below need PyTorch (the torch extra)
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        from spinrec.export.repository import TORCH_EXTRA

        print(f"spinrec: error: `spinrec {args.command}` runs the network in PyTorch, which is not installed: {TORCH_EXTRA}", file=sys.stderr)
        return 2

    try:
        return args.func(args)
    except (weights.CheckpointError, OSError) as e:
        print(f"spinrec: error: {e}", file=sys.stderr)
        return 2
