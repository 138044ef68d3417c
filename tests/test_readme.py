"""Every shell and Python example of README.md and client/README.md runs as written, against a real server.

The examples are read from the two READMEs (their ```bash and ```python blocks). A bash block is cut into
commands (a paragraph that continues lines with ``\\`` or ``|``, or sets shell variables, stays one command);
each command is run by bash, each Python block by the venv's python, in a scratch folder laid out as the
examples assume: the checkout's ``.venv``, ``perf`` and ``weights`` (links), ``path/to/crops/``, ``a.png``,
``hello.png``, ``tiny.png``, ``samples/``, ``word1.png``, ``word2.jpg``, ``spin.safetensors``, ``photo.jpg`` (the synthetic page) and an LMDB
``BENCH_LMDB``, all real images (rendered words). The venv's ``bin`` is first on PATH, as for a user who
installed the client.

The only substitutions: ``127.0.0.1:8000`` and ``127.0.0.1:8001`` become the test server's HTTP and gRPC ports
(a ``spinrec-client`` with no ``-u`` reads ``127.0.0.1:8000``, its default: the same substitution, made
explicit), and a command whose comment says ``add ARGS for gRPC`` runs a second time with ARGS. The server is
the shipped default weights served fp32 (conftest's ``default_server``), so the readings the examples show
("hello") are checked too.

Every command needs a decision in :data:`DECISIONS`: run it (with what to check) or skip it, with the reason
(a command that cannot run here, e.g. ``bash scripts/serve.sh``, is covered elsewhere, and the reason names
where). A new example without a decision fails the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from conftest import DEFAULT_WEIGHTS, REPO_ROOT, TritonServer
from spinrec.page.synthetic import PAGE_WORDS, synthetic_page

pytestmark = pytest.mark.slow

DOCS = ("README.md", "client/README.md")
VENV_BIN = REPO_ROOT / ".venv" / "bin"


@dataclass
class Example:
    doc: str
    line: int  # of its first line in the doc
    lang: str  # bash or python
    text: str
    shown: str | None = None  # the output the doc shows right after it (a ```json block), if any
    variant: str = ""  # "grpc": the variant its comment names

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}" + (f":{self.variant}" if self.variant else "")


def _blocks(doc: str) -> list[tuple[int, str, str]]:
    """``(first line, language, text)`` of every fenced block."""
    out, lang, start, body = [], None, 0, []
    for i, line in enumerate((REPO_ROOT / doc).read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), i + 1, []
            else:
                out.append((start, lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    return out


def _commands(start: int, text: str) -> list[tuple[int, str]]:
    """A bash block cut into commands: paragraphs, and a paragraph's lines one by one when none continues
    onto the next and none only sets variables for the lines after it."""
    out, para, para_start = [], [], start
    for i, line in enumerate(text.splitlines() + [""], start):
        if line.strip():
            para_start = i if not para else para_start
            para.append(line)
            continue
        if para:
            whole = any(l.rstrip().endswith(("\\", "|")) or re.match(r"^\w+=\S", l) for l in para)
            out += [(para_start, "\n".join(para))] if whole else [(para_start + k, l) for k, l in enumerate(para)]
            para = []
    return out


def examples() -> list[Example]:
    found = []
    for doc in DOCS:
        blocks = _blocks(doc)
        for k, (start, lang, text) in enumerate(blocks):
            shown = blocks[k + 1][2] if k + 1 < len(blocks) and blocks[k + 1][1] == "json" else None
            if lang == "python":
                found.append(Example(doc, start, lang, text))
            elif lang == "bash":
                for line, command in _commands(start, text):
                    found.append(Example(doc, line, lang, command, shown))
                    grpc = re.search(r"# .*\badd (-i grpc -u \S+) for gRPC", command)
                    if grpc:  # the variant the comment names
                        variant = re.sub(r"(spinrec-client)", rf"\1 {grpc.group(1)}", command.split("#")[0], count=1)
                        found.append(Example(doc, line, lang, variant.rstrip(), shown, "grpc"))
    return found


def substitute(text: str, server: TritonServer) -> str:
    text = text.replace("127.0.0.1:8000", server.http_url).replace("127.0.0.1:8001", server.grpc_url)
    lines = []
    for line in text.splitlines():
        code = line.split("#")[0]
        if "spinrec-client" in code and not re.search(r"\s-u\s", code):
            # without -u the client reads its default, 127.0.0.1:8000 (HTTP) or :8001 (-i grpc)
            url = server.grpc_url if re.search(r"-i\s+grpc", code) else server.http_url
            line = re.sub(r"(spinrec-client)", rf"\1 -u {url}", line, count=1)
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- the scratch folder
WORDS = ("hello", "house", "model", "serve")


def _word(text: str, suffix: str = ".png") -> bytes:
    image = np.full((48, 160, 3), 235, np.uint8)
    cv2.putText(image, text, (6, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2)
    return cv2.imencode(suffix, image)[1].tobytes()


def _broken_png() -> bytes:
    """An 83x45 PNG cut at 1451 bytes: the client README's broken.png."""
    noise = np.random.default_rng(0).integers(0, 256, (45, 83), np.uint8)
    data = cv2.imencode(".png", noise)[1].tobytes()
    assert len(data) > 1451
    return data[:1451]


def _lmdb(path: Path, words: dict[str, bytes]) -> None:
    import lmdb

    with lmdb.open(str(path), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for i, (label, data) in enumerate(words.items(), 1):
            txn.put(b"image-%09d" % i, data)
            txn.put(b"label-%09d" % i, label.encode())
        txn.put(b"num-samples", str(len(words)).encode())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    for name in (".venv", "perf", "weights"):
        (root / name).symlink_to(REPO_ROOT / name)
    crops = root / "path" / "to" / "crops"
    crops.mkdir(parents=True)
    for w in WORDS:
        (crops / f"{w}.png").write_bytes(_word(w))
    (root / "a.png").write_bytes(_word("house"))
    (root / "hello.png").write_bytes(_word("hello"))
    cv2.imwrite(str(root / "tiny.png"), np.zeros((1, 1), np.uint8))
    (root / "samples").mkdir()
    (root / "samples" / "hello.png").write_bytes(_word("hello"))
    (root / "samples" / "broken.png").write_bytes(_broken_png())
    (root / "word1.png").write_bytes(_word("model"))
    (root / "word2.jpg").write_bytes(_word("serve", ".jpg"))
    (root / "spin.safetensors").symlink_to(DEFAULT_WEIGHTS)
    cv2.imwrite(str(root / "photo.jpg"), synthetic_page()[0])
    _lmdb(root / "BENCH_LMDB", {w: _word(w) for w in WORDS})
    return root


# --------------------------------------------------------------------------------------------------- checks
def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def crops_through_client(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    rows = _json_lines(done.stdout)
    assert [Path(r["path"]).stem for r in rows] == sorted(WORDS) and all("text" in r for r in rows)


def crops_in_process(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [Path(r[0]).stem for r in rows] == sorted(WORDS)
    served = subprocess.run([VENV_BIN / "spinrec-client", "-u", server.http_url, "path/to/crops/"], cwd=scratch,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert [r[1] for r in rows] == [line.split("\t")[1] for line in served.stdout.splitlines()], "the same, in process"


def curl_reads(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    outputs = {o["name"]: o["data"] for o in json.loads(done.stdout)["outputs"]}
    assert outputs["TEXT"] == ["house"] and 0 < outputs["CONFIDENCE"][0] <= 1


def perf_analyzer_measures(done, scratch, server, example):
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Throughput" in done.stdout and (scratch / "words.json").is_file()


def two_words_read(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[:2] for line in done.stdout.splitlines()] == [["word1.png", "model"], ["word2.jpg", "serve"]]


def evaluation_written(name):
    def check(done, scratch, server, example):
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads((scratch / "reports" / f"{name}.json").read_text())
        assert "BENCH_LMDB" in json.dumps(record)

    return check


def shown_output(done, scratch, server, example):
    """The doc's ```json block after the command: the same paths in the same order, the same errors and texts
    (confidence and latency vary); the exit status the doc names (1: one image failed)."""
    assert done.returncode == 1, done.stderr
    assert example.shown, "the doc shows no output after the command"
    shown = _json_lines(example.shown)
    got = _json_lines(done.stdout)
    assert [r["path"] for r in got] == [r["path"] for r in shown]
    for g, s in zip(got, shown):
        assert set(g) == set(s) and g.get("error") == s.get("error") and g.get("text") == s.get("text"), (g, s)


def library_reads_samples(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "samples/broken.png corrupt or truncated PNG image (83x45, 1451 bytes) [libpng error: PNG input buffer is incomplete]",
        "samples/hello.png hello",
    ]


def page_read_and_drawn(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[1] for line in done.stdout.splitlines()] == [w for w, *_ in PAGE_WORDS]
    drawn = cv2.imread(str(scratch / "photo_words.png"))
    assert drawn is not None and drawn.shape == cv2.imread(str(scratch / "photo.jpg")).shape


def page_json(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    (page,) = _json_lines(done.stdout)
    assert [w["text"] for w in page["words"]] == [w for w, *_ in PAGE_WORDS] and len(page["words"][0]["quad"]) == 4


def page_library_reads(done, scratch, server, example):
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([w for w, *_ in PAGE_WORDS])


def ran(done, scratch, server, example):
    assert done.returncode == 0, done.stderr


def raw_tritonclient(done, scratch, server, example):
    assert done.returncode == 0, done.stderr  # each commented value is asserted by the script itself


Check = Callable[[subprocess.CompletedProcess, Path, TritonServer, Example], None]
#: ``(doc, pattern found in the command, what to do)``: a check to run it with, or the reason it is skipped.
DECISIONS: list[tuple[str, str, Check | str]] = [
    ("README.md", "bash scripts/serve.sh", "installs, builds and serves on the fixed ports 8000-8002: tests/fresh_machine.sh runs it on a fresh machine (CI's first step)"),
    ("README.md", "bash scripts/test.sh", "the test suite itself (CI runs it)"),
    ("README.md", "path/to/crops/ --json", crops_through_client),
    ("README.md", "spinrec recognize 'path/to/crops/*.png'", crops_in_process),
    ("README.md", "--page photo.jpg --draw photo_words.png", page_read_and_drawn),
    ("README.md", "--page photo.jpg --json", page_json),
    ("README.md", "img=a.png", curl_reads),
    ("README.md", "perf_analyzer -m spin_ocr", perf_analyzer_measures),
    ("README.md", "python -m builders.build_plugin", "TensorRT and a GPU: scripts/gpu_check.sh builds, verifies and serves the engine"),
    ("README.md", "convert-paddle best_accuracy.pdparams", "needs PaddleOCR's trained checkpoint: tests/test_paddle_fidelity.py and tests/test_cli.py convert Paddle-written ones"),
    ("README.md", "recognize --weights spin.safetensors word1.png word2.jpg", two_words_read),
    ("README.md", "BENCH_LMDB --weights", evaluation_written("bench")),
    ("README.md", "BENCH_LMDB --server", evaluation_written("bench_triton")),
    ("README.md", "import numpy as np, tritonclient.grpc as g", raw_tritonclient),
    ("README.md", "python -m spinrec.serving.launch --front off", "serves on the fixed ports 8000-8002: tests/test_front.py runs the launcher and the front proxy on free ports"),
    ("README.md", "python -m spinrec.serving.front --address", "serves on 8080/8081 in front of a Triton on 8000/8001: tests/test_front.py runs the front proxy on free ports"),
    ("client/README.md", "spinrec-client samples/ -i grpc --json", shown_output),
    ("client/README.md", 'recognize(collect(["samples/"]))', library_reads_samples),
    ("client/README.md", '"10.0.0.5:8001,10.0.0.6:8001"', ran),
    ("client/README.md", "PageClient(\"127.0.0.1:8001\"", page_library_reads),
]

EXAMPLES = examples()


def decision(example: Example) -> Check | str:
    found = [what for doc, pattern, what in DECISIONS if doc == example.doc and pattern in example.text]
    assert len(found) == 1, f"{example.id}: {len(found)} decisions in DECISIONS for:\n{example.text}\n(add exactly one: run it, or skip it with the reason)"
    return found[0]


def _commented_asserts(code: str) -> str:
    """``expr   # value`` lines of a Python example become ``assert expr.tolist() == value`` (a NumPy array
    shown as its nested list)."""
    out = []
    for line in code.splitlines():
        m = re.match(r"^(r\.as_numpy\(\"\w+\"\))\s+# (\[.*\])(\s+\(.*\))?$", line)
        out.append(f"assert {m.group(1)}.tolist() == {m.group(2)}, {m.group(1)}.tolist()" if m else line)
    return "\n".join(out)


def test_every_example_has_a_decision():
    assert len(EXAMPLES) >= 15
    for example in EXAMPLES:
        decision(example)
    ids = {e.id for e in EXAMPLES}
    assert any(i.startswith("README.md:") and i.endswith(":grpc") for i in ids) and sum(e.doc == "client/README.md" for e in EXAMPLES) >= 3, sorted(ids)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_example_runs_as_written(example, scratch, default_server):
    what = decision(example)
    if isinstance(what, str):
        pytest.skip(what)
    if what is perf_analyzer_measures:
        if not (VENV_BIN / "perf_analyzer").is_file() or importlib.util.find_spec("nvidia.cuda_runtime") is None:
            pytest.skip("needs the perf extra (perf_analyzer needs libcudart: .venv/bin/pip install -e ./client -e '.[perf]')")
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    text = substitute(example.text, default_server)
    if example.lang == "python":
        script = scratch / f"example_{example.line}.py"
        script.write_text(_commented_asserts(text))
        cmd = [str(VENV_BIN / "python"), str(script)]
    else:
        cmd = [shutil.which("bash") or "/bin/bash", "-euo", "pipefail", "-c", text]
    done = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=600)
    what(done, scratch, default_server, example)
