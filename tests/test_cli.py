"""The command line: convert a PaddleOCR checkpoint, then read images with the reference recognizer."""

import json
import subprocess
import sys

import cv2
import numpy as np
import torch

from spinrec import weights
from spinrec.models import SPIN, SPINConfig
from spinrec.pipeline import Pipeline


def _run(*args):
    return subprocess.run([sys.executable, "-m", "spinrec", *args], capture_output=True, text=True, timeout=300)


def _word_png(path, text):
    img = np.full((48, 160, 3), 235, np.uint8)
    cv2.putText(img, text, (6, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2)
    cv2.imwrite(str(path), img)


def test_convert_then_recognize(tmp_path):
    torch.manual_seed(0)
    model = SPIN(SPINConfig()).eval()
    pd = tmp_path / "best_accuracy.pdparams"
    weights.write_pdparams(weights.to_paddle(model), pd)
    st = tmp_path / "spin.safetensors"
    r = _run("convert-paddle", str(pd), str(st))
    assert r.returncode == 0, r.stderr
    assert "50,686,693 parameters" in r.stdout

    images = [tmp_path / "a.png", tmp_path / "b.png"]
    _word_png(images[0], "hello")
    _word_png(images[1], "42")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    r = _run("recognize", "--json", "--weights", str(st), *map(str, images), str(tmp_path / "bad.png"))
    assert r.returncode == 1  # one image failed
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    expected = Pipeline.open(model).recognize([p.read_bytes() for p in images])
    assert [row["text"] for row in rows[:2]] == [e.text for e in expected]
    assert rows[2]["path"].endswith("bad.png") and "not a recognised image" in rows[2]["error"]


def test_convert_reports_bad_checkpoint(tmp_path):
    pd = tmp_path / "wrong.pdparams"
    weights.write_pdparams({"head.generator.weight": np.zeros((2, 2), np.float32)}, pd)
    r = _run("convert-paddle", str(pd), str(tmp_path / "out.safetensors"))
    assert r.returncode == 2
    assert "missing" in r.stderr and "transform.sp_net.bn.scale" in r.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_init_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert _run("init", str(tmp_path / f"{name}.safetensors"), "--seed", "3").returncode == 0
    a, b = (weights.load(tmp_path / f"{n}.safetensors").state_dict() for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "reads nothing" in weights.read_metadata(tmp_path / "a.safetensors")["source"]


def test_recognize_defaults_to_the_shipped_weights_and_expands_folders_and_globs(tmp_path):
    from spinrec.export.repository import DEFAULT_WEIGHTS

    words = tmp_path / "words"
    (words / "more").mkdir(parents=True)
    for name, text in (("a.png", "hello"), ("more/b.png", "world")):
        _word_png(words / name, text)
    r = _run("recognize", "--json", str(words), str(words / "*.png"), str(tmp_path / "none*.png"))
    assert r.returncode == 1, r.stderr  # the glob that matches nothing
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    paths = [words / "a.png", words / "more" / "b.png", words / "a.png"]
    assert [row["path"] for row in rows[:3]] == [str(p) for p in paths]
    expected = Pipeline.open(DEFAULT_WEIGHTS).recognize([p.read_bytes() for p in paths])
    assert [row["text"] for row in rows[:3]] == [e.text for e in expected]
    assert rows[3]["path"].endswith("none*.png") and "no file matches" in rows[3]["error"]


def test_recognize_behaves_like_the_client(default_server, tmp_path):
    """The same images through `spinrec recognize` (in process) and `spinrec-client` (the default weights served
    fp32): the same texts and flags, the same error lines, the same exit status; codec noise is folded into the
    error, not printed bare; --char-probs without --json is refused."""
    _word_png(tmp_path / "word.png", "house")
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((1, 1), np.uint8))
    cv2.imwrite(str(tmp_path / "wide.png"), np.full((10, 400), 255, np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    images = [str(tmp_path / n) for n in ("word.png", "tiny.png", "wide.png", "bad.png")]
    local = _run("recognize", *images)
    served = subprocess.run([sys.executable, "-m", "spinrec_client", "-u", default_server.http_url, *images],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert local.returncode == served.returncode == 1, (local.stderr, served.stderr)

    def columns(stdout):  # path, text and flag; confidences differ in the last digits between runtimes
        return [(c[0], c[1], c[3] if len(c) > 3 else "") for c in (line.split("\t") for line in stdout.splitlines())]

    assert columns(local.stdout) == columns(served.stdout)
    assert [c[2].split(":")[0] for c in columns(local.stdout)] == ["", "FLAG", "FLAG"]
    errors = lambda err: [line for line in err.splitlines() if "\tERROR: " in line]  # noqa: E731
    assert len(errors(local.stderr)) == 1 and errors(local.stderr)[0].split("\tERROR: ")[0] == images[3]
    assert "libpng" not in "".join(l for l in local.stderr.splitlines() if "\tERROR: " not in l)
    refused = _run("recognize", "--char-probs", images[0])
    assert refused.returncode == 2 and "--char-probs needs --json" in refused.stderr


def test_without_pytorch_the_commands_that_need_it_say_what_to_install(tmp_path):
    """One line naming the extra, in a form that works for a wheel, instead of a ModuleNotFoundError traceback:
    in-process recognition and building the repository (what `spinrec serve` does first)."""
    _word_png(tmp_path / "w.png", "word")
    blocked = "import sys; sys.modules['torch'] = None; "
    for code in (
        f"from spinrec.cli import main; sys.exit(main(['recognize', {str(tmp_path / 'w.png')!r}]))",
        f"from spinrec.export.repository import main; sys.exit(main(['--output', {str(tmp_path / 'repo')!r}]))",
    ):
        done = subprocess.run([sys.executable, "-c", blocked + code], capture_output=True, text=True, timeout=300)
        assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "pip install 'spinrec[torch]'" in done.stderr


def test_weights_that_are_not_a_checkpoint_get_one_line(tmp_path):
    _word_png(tmp_path / "w.png", "word")
    (tmp_path / "notes.safetensors").write_text("not a checkpoint")
    done = _run("recognize", "--weights", str(tmp_path / "notes.safetensors"), str(tmp_path / "w.png"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not a safetensors checkpoint" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_delegated_commands_print_the_command_the_user_typed_as_their_usage():
    for command in ("serve", "synth", "train", "evaluate"):
        done = _run(command, "--help")
        assert done.returncode == 0 and done.stdout.startswith(f"usage: spinrec {command} "), done.stdout[:200]
