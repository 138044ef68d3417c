"""The client library and ``python -m spinrec_client`` against the real server (HTTP and gRPC)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from spinrec_client import ClientError, OcrClient, collect
from conftest import REPO_ROOT, WORDS, free_port

PROTOCOLS = ("http", "grpc")
CONF_TOL = 1e-4


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, word_images):
    """``words/NN_word.png|jpg`` for every rendered word, plus a nested folder and a broken file."""
    root = tmp_path_factory.mktemp("images")
    words = root / "words"
    (words / "nested").mkdir(parents=True)
    for i, (word, data) in enumerate(zip(WORDS, word_images)):
        suffix = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        folder = words / "nested" if i >= 10 else words
        (folder / f"{i:02d}_{word}{suffix}").write_bytes(data)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("not an image, and not picked up from directories\n")
    return root


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_library_keeps_order_and_isolates_bad_images(triton_server, protocol, word_images, bad_images, expected):
    items = [(f"w{i}", data) for i, data in enumerate(word_images)]
    items.insert(2, ("corrupt", bad_images["corrupt"]))
    items.insert(7, ("oversized", bad_images["oversized"]))
    items.append(("missing", FileNotFoundError("cannot read missing")))
    client = OcrClient(triton_server.url(protocol), protocol, batch_size=4, concurrency=3, char_probs=True)
    results = client.recognize(items)

    assert [r.path for r in results] == [p for p, _ in items]
    failed = {r.path: r.error for r in results if not r.ok}
    assert set(failed) == {"corrupt", "oversized", "missing"}
    assert "corrupt or truncated PNG" in failed["corrupt"] and "image too large" in failed["oversized"]
    good = [r for r in results if r.ok]
    assert [r.text for r in good] == [e.text for e in expected]
    np.testing.assert_allclose([r.confidence for r in good], [e.confidence for e in expected], rtol=0, atol=CONF_TOL)
    for r, e in zip(good, expected):
        np.testing.assert_allclose(r.char_probs, e.char_probs, rtol=0, atol=CONF_TOL)
        assert r.latency_ms > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_server_is_a_clear_error(protocol, word_images):
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ClientError, match=f"cannot reach Triton at {url} over {protocol}"):
        OcrClient(url, protocol, timeout=10).recognize([("a", word_images[0])])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_missing_model_is_a_clear_error(triton_server, protocol, word_images):
    with pytest.raises(ClientError, match=r"model 'no_such_model' is not ready.*spin_ocr \(READY\)"):
        OcrClient(triton_server.url(protocol), protocol, model="no_such_model").recognize([("a", word_images[0])])


def test_collect_expands_directories_globs_and_stdin(image_dir, word_images):
    import io

    items = collect([str(image_dir / "words"), str(image_dir / "words" / "*.jpg"), "-", str(image_dir / "nope.png"), str(image_dir / "*.gif")],
                    stdin=io.BytesIO(word_images[3]))
    paths = [p for p, _ in items]
    in_dir = sorted(str(p) for p in (image_dir / "words").rglob("*") if p.is_file())
    jpgs = sorted(str(p) for p in (image_dir / "words").glob("*.jpg"))
    assert paths == in_dir + jpgs + ["-", str(image_dir / "nope.png"), str(image_dir / "*.gif")]
    assert items[len(in_dir) + len(jpgs)][1] == word_images[3]
    assert isinstance(items[-2][1], OSError) and "cannot read" in str(items[-2][1])
    assert isinstance(items[-1][1], FileNotFoundError) and "no file matches" in str(items[-1][1])


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinrec_client", *args], cwd=REPO_ROOT, input=stdin, capture_output=True, timeout=120)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_json_lines_in_input_order(triton_server, protocol, image_dir, word_images, expected):
    files = sorted((image_dir / "words").rglob("*.*"))
    done = run_cli(
        "--json", "-i", protocol, "-u", triton_server.url(protocol), "-b", "3", "-c", "2",
        str(image_dir / "words"), str(image_dir / "broken.png"), "-",
        stdin=word_images[5],
    )
    assert done.returncode == 1, done.stderr.decode()  # one image failed
    rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [r["path"] for r in rows] == [str(f) for f in files] + [str(image_dir / "broken.png"), "-"]
    by_word = {w: e for w, e in zip(WORDS, expected)}
    for row, f in zip(rows, files):
        want = by_word[f.stem.split("_", 1)[1]]
        assert row["text"] == want.text and abs(row["confidence"] - want.confidence) <= CONF_TOL
        assert row["latency_ms"] > 0
    assert "not a recognised image" in rows[-2]["error"]
    assert rows[-1]["text"] == expected[5].text
    assert f"{len(files) + 1}/{len(files) + 2} images read" in done.stderr.decode()


def test_cli_text_output_and_path_list(triton_server, image_dir, expected):
    files = sorted((image_dir / "words").glob("*.png"))
    listing = "\n".join(str(f) for f in files).encode()
    done = run_cli("-u", triton_server.http_url, "--list", "-", stdin=listing)
    assert done.returncode == 0, done.stderr.decode()
    lines = [line.split("\t") for line in done.stdout.decode().splitlines()]
    by_word = {w: e for w, e in zip(WORDS, expected)}
    assert [line[0] for line in lines] == [str(f) for f in files]
    assert [line[1] for line in lines] == [by_word[f.stem.split("_", 1)[1]].text for f in files]


def test_cli_unreachable_server_exits_2(image_dir):
    done = run_cli("-u", f"127.0.0.1:{free_port()}", str(image_dir / "words"))
    assert done.returncode == 2
    assert "cannot reach Triton" in done.stderr.decode() and not done.stdout


def _word_lmdb(path, word_images) -> str:
    from spinrec.training.synth import write_lmdb

    write_lmdb(path, list(zip(word_images, WORDS)))
    return str(path)


def test_evaluate_through_the_server_equals_in_process(triton_server, checkpoint, word_images, tmp_path):
    from spinrec.evaluation.evaluate import main as evaluate_main

    dataset = _word_lmdb(tmp_path / "lmdb", word_images)
    reports = {}
    for name, backend in {"triton": ["--server", triton_server.http_url, "--protocol", "http"], "torch": ["--weights", str(checkpoint)]}.items():
        assert evaluate_main([dataset, *backend, "--batch-size", "5", "--out", str(tmp_path / name)]) == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    triton, torch_ = (reports[n]["datasets"][dataset] for n in ("triton", "torch"))
    assert triton["samples"] == len(WORDS) and triton["failed_images"] == 0
    assert (triton["correct"], triton["examples_wrong"]) == (torch_["correct"], torch_["examples_wrong"])
    assert triton["norm_edit_dis"] == pytest.approx(torch_["norm_edit_dis"], abs=1e-9)
    assert reports["triton"]["meta"]["backend"] == f"Triton spin_ocr over http at {triton_server.http_url}"


def test_evaluate_with_an_unreachable_server_exits_2(word_images, tmp_path, capsys):
    from spinrec.evaluation.evaluate import main as evaluate_main

    url = f"127.0.0.1:{free_port()}"
    assert evaluate_main([_word_lmdb(tmp_path / "lmdb", word_images), "--server", url]) == 2
    assert f"cannot reach Triton at {url} over grpc" in capsys.readouterr().err


def _ensemble_requests(server, at_least: int = 0, timeout: float = 10.0) -> int:
    """spin_ocr's successful request count once it has reached ``at_least`` and stopped moving: Triton
    records a request's statistics after its response is on the way, so a client can see the response
    before the count moves."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        with server.client() as client:
            stats = client.get_inference_statistics("spin_ocr")["model_stats"][0]
        count = int(stats["inference_stats"]["success"]["count"])
        if (count >= at_least and count == last) or time.monotonic() > deadline:
            return count
        last = count
        time.sleep(0.2)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_images_cost_no_extra_round_trips(triton_server, protocol, word_images, bad_images):
    items = [(f"w{i}", data) for i, data in enumerate(word_images[:6])] + [(k, v) for k, v in sorted(bad_images.items())]
    before = _ensemble_requests(triton_server)
    results = OcrClient(triton_server.url(protocol), protocol, batch_size=5, concurrency=2).recognize(items)
    assert _ensemble_requests(triton_server, before + 2) - before == 2  # ceil(10 / 5): nothing re-sent
    assert [r.ok for r in results] == [True] * 6 + [False] * 4


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batch_size_above_the_servers_is_clamped_with_a_warning(triton_server, protocol, word_images):
    from spinrec_client.ocr import BatchSizeClamped

    client = OcrClient(triton_server.url(protocol), protocol, batch_size=100)
    items = [(f"w{i % len(word_images)}", word_images[i % len(word_images)]) for i in range(130)]
    before = _ensemble_requests(triton_server)
    with pytest.warns(BatchSizeClamped, match="batch size 100 is above spin_ocr's max_batch_size 64"):
        results = client.recognize(items)
    assert client.batch_size == 64 and all(r.ok for r in results)
    assert _ensemble_requests(triton_server, before + 3) - before == 3  # 64 + 64 + 2


def test_cli_marks_flagged_images_and_exits_1(triton_server, tmp_path, word_images):
    import cv2

    (tmp_path / "a_word.png").write_bytes(word_images[0])
    cv2.imwrite(str(tmp_path / "b_blank.png"), np.full((40, 120), 255, np.uint8))
    done = run_cli("-u", triton_server.http_url, "-b", "200", str(tmp_path))
    assert done.returncode == 1, done.stderr.decode()
    lines = [line.split("\t") for line in done.stdout.decode().splitlines()]
    assert len(lines[0]) == 3 and lines[1][3].startswith("FLAG: blank: ")
    err = done.stderr.decode()
    assert "client: warning: batch size 200 is above spin_ocr's max_batch_size 64" in err
    assert "2/2 images read, 1 flagged" in err and "batch 64" in err
    # Without the flagged image everything is read: exit 0.
    assert run_cli("-u", triton_server.http_url, str(tmp_path / "a_word.png")).returncode == 0


def test_requests_are_sized_under_the_front_proxys_limit():
    """Images go in order, at most batch_size per request, and a request's body stays under the proxy's limit
    (an image alone may fill one)."""
    from spinrec_client.ocr import chunks
    from spinrec.contract import MAX_BYTES, MAX_REQUEST_BYTES

    assert chunks([10] * 5, 2) == [[0, 1], [2, 3], [4]]
    assert chunks([MAX_REQUEST_BYTES // 2, MAX_REQUEST_BYTES // 2, 10, 10], 16) == [[0], [1, 2, 3]]
    assert chunks([MAX_BYTES] * 3, 16) == [[0], [1], [2]] and chunks([], 4) == []
    sizes = [3_000_000, 3_000_000, 2_400_000, 1, 5_000_000]
    for group in chunks(sizes, 16):
        assert len(group) == 1 or sum(sizes[i] for i in group) + 4096 <= MAX_REQUEST_BYTES
