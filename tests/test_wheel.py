"""``pip install`` of the built wheel (not editable) into a fresh virtual environment: the package, its data
(model repository configs, kernel sources, default weights) and the ``spinrec-client`` command work from a
directory outside the checkout, the CPU serving path imports no PyTorch, and a server launched from the
installed package reads an image.

Offline and quick by design: the wheel is built with the test environment's setuptools, and the fresh
environment takes its third-party dependencies from the test environment's site-packages through a
``.pth`` line (that line adds the folder only: its own ``.pth`` files, the editable install of the
checkout among them, are not run, so ``spinrec`` can only come from the wheel).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT, _stop, start_triton

pytestmark = pytest.mark.slow

#: Never part of a build: environments, build outputs, built model artifacts, results.
_NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
               "*.onnx", "*.plan", "model.safetensors", "charset.txt", "build.json", "results", "reports")

SERVE_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
from pathlib import Path
import spinrec
from spinrec import contract
from spinrec.export import repository
from spinrec_client import OcrClient
from spinrec.decoder import HeadDecoder
from spinrec.runtime import open_encoder
from spinrec.serving import launch, stages
from spinrec.preprocess import preprocess_batch
repo = Path(sys.argv[1])
batch, _ = preprocess_batch([Path(p).read_bytes() for p in sys.argv[2:]])
texts = [r.text for r in HeadDecoder(repo / contract.CHECKPOINT)(open_encoder("openvino", repo / contract.ONNX, 1)(batch))]
print(json.dumps({"package": spinrec.__file__, "weights": str(repository.DEFAULT_WEIGHTS),
                  "weights_present": repository.DEFAULT_WEIGHTS.is_file(), "source": str(repository.SOURCE),
                  "kernels": sorted(p.name for p in contract.KERNEL_DIR.iterdir()), "texts": texts}))
"""


def run(cmd, cwd, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv holding the wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", source], tmp)
    (wheel,) = (tmp / "dist").glob("spinrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "spinrec/data/default.safetensors" in names and "spinrec/data/model_repository/spin_ocr/config.pbtxt" in names
    assert {"spinrec/kernels/__init__.py", "spinrec/kernels/spinBlendPlugin/CMakeLists.txt"} <= set(names)
    assert not any(n.startswith(("builders/", "perf/", "tests/")) for n in names)
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], tmp)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp).stdout.strip()
    Path(site, "test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def test_the_installed_package_serves_without_torch(installed, built_repository, word_images, tmp_path):
    images = []
    for i, data in enumerate(word_images[:4]):
        images.append(tmp_path / f"word{i}.png")
        images[-1].write_bytes(data)
    done = run([installed, "-c", SERVE_WITHOUT_TORCH, built_repository, *images], tmp_path)
    found = json.loads(done.stdout.splitlines()[-1])
    site = Path(installed).parents[1]
    assert Path(found["package"]).is_relative_to(site), found["package"]
    assert found["weights_present"] and Path(found["weights"]).is_relative_to(site)
    assert Path(found["source"]).is_relative_to(site)
    assert {"CMakeLists.txt", "spinBlendPlugin.h", "spinBlendKernel.cu"} <= set(found["kernels"])

    server = start_triton(built_repository, tmp_path / "server.log", python=str(installed), cwd=tmp_path)
    try:
        client = Path(installed).parent / "spinrec-client"
        done = run([client, *images, "-u", server.http_url, "--json"], tmp_path)
    finally:
        _stop(server.process)
    read = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["text"] for r in read] == found["texts"]
