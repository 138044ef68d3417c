"""``spinrec-client`` (or ``python -m spinrec_client``): read word images with a Triton server running the ``spin_ocr``
ensemble, or whole photographs with its ``spin_page`` model (``--page``, ``--draw``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from spinrec_client.ocr import MODEL, PROTOCOLS, BatchSizeClamped, ClientError, OcrClient, Result
from spinrec_client.resilience import RetryPolicy
from spinrec_client.inputs import collect
from spinrec_client.page import PageClient, PageError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spinrec-client",
        description="Read word images with Triton's spin_ocr model (one line per image, in input order), or whole photographs "
        "with --page (one line per word).",
    )
    parser.add_argument("images", nargs="*", help="image files, directories (searched recursively), globs, or - for one image on stdin")
    parser.add_argument("--list", metavar="FILE", help="also read image paths from FILE, one per line (- for stdin)")
    parser.add_argument("-i", "--protocol", choices=sorted(PROTOCOLS), default="http")
    parser.add_argument(
        "-u", "--url",
        help="server host:port, or several separated by commas: requests rotate over them and fail over "
        "(default: 127.0.0.1:8000 for http, :8001 for grpc)",
    )
    parser.add_argument("-m", "--model", default=MODEL)
    parser.add_argument("-b", "--batch-size", type=int, default=16, help="images per request, at most the server's max_batch_size (default: %(default)s)")
    parser.add_argument("-c", "--concurrency", type=int, default=4, help="requests in flight (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per attempt of a request (default: %(default)s)")
    parser.add_argument(
        "--retries", type=int, default=4,
        help="retries of a request that found no server or an unavailable one, on the next endpoint (default: %(default)s; 0: none)",
    )
    parser.add_argument("--retry-backoff", type=float, default=0.05, help="seconds before the first retry, doubling up to 2 s, jittered (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="JSON lines: path, text, confidence, latency_ms, flag if any (or error)")
    parser.add_argument("--char-probs", action="store_true", help="with --json: add each character's probability")
    parser.add_argument(
        "--page", action="store_true",
        help="each image is a whole photograph: the server finds its words and reads them (spin_page), one request per photograph; "
        "prints path, text, confidence and the word's corners per word (with --json: one line per photograph)",
    )
    parser.add_argument(
        "--draw", metavar="OUT",
        help="with --page: draw the words found on the photograph into OUT (a PNG file for one photograph, else a folder of <name>.png)",
    )
    args = parser.parse_args(argv)
    if args.draw and not args.page:
        parser.error("--draw draws a photograph's words: add --page")
    if args.char_probs and (args.page or not args.json):
        parser.error(f"--char-probs {'is for word images, not --page' if args.page else 'needs --json'}")
    if not args.images and not args.list:
        parser.error("give image paths, directories, globs, - or --list FILE")
    if args.images.count("-") + (args.list == "-") > 1:
        parser.error("stdin can feed only one of: an image (-), the path list (--list -)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 every image read and none flagged; 1 some image failed or was flagged (degenerate:
    its reading is doubtful); 2 nothing could be read (server, model or arguments)."""
    args = parse_args(argv)
    specs = list(args.images)
    if args.list:
        with open(args.list) if args.list != "-" else sys.stdin as f:
            specs += [line.strip() for line in f if line.strip()]
    items = collect(specs)
    if args.page:
        return read_pages(items, args)
    try:
        retry = RetryPolicy(attempts=args.retries + 1, backoff=args.retry_backoff, attempt_timeout=args.timeout, deadline=None)
        client = OcrClient(args.url, args.protocol, args.model, args.batch_size, args.concurrency, args.timeout, args.char_probs, retry)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BatchSizeClamped)
            results = client.recognize(items)
        for w in caught:
            print(f"client: warning: {w.message}", file=sys.stderr)
    except (ClientError, ValueError) as e:
        print(f"client: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    for r in results:
        report(r, args.json)
    failed, flagged = sum(not r.ok for r in results), sum(r.flagged for r in results)
    print(
        f"client: {len(results) - failed}/{len(results)} images read, {flagged} flagged, in {elapsed:.2f} s "
        f"({args.protocol}://{client.url}, batch {client.batch_size}, concurrency {args.concurrency})",
        file=sys.stderr,
    )
    return 1 if failed or flagged else 0


def report(r: Result, as_json: bool) -> None:
    """One result: a JSON line, or ``path<TAB>text<TAB>confidence`` (``<TAB>FLAG: reason`` appended when
    flagged) on stdout, ``path<TAB>ERROR: reason`` on stderr."""
    if as_json:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
    elif r.ok:
        print(f"{r.path}\t{r.text}\t{r.confidence:.4f}" + (f"\tFLAG: {r.flag}" if r.flagged else ""))
    else:
        print(f"{r.path}\tERROR: {r.error}", file=sys.stderr)


def read_pages(items: list[tuple[str, bytes | Exception]], args: argparse.Namespace) -> int:
    """``--page``: every photograph in one request each; exit status as :func:`main`'s (a photograph the server
    refuses, or one it could only read in part, counts as failed)."""
    try:
        client = PageClient(args.url, args.protocol, args.timeout)
    except ClientError as e:
        print(f"client: error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with client:
        failed, words = report_pages(items, client.read, PageError, args)
    print(
        f"client: {len(items) - failed}/{len(items)} photographs read, {words} words, in {time.perf_counter() - start:.2f} s "
        f"({args.protocol}://{client.url})",
        file=sys.stderr,
    )
    return 1 if failed else 0


def report_pages(items, read, refused: type[Exception] | tuple[type[Exception], ...], args: argparse.Namespace) -> tuple[int, int]:
    """Read each photograph of ``items`` with ``read`` (bytes -> :class:`~spinrec_client.page.PageResult`, raising
    ``refused`` for one it cannot read) and report it: a line per word (``path<TAB>text<TAB>confidence<TAB>x,y x,y x,y
    x,y``, ``<TAB>FLAG: reason`` when doubtful) or, with ``args.json``, a JSON line per photograph; errors on stderr;
    ``args.draw``: the words drawn into a PNG (a folder of them for several photographs). Returns (photographs that
    failed or were read only in part, words read). ``spinrec recognize --page`` reports through this too."""
    from pathlib import Path

    out = Path(args.draw) if args.draw else None
    if out is not None and len(items) > 1:
        out.mkdir(parents=True, exist_ok=True)
    failed = words = 0
    for path, data in items:
        try:
            if isinstance(data, Exception):
                raise PageError(str(data))
            page = read(data)
        except (PageError, refused) as e:  # type: ignore[misc]
            failed += 1
            print(json.dumps({"path": path, "error": str(e)}) if args.json else f"{path}\tERROR: {e}", file=sys.stdout if args.json else sys.stderr)
            continue
        failed += bool(page.flag)
        words += len(page.words)
        if args.json:
            print(json.dumps({"path": path, **page.to_dict()}, ensure_ascii=False))
        else:
            for w in page.words:
                corners = " ".join(f"{x:g},{y:g}" for x, y in w.quad)
                print(f"{path}\t{w.text}\t{w.confidence:.4f}\t{corners}" + (f"\tFLAG: {w.flag}" if w.flag else ""))
            if page.flag:
                print(f"{path}\tPAGE FLAG: {page.flag}", file=sys.stderr)
        if out is not None:
            from spinrec_client.draw import draw_words

            target = out if len(items) == 1 else out / f"{Path(path).stem}.png"
            draw_words(data, [(w.quad, w.text, None) for w in page.words]).save(target)
    return failed, words
