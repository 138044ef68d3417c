"""The installs CI tests, each from wheels built from this checkout into a fresh virtual environment (not
editable), from a directory outside the checkout:

- ``pip install ./client '.[serve,torch]'`` (the spinrec wheel and the client's): the package, its data (model
  repository configs, kernel sources, default weights), ``spinrec --help`` and ``spinrec-client --help``, the
  CPU serving path without PyTorch, and a server launched from the installed package reading an image;
- ``pip install ./client`` alone: ``spinrec-client --help`` and one read against that server, with only the
  client's declared dependencies present (no spinrec, PyTorch, OpenVINO, ONNX Runtime, OpenCV or CUDA).

Offline and quick by design: the wheels are built with the test environment's setuptools. The server's
environment takes its third-party dependencies from the test environment's site-packages through a ``.pth``
line (that line adds the folder only: its own ``.pth`` files, the editable installs of the checkout among them,
are not run, so ``spinrec`` and ``spinrec_client`` can only come from the wheels). The client's environment
gets a folder holding links to exactly the distributions the client's metadata requires, resolved from the
test environment: what ``pip install ./client`` would install, and nothing else.
"""

from __future__ import annotations

import importlib.metadata
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
import spinrec_client
from spinrec.decoder import HeadDecoder
from spinrec.runtime import open_encoder
from spinrec.serving import launch, stages
from spinrec.preprocess import preprocess_batch
repo = Path(sys.argv[1])
batch, _ = preprocess_batch([Path(p).read_bytes() for p in sys.argv[2:]])
texts = [r.text for r in HeadDecoder(repo / contract.CHECKPOINT)(open_encoder("openvino", repo / contract.ONNX, 1)(batch))]
print(json.dumps({"package": spinrec.__file__, "client": spinrec_client.__file__, "weights": str(repository.DEFAULT_WEIGHTS),
                  "weights_present": repository.DEFAULT_WEIGHTS.is_file(), "source": str(repository.SOURCE),
                  "kernels": sorted(p.name for p in contract.KERNEL_DIR.iterdir()), "texts": texts}))
"""


#: What the client must never bring in (the issue's list; "cuda" is cuda-python, which tritonclient[all] pulls).
NOT_IN_CLIENT = ("spinrec", "torch", "openvino", "onnxruntime", "cv2", "cuda")

CLIENT_READS = """
import importlib.util, json, sys
from spinrec_client.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "loaded": sorted(m for m in NOT_IN_CLIENT if m in sys.modules),
                  "installed": sorted(m for m in NOT_IN_CLIENT if importlib.util.find_spec(m) is not None)}))
""".replace("NOT_IN_CLIENT", repr(NOT_IN_CLIENT))


def run(cmd, cwd, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """The spinrec and spinrec-client wheels built from a copy of this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    for project in (source, source / "client"):
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", project], tmp)
    (wheel,) = (tmp / "dist").glob("spinrec-*.whl")
    (client,) = (tmp / "dist").glob("spinrec_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "spinrec/data/default.safetensors" in names and "spinrec/data/model_repository/spin_ocr/config.pbtxt" in names
    assert {"spinrec/kernels/__init__.py", "spinrec/kernels/spinBlendPlugin/CMakeLists.txt"} <= set(names)
    assert not any(n.startswith(("builders/", "perf/", "tests/", "client/", "spinrec_client/")) for n in names)
    client_names = zipfile.ZipFile(client).namelist()
    assert {"spinrec_client/__init__.py", "spinrec_client/contract.py", "spinrec_client/inputs.py"} <= set(client_names)
    assert all(n.startswith(("spinrec_client/", "spinrec_client-")) for n in client_names), client_names
    return {"spinrec": wheel, "client": client}


def fresh_venv(path: Path, wheels: list[Path], dependencies: Path) -> Path:
    """The python of a venv at ``path`` holding ``wheels`` (no dependencies installed), with ``dependencies``
    (a site-packages folder) on its path."""
    run([sys.executable, "-m", "venv", "--without-pip", path], path.parent)
    python = path / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", *wheels], path.parent)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], path.parent).stdout.strip()
    Path(site, "test_dependencies.pth").write_text(f"{dependencies}\n")
    return python


@pytest.fixture(scope="module")
def installed(wheels, tmp_path_factory) -> Path:
    """The python of a fresh venv holding both wheels (``pip install ./client '.[serve,torch]'``)."""
    return fresh_venv(tmp_path_factory.mktemp("serve") / "venv", [wheels["spinrec"], wheels["client"]], Path(sysconfig.get_path("purelib")))


def requirement_closure(name: str, extras: frozenset[str] = frozenset()) -> dict[str, importlib.metadata.Distribution]:
    """``name`` and every distribution it requires, transitively (markers evaluated, extras followed), as
    installed in this environment: what ``pip install`` of ``name`` brings."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(name, extras)]
    while todo:
        dist_name, dist_extras = todo.pop()
        dist = importlib.metadata.distribution(dist_name)
        key = canonicalize_name(dist.metadata["Name"])
        seen = key in found
        found[key] = dist
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (dist_extras or {""})):
                if not seen or req.extras:
                    todo.append((req.name, frozenset(req.extras)))
    return found


@pytest.fixture(scope="module")
def client_only(wheels, tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the client wheel, its dependencies (linked from this
    environment's site-packages) being exactly those the client's metadata names."""
    tmp = tmp_path_factory.mktemp("client")
    site = Path(sysconfig.get_path("purelib"))
    deps = tmp / "dependencies"
    deps.mkdir()
    closure = requirement_closure("spinrec-client")
    closure.pop("spinrec-client")
    for dist in closure.values():
        for top in {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}:
            if (site / top).exists() and not (deps / top).exists():
                (deps / top).symlink_to(site / top)
    forbidden = [m for m in NOT_IN_CLIENT if (deps / m).exists()]
    assert not forbidden, f"the client's dependencies bring {forbidden}: {sorted(closure)}"
    return fresh_venv(tmp / "venv", [wheels["client"]], deps)


@pytest.fixture(scope="module")
def wheel_server(installed, built_repository, tmp_path_factory):
    """A server launched by the installed package (outside the checkout)."""
    cwd = tmp_path_factory.mktemp("wheel_server")
    server = start_triton(built_repository, cwd / "server.log", python=str(installed), cwd=cwd)
    yield server
    _stop(server.process)


def test_the_installed_package_serves_without_torch(installed, wheel_server, built_repository, word_images, tmp_path):
    images = []
    for i, data in enumerate(word_images[:4]):
        images.append(tmp_path / f"word{i}.png")
        images[-1].write_bytes(data)
    done = run([installed, "-c", SERVE_WITHOUT_TORCH, built_repository, *images], tmp_path)
    found = json.loads(done.stdout.splitlines()[-1])
    site = Path(installed).parents[1]
    assert Path(found["package"]).is_relative_to(site), found["package"]
    assert Path(found["client"]).is_relative_to(site), found["client"]
    assert found["weights_present"] and Path(found["weights"]).is_relative_to(site)
    assert Path(found["source"]).is_relative_to(site)
    assert {"CMakeLists.txt", "spinBlendPlugin.h", "spinBlendKernel.cu"} <= set(found["kernels"])

    bin_dir = Path(installed).parent
    assert "usage: spinrec" in run([bin_dir / "spinrec", "--help"], tmp_path).stdout
    assert "usage: spinrec-client" in run([bin_dir / "spinrec-client", "--help"], tmp_path).stdout
    done = run([bin_dir / "spinrec-client", *images, "-u", wheel_server.http_url, "--json"], tmp_path)
    read = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["text"] for r in read] == found["texts"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_client_installs_alone(client_only, wheel_server, expected, word_images, tmp_path, protocol):
    """``pip install ./client``: the command and one read, over each protocol, with nothing of the server."""
    image = tmp_path / "word.png"
    image.write_bytes(word_images[0])
    assert "usage: spinrec-client" in run([Path(client_only).parent / "spinrec-client", "--help"], tmp_path).stdout
    done = run([client_only, "-c", CLIENT_READS, "--json", "-i", protocol, "-u", wheel_server.url(protocol), image], tmp_path)
    lines = done.stdout.splitlines()
    found = json.loads(lines[-1])
    assert found == {"status": 0, "loaded": [], "installed": []}, found
    assert json.loads(lines[0])["text"] == expected[0].text
