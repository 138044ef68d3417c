"""Building the model repository reads nothing outside the virtual environment and the repository: no system
word list or font (the INT8 calibration images are the versioned set in the package), and it never imports the
training package. Two builds of the same weights give byte-identical encoders, INT8 included, so every machine
serves the same INT8 encoder from the same weights whatever fonts it has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEFAULT_WEIGHTS, REPO_ROOT
from spinrec.contract import INT8_FILES, ONNX

#: What a machine-dependent build would read: the word list and font folders of spinrec.training.synth, and
#: where fontconfig and users keep fonts.
FORBIDDEN = ("/usr/share/dict", "/usr/share/fonts", "/usr/local/share/fonts", "/etc/fonts", str(Path.home() / ".fonts"),
             str(Path.home() / ".local/share/fonts"))  # fmt: skip

#: Runs the builder in this interpreter with an audit hook (PEP 578) that records every open, directory listing
#: and import the ``FORBIDDEN`` rule catches; prints them as the last line.
AUDITED_BUILD = """
import json, os, sys
forbidden = tuple(sys.argv[1].split(os.pathsep))
seen = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(forbidden):
            seen.append(event + " " + path)
    elif event == "import" and (args[0] == "spinrec.training" or args[0].startswith("spinrec.training.")):
        seen.append("import " + args[0])
sys.addaudithook(hook)
from spinrec.export.repository import main
code = main(sys.argv[2:])
print("AUDIT " + json.dumps(seen))
sys.exit(code)
"""


def audited_build(output: Path, weights: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", AUDITED_BUILD, os.pathsep.join(FORBIDDEN), "--output", str(output), "--weights", str(weights)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("AUDIT "), done.stdout[-2000:]
    return json.loads(last.removeprefix("AUDIT "))


def test_the_audit_hook_sees_what_a_machine_dependent_build_would_read(tmp_path):
    """The hook is not blind: rendering one synthetic word (what the INT8 calibration used to do) trips it."""
    probe = AUDITED_BUILD.replace(
        "from spinrec.export.repository import main\ncode = main(sys.argv[2:])",
        "from spinrec.training.synth import SynthConfig, WordImages\nWordImages(SynthConfig()).sample(0, 0)\ncode = 0",
    )
    done = subprocess.run([sys.executable, "-c", probe, os.pathsep.join(FORBIDDEN)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "SynthError" in done.stderr:
        pytest.skip("this machine has no word list or fonts to render with (the fresh-machine case)")
    seen = json.loads(done.stdout.strip().splitlines()[-1].removeprefix("AUDIT "))
    assert any(s.startswith("import spinrec.training") for s in seen)
    assert any(s.startswith("open /usr/share/dict") for s in seen) and any("fonts" in s for s in seen), seen[:10]


@pytest.mark.slow
def test_building_with_int8_is_hermetic_and_repeatable(tmp_path):
    """The default build (INT8 and its gate included) of the shipped weights, twice, under the audit hook: nothing
    forbidden is opened, listed or imported, and the float and INT8 encoders are identical byte for byte."""
    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"{DEFAULT_WEIGHTS} is not in this checkout")
    builds = [tmp_path / "a", tmp_path / "b"]
    for out in builds:
        assert audited_build(out, DEFAULT_WEIGHTS) == []
    a, b = (json.loads((out / "build.json").read_text()) for out in builds)
    assert a["precision"]["served"] == "int8" and a["int8_gate"] == b["int8_gate"]
    artifacts = [ONNX] + [ONNX.with_name(name) for name in INT8_FILES.values()] + [ONNX.with_name(INT8_FILES["openvino"]).with_suffix(".bin")]
    for artifact in artifacts:
        assert (builds[0] / artifact).read_bytes() == (builds[1] / artifact).read_bytes(), f"{artifact} differs between two builds"
