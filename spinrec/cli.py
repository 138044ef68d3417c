"""``spinrec`` command line: ``convert-paddle``, ``recognize``, ``init``, and ``serve``, ``synth``,
``train``, ``evaluate`` (delegated to their modules)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spinrec.inputs import collect
from spinrec.preprocess import ImageError
from spinrec.export.repository import DEFAULT_WEIGHTS


def _convert(args: argparse.Namespace) -> int:
    from spinrec import weights

    model = weights.convert_paddle(args.src, args.dst)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.src} -> {args.dst} ({n:,} parameters)")
    return 0


def _recognize(args: argparse.Namespace) -> int:
    from spinrec.pipeline import Pipeline

    if args.weights is None and not DEFAULT_WEIGHTS.is_file():
        print(f"spinrec: error: no --weights and no shipped default ({DEFAULT_WEIGHTS})", file=sys.stderr)
        return 2
    recognizer = Pipeline.open(args.weights or DEFAULT_WEIGHTS, stop_at_eos=not args.paddle_decoding)
    items = collect(args.images)
    readable = [i for i, (_, data) in enumerate(items) if not isinstance(data, Exception)]
    readings = dict(zip(readable, recognizer.recognize([items[i][1] for i in readable])))
    failed = 0
    for i, (path, data) in enumerate(items):
        r = readings.get(i, data)
        if isinstance(r, Exception):
            failed += 1
            row = {"path": path, "error": str(r)}
        else:
            row = {"path": path, "text": r.text, "confidence": r.confidence}
        if args.json:
            print(json.dumps(row))
        elif "error" in row:
            print(f"{path}\tERROR: {row['error']}", file=sys.stderr)
        else:
            print(f"{path}\t{r.text}\t{r.confidence:.4f}")
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
    p = sub.add_parser("recognize", help="read word images with the PyTorch reference pipeline")
    p.add_argument("images", nargs="+", help="image files, directories (their images, recursively), globs, or - (stdin)")
    p.add_argument("--weights", type=Path, help=f"safetensors checkpoint (default: the shipped {DEFAULT_WEIGHTS.name})")
    p.add_argument("--paddle-decoding", action="store_true", help="PaddleOCR's decoding (never stops at eos)")
    p.add_argument("--json", action="store_true", help="JSON lines output")
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

        return importlib.import_module(DELEGATED[args.command][0]).main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from spinrec import weights  # the commands below need PyTorch (the torch extra)

    try:
        return args.func(args)
    except (weights.CheckpointError, OSError) as e:
        print(f"spinrec: error: {e}", file=sys.stderr)
        return 2
