"""A bounded fuzz run of the decode path (tests/fuzz_decode.py) in a child process: a crash or a hang
there fails this test instead of the test session."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT

EXAMPLES = 200


def test_mutated_images_end_as_an_image_error_or_a_reading(tmp_path):
    out = tmp_path / "fuzz.json"
    cmd = [sys.executable, "tests/fuzz_decode.py", "--examples", str(EXAMPLES), "--seed", "1", "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    counts = result["counts"]
    assert result["examples"] == EXAMPLES
    assert counts["read"] + sum(v for k, v in counts.items() if k.startswith("error:")) == EXAMPLES
    # The mutations must reach both ends: some inputs still decode, some get past the header and fail.
    assert counts["read"] > 0 and counts.get("error:corrupt", 0) > 0
