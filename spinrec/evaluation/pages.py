"""Whole-photograph reading measured by the ICDAR 2015 Robust Reading rules (task 4.1 detection, task 4.4
end-to-end, generic: no lexicon), on ground truth in the competition's format.

    python -m spinrec.evaluation.pages [--pages ../shared/real_pages_dev] [--url 127.0.0.1:8001] [--out reports/pages_dev]

Ground truth: ``gt/gt_img_N.txt`` per ``images/img_N.jpg``, one word a line, ``x1,y1,...,x4,y4,transcription``,
``###`` for text that does not count ("do not care"). The rules, as the competition's scripts apply them:

- a detection that lies more than half (by its own area) inside a do-not-care region is dropped before matching;
- detections and counted words match one to one, in ground-truth order, when their quadrilaterals' intersection over
  union is at least :data:`IOU` (polygons by Shapely);
- an end-to-end hit is a match whose texts are equal ignoring case;
- precision = hits / detections kept, recall = hits / counted words, F their harmonic mean, summed over all images.

Compared, on the same photographs: our server (``spin_page``: PP-OCRv6's detector + SPIN) and ``rapidocr``'s own whole
pipeline (PP-OCRv6 det + direction classifier + PP-OCRv6 rec small), the installable alternative.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

IOU = 0.5
#: Share of a detection's own area inside a do-not-care region past which it is dropped.
DONT_CARE_OVERLAP = 0.5
DONT_CARE = "###"


@dataclass
class Box:
    quad: np.ndarray  #: [4, 2]
    text: str


def read_ground_truth(path: Path) -> tuple[list[Box], list[Box]]:
    """``gt_img_N.txt`` -> (counted words, do-not-care regions)."""
    care, dont = [], []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if not line.strip():
            continue
        parts = line.split(",", 8)
        box = Box(np.array([float(v) for v in parts[:8]], np.float32).reshape(4, 2), parts[8].strip())
        (dont if box.text == DONT_CARE else care).append(box)
    return care, dont


def _polygon(quad: np.ndarray):
    from shapely.geometry import Polygon

    polygon = Polygon(np.asarray(quad, np.float64))
    return polygon if polygon.is_valid else polygon.buffer(0)


def _iou(a, b) -> float:
    inter = a.intersection(b).area
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Counts:
    words: int = 0  #: counted ground-truth words
    detections: int = 0  #: detections kept (not inside do-not-care)
    matched: int = 0  #: detection matches (IoU)
    hits: int = 0  #: end-to-end hits (IoU and text)

    def add(self, other: Counts) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @staticmethod
    def prf(good: int, detections: int, words: int) -> dict[str, float]:
        p = good / detections if detections else 0.0
        r = good / words if words else 0.0
        return {"precision": p, "recall": r, "f": 2 * p * r / (p + r) if p + r else 0.0}

    def summary(self) -> dict:
        return {
            "detection": self.prf(self.matched, self.detections, self.words),
            "end_to_end": self.prf(self.hits, self.detections, self.words),
            **vars(self),
        }


def score_image(predicted: Sequence[Box], care: Sequence[Box], dont: Sequence[Box]) -> tuple[Counts, list[str]]:
    """One photograph's counts, and per prediction its outcome: ``hit``, ``matched`` (box right, text wrong),
    ``false`` (no word there) or ``ignored`` (inside a do-not-care region)."""
    dont_polys = [_polygon(b.quad) for b in dont]
    care_polys = [_polygon(b.quad) for b in care]
    outcome = []
    kept = []
    for i, p in enumerate(predicted):
        poly = _polygon(p.quad)
        inside = max((poly.intersection(d).area / poly.area for d in dont_polys), default=0.0) if poly.area > 0 else 0.0
        if inside > DONT_CARE_OVERLAP:
            outcome.append("ignored")
        else:
            outcome.append("false")
            kept.append((i, poly))
    counts = Counts(words=len(care), detections=len(kept))
    taken: set[int] = set()
    for g, gpoly in enumerate(care_polys):
        for i, poly in kept:
            if i in taken or _iou(gpoly, poly) < IOU:
                continue
            taken.add(i)
            counts.matched += 1
            if predicted[i].text.lower() == care[g].text.lower():
                counts.hits += 1
                outcome[i] = "hit"
            else:
                outcome[i] = "matched"
            break
    return counts, outcome


def images_and_truth(pages: Path) -> list[tuple[Path, Path]]:
    """``(image, ground truth)`` pairs of a ``images/`` + ``gt/`` folder, in name order."""
    pairs = []
    for image in sorted((pages / "images").glob("*.jpg")):
        truth = pages / "gt" / f"gt_{image.stem}.txt"
        if truth.is_file():
            pairs.append((image, truth))
    return pairs


def evaluate(predictions: dict[str, list[Box]], pairs: Iterable[tuple[Path, Path]]) -> tuple[dict, dict[str, list[str]]]:
    """Summed counts and P/R/F over ``pairs``, and each image's per-prediction outcomes."""
    total, outcomes = Counts(), {}
    for image, truth in pairs:
        counts, outcome = score_image(predictions[image.name], *read_ground_truth(truth))
        total.add(counts)
        outcomes[image.name] = outcome
    return total.summary(), outcomes


def read_with_server(images: Sequence[Path], url: str, protocol: str) -> tuple[dict[str, list[Box]], list[float]]:
    from spinrec_client.page import PageClient

    predictions, seconds = {}, []
    with PageClient(url, protocol) as client:
        for image in images:
            start = time.perf_counter()
            words = client.read(image.read_bytes()).words
            seconds.append(time.perf_counter() - start)
            predictions[image.name] = [Box(np.array(w.quad, np.float32), w.text) for w in words]
    return predictions, seconds


def read_with_rapidocr(images: Sequence[Path]) -> tuple[dict[str, list[Box]], list[float]]:
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "warning"})
    predictions, seconds = {}, []
    for image in images:
        start = time.perf_counter()
        result = engine(str(image))
        seconds.append(time.perf_counter() - start)
        quads = [] if result.boxes is None else result.boxes
        texts = [] if result.txts is None else result.txts
        predictions[image.name] = [Box(np.array(q, np.float32), t) for q, t in zip(quads, texts)]
    return predictions, seconds


def truth_crops(pairs: Iterable[tuple[Path, Path]]) -> tuple[list[np.ndarray], list[str]]:
    """Every counted word cut out of its photograph at its ground-truth quadrilateral (the same perspective crop
    as spin_page's), with its text: recognition alone, detection taken out of the comparison."""
    import cv2

    from spinrec.page.detect import crop

    crops, texts = [], []
    for image, truth in pairs:
        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        for box in read_ground_truth(truth)[0]:
            crops.append(crop(bgr, box.quad))
            texts.append(box.text)
    return crops, texts


def recognition_on_truth(pairs: Sequence[tuple[Path, Path]], url: str, protocol: str, anchor: bool) -> dict[str, int]:
    """Words read right (ignoring case) from the ground-truth crops: by the server's ``spin_ocr`` and by rapidocr's
    recognizer alone (no detector, no direction classifier)."""
    import cv2

    from spinrec_client import OcrClient

    crops, texts = truth_crops(pairs)
    encoded = [(str(i), cv2.imencode(".png", c)[1].tobytes()) for i, c in enumerate(crops)]
    ours = [r.text or "" for r in OcrClient(url, protocol).recognize(encoded)]
    out = {"words": len(texts), "spin_ocr": sum(o.lower() == t.lower() for o, t in zip(ours, texts))}
    if anchor:
        from rapidocr import RapidOCR

        engine = RapidOCR(params={"Global.log_level": "warning"})
        theirs = [((engine(c, use_det=False, use_cls=False, use_rec=True).txts or [""])[0]) for c in crops]
        out["rapidocr_rec"] = sum(o.lower() == t.lower() for o, t in zip(theirs, texts))
    return out


#: The demonstration picture's words: (text, centre, angle in degrees, Hershey scale, BGR colour).
DEMO_WORDS = (
    ("coffee", (330, 170), 4, 3.2, (30, 30, 200)),
    ("open", (900, 180), -6, 2.6, (250, 250, 250)),
    ("daily", (640, 400), 0, 2.4, (20, 20, 20)),
    ("espresso", (380, 600), -10, 2.2, (240, 240, 240)),
    ("2026", (960, 560), 8, 2.4, (40, 200, 240)),
)


def demo_photograph() -> bytes:
    """A 1280x720 JPEG of words painted at angles on the package's brick-wall photograph (CC0, training backgrounds):
    made only from the project's own files, for the README's drawn result."""
    import cv2

    from spinrec.page.synthetic import synthetic_page

    # The file only: importing spinrec.training (above evaluation in the package's layers) is not needed for a picture.
    wall = cv2.imread(str(Path(__file__).resolve().parents[1] / "training" / "backgrounds" / "brick.jpg"), cv2.IMREAD_COLOR)
    page, _ = synthetic_page(DEMO_WORDS, background=wall, font=cv2.FONT_HERSHEY_DUPLEX, thickness=5)
    return cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def write_demo(path: Path, url: str, protocol: str) -> None:
    """:func:`demo_photograph` read by the server's ``spin_page`` and drawn (the README's picture)."""
    from spinrec_client.draw import draw_words
    from spinrec_client.page import PageClient

    photo = demo_photograph()
    with PageClient(url, protocol) as client:
        words = client.read(photo).words
    draw_words(photo, [(w.quad, f"{w.text} {w.confidence:.2f}", None) for w in words], caption="spinrec-client --page demo.jpg --draw out.png").save(path)
    print(f"demo: {len(words)} words: {' '.join(w.text for w in words)} -> {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spinrec.evaluation.pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=Path, default=Path("../shared/real_pages_dev"), help="images/ + gt/ folder (default: %(default)s)")
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server (default: %(default)s)")
    parser.add_argument("-i", "--protocol", default="grpc", choices=("grpc", "http"))
    parser.add_argument("--no-anchor", action="store_true", help="skip rapidocr")
    parser.add_argument("--out", type=Path, help="write summary.json and report.md here")
    parser.add_argument(
        "--gallery", type=Path,
        help="also draw every photograph with each system's words into this JPEG (keep it out of the project: the photographs are validation data)",
    )
    parser.add_argument(
        "--schematic", type=Path,
        help="also draw the results without the photographs (blank canvases under the ground truth) into this PNG: the picture the report keeps",
    )
    parser.add_argument("--demo", type=Path, help="only draw the server's reading of a demonstration picture made from the project's files into this PNG")
    args = parser.parse_args(argv)
    if args.demo:
        write_demo(args.demo, args.url, args.protocol)
        return 0
    pairs = images_and_truth(args.pages)
    if not pairs:
        print(f"pages: no images with ground truth under {args.pages}", file=sys.stderr)
        return 1
    images = [image for image, _ in pairs]
    systems = {"spin_page (PP-OCRv6 det + SPIN)": read_with_server(images, args.url, args.protocol)}
    if not args.no_anchor:
        systems["rapidocr 3.10 (PP-OCRv6 det + cls + rec small)"] = read_with_rapidocr(images)
    truth = recognition_on_truth(pairs, args.url, args.protocol, not args.no_anchor)
    print(f"recognition alone, on the {truth['words']} ground-truth crops: " + ", ".join(f"{k} {v}" for k, v in truth.items() if k != "words"))
    results = {}
    for name, (predictions, seconds) in systems.items():
        summary, outcomes = evaluate(predictions, pairs)
        summary["median_seconds_per_image"] = float(np.median(seconds))
        results[name] = {"summary": summary, "outcomes": outcomes, "predictions": predictions}
        d, e = summary["detection"], summary["end_to_end"]
        print(
            f"{name}: detection P {d['precision']:.3f} R {d['recall']:.3f} F {d['f']:.3f}; end-to-end P {e['precision']:.3f} "
            f"R {e['recall']:.3f} F {e['f']:.3f} ({summary['hits']} of {summary['words']} words, {summary['detections']} detections); "
            f"median {summary['median_seconds_per_image']:.2f} s/image"
        )
    if args.out:
        write_report(args.out, pairs, results, args, truth)
    if args.gallery:
        write_gallery(args.gallery, pairs, results)
    if args.schematic:
        write_gallery(args.schematic, pairs, results, schematic=True)
    return 0


def write_gallery(path: Path, pairs: Sequence[tuple[Path, Path]], results: dict, schematic: bool = False) -> None:
    """Every photograph with each system's words drawn, side by side: green an end-to-end hit, orange a box right
    with the text wrong, red no word there, gray do-not-care. ``schematic``: on a blank canvas of the photograph's
    size instead, under the ground truth (its words in light gray with their texts, do-not-care regions hatched):
    the results without the photographs' pixels, so the picture can be kept where the photographs may not."""
    import io

    from PIL import Image

    from spinrec_client.draw import draw_words

    colours = {"hit": (0, 170, 0), "matched": (255, 140, 0), "false": (220, 0, 0), "ignored": (150, 150, 150)}
    rows = []
    for image, truth in pairs:
        tiles = []
        base, under = image.read_bytes(), []
        if schematic:
            with Image.open(io.BytesIO(base)) as opened:
                blank = Image.new("RGB", opened.size, (250, 250, 250))
            buffer = io.BytesIO()
            blank.save(buffer, "PNG")
            base = buffer.getvalue()
            care, dont = read_ground_truth(truth)
            under = [(b.quad, b.text, (185, 185, 185)) for b in care] + [(b.quad, "", (225, 225, 225)) for b in dont]
        for name, result in results.items():
            boxes = result["predictions"][image.name]
            outcome = result["outcomes"][image.name]
            words = under + [(b.quad, b.text, colours[o]) for b, o in zip(boxes, outcome)]
            drawn = draw_words(base, words, caption=f"{image.name}: {name}" if schematic else name)
            tiles.append(drawn.resize((drawn.width // 2, drawn.height // 2)))
        rows.append(tiles)
    width, height = sum(t.width for t in rows[0]), sum(r[0].height for r in rows)
    gallery = Image.new("RGB", (width, height), "white")
    y = 0
    for tiles in rows:
        x = 0
        for t in tiles:
            gallery.paste(t, (x, y))
            x += t.width
        y += tiles[0].height
    path.parent.mkdir(parents=True, exist_ok=True)
    gallery.save(path, quality=85)


def write_report(out: Path, pairs: Sequence[tuple[Path, Path]], results: dict, args: argparse.Namespace, truth: dict[str, int]) -> None:
    """``summary.json`` and ``report.md``: the table, the words each system read right, and the command."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: r["summary"] for name, r in results.items()}
    (out / "summary.json").write_text(json.dumps({"systems": summary, "recognition_on_ground_truth_crops": truth}, indent=2) + "\n")
    lines = [
        f"# Whole photographs: {len(pairs)} images, {next(iter(summary.values()))['words']} counted words",
        "",
        "| system | det P | det R | det F | e2e P | e2e R | e2e F | median s/image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        d, e = s["detection"], s["end_to_end"]
        lines.append(
            f"| {name} | {d['precision']:.3f} | {d['recall']:.3f} | {d['f']:.3f} | {e['precision']:.3f} | {e['recall']:.3f} | {e['f']:.3f} | "
            f"{s['median_seconds_per_image']:.2f} |"
        )
    lines += ["", "Recognition alone, on the ground-truth crops (detection taken out): " + ", ".join(
        f"{k} reads {v} of {truth['words']}" for k, v in truth.items() if k != "words")]  # fmt: skip
    for name, r in results.items():
        read = [b.text for image, _ in pairs for b, o in zip(r["predictions"][image.name], r["outcomes"][image.name]) if o == "hit"]
        wrong = [b.text for image, _ in pairs for b, o in zip(r["predictions"][image.name], r["outcomes"][image.name]) if o == "matched"]
        lines += ["", f"{name}: read right {read}; found but misread {wrong}"]
    lines += ["", f"Command: `python -m spinrec.evaluation.pages --pages {args.pages} --url {args.url} -i {args.protocol} --out {out}`"
              " --schematic reports/pages_dev/gallery_schematic.png (`--gallery PATH` draws the photographs themselves with each system's words; that"
              " gallery stays out of the project). `gallery_schematic.png`: each system's words on a blank canvas of each photograph's size,"
              " over the ground truth (light gray, with its texts; do-not-care regions pale): green an end-to-end hit, orange a box right"
              " with the text wrong, red no word there, gray inside a do-not-care region."]  # fmt: skip
    (out / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
