"""Imports run one way: the package never reaches up into the repository's tools, its modules import each
other without loops, the client (``client/spinrec_client``, its own distribution) imports nothing of the
server (spinrec -> spinrec_client, never back), and the CPU serving path runs without PyTorch.

The graph is read from the sources with ``ast``, function-level imports included (a lazy import is still a
dependency: it only moves the failure to the first call).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spinrec"
#: The client's package: a distribution of its own (client/pyproject.toml), importable without the server.
CLIENT = PACKAGE.parent / "client" / "spinrec_client"
#: Top-level folders of the repository that are tools around the package, never dependencies of it.
OUTSIDE = ("builders", "perf", "reliability", "reference", "tests", "conftest")
#: Which tool folders each one may import (tests may import all): the reliability harnesses launch servers and
#: render requests with perf's helpers, perf's Paddle baseline runs the fidelity reference; nothing imports back.
TOOLS = {"builders": (), "reference": (), "perf": ("reference",), "reliability": ("perf",)}


def module_name(path: Path) -> str:
    root = CLIENT.parent if path.is_relative_to(CLIENT) else PACKAGE.parent
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> list[tuple[str, int]]:
    """``(absolute module name, line)`` of every import in ``path``; ``from pkg import sub`` names ``pkg.sub``
    when ``sub`` is a module of this package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if _is_package_module(sub) else base, node.lineno))
    return out


def _is_package_module(name: str) -> bool:
    top, _, rest = name.partition(".")
    package = {"spinrec": PACKAGE, "spinrec_client": CLIENT}.get(top)
    if package is None or not rest:
        return False
    rel = Path(*rest.split("."))
    return (package / rel).with_suffix(".py").is_file() or (package / rel / "__init__.py").is_file()


def package_graph() -> dict[str, list[tuple[str, int]]]:
    return {module_name(p): imported_names(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_package_never_imports_the_tools_around_it():
    upward = [
        f"{module} line {line}: {target}"
        for module, targets in package_graph().items()
        for target, line in targets
        if target.split(".")[0] in OUTSIDE
    ]
    assert not upward, "the package imports repository tools:\n" + "\n".join(upward)


def test_the_client_never_imports_the_server():
    """``pip install ./client`` holds only spinrec_client: an import of spinrec (or of a tool folder) would fail
    there, so the client imports only itself, the standard library and its declared dependencies."""
    upward = [
        f"{module} line {line}: {target}"
        for module, targets in ((module_name(p), imported_names(p)) for p in sorted(CLIENT.rglob("*.py")))
        for target, line in targets
        if target.split(".")[0] in ("spinrec", *OUTSIDE)
    ]
    assert not upward, "the client imports the server or repository tools:\n" + "\n".join(upward)
    assert CLIENT.is_dir() and module_name(CLIENT / "ocr.py") == "spinrec_client.ocr"


@pytest.mark.parametrize("folder", ["spinrec", "client/spinrec_client", *TOOLS])
def test_no_import_loops(folder):
    """Within the package, the client, and each tool folder around them (builders/build_engine and
    verify_engine once imported each other)."""
    root = PACKAGE.parent / folder
    top = Path(folder).name
    graph = {
        module: {t for t, _ in targets if t.startswith(f"{top}.") and t != module and not module.startswith(t + ".")}
        for module, targets in ((module_name(p), imported_names(p)) for p in sorted(root.rglob("*.py")))
    }
    loops = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                loops.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not loops, "import loops:\n" + "\n".join(loops)


@pytest.mark.parametrize("folder", sorted(TOOLS))
def test_tool_folders_import_one_way(folder):
    root = PACKAGE.parent / folder
    assert (root / "__init__.py").is_file(), f"{folder}/ is not a package"
    wrong = [
        f"{module_name(p)} line {line}: {target}"
        for p in sorted(root.rglob("*.py"))
        for target, line in imported_names(p)
        if target.split(".")[0] in OUTSIDE and target.split(".")[0] not in (folder, *TOOLS[folder])
    ]
    assert not wrong, f"{folder}/ may import only {TOOLS[folder] or 'no other tool folder'}:\n" + "\n".join(wrong)


#: The package's subpackages from the bottom up: each may import the top-level shared modules and the
#: subpackages before it, never one after it (the runtime loads the kernels' library, page reading runs the detector on
#: the runtime, training reads through evaluation's metric, export quantizes with training's images, gates with
#: evaluation and installs page's detector, serving builds repositories with export).
LAYERS = ("kernels", "models", "runtime", "page", "evaluation", "training", "export", "serving")


def test_each_subpackage_imports_only_downward():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS), f"place every subpackage in LAYERS: {sorted(subpackages ^ set(LAYERS))}"
    upward = []
    for module, targets in package_graph().items():
        parts = module.split(".")
        if len(parts) < 3 and not (len(parts) == 2 and parts[1] in LAYERS):
            continue  # a top-level shared module
        rank = LAYERS.index(parts[1])
        for target, line in targets:
            layer = target.split(".")[1] if target.startswith("spinrec.") and target.count(".") >= 1 else None
            if layer in LAYERS and LAYERS.index(layer) > rank:
                upward.append(f"{module} line {line}: {target}")
    assert not upward, "subpackages importing upward:\n" + "\n".join(upward)


def test_the_graph_reader_sees_a_lazy_upward_import(tmp_path, monkeypatch):
    """The checks above are only as good as the reader: a function-level ``from builders import x`` and
    ``from . import y`` must both show up."""
    module = PACKAGE / "serving" / "launch.py"
    found = dict(imported_names(module))
    assert "spinrec.export.repository" in found and "spinrec.contract" in found
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from builders import build_engine\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert ("builders", 2) in imported_names(probe)


SERVE_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
import cv2
import numpy as np
from spinrec import contract
from spinrec.charset import Charset
from spinrec.preprocess import preprocess_batch
from spinrec.decoder import HeadDecoder
from spinrec.runtime import SERVED, open_encoder
from spinrec.serving import launch, stages

repo = Path(sys.argv[1])
image = cv2.imencode(".png", np.full((32, 100, 3), 255, np.uint8))[1].tobytes()
batch, _ = preprocess_batch([image, image])
decoder = HeadDecoder(repo / contract.CHECKPOINT, Charset.from_file(str(repo / contract.CHARSET)))
texts = {}
for runtime in SERVED:
    encoder = open_encoder(runtime, repo / contract.ONNX, 1)
    texts[runtime] = [r.text for r in decoder(encoder(batch))]
print(json.dumps({"texts": texts, "torch": "torch" in sys.modules}))
"""


@pytest.mark.slow
def test_the_cpu_serving_path_runs_without_torch(built_repository):
    """Every serving stage built and run in one process (both encoder runtimes): PyTorch never loads."""
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, str(built_repository)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert set(result["texts"]) == {"onnxruntime", "openvino"} and all(len(t) == 2 for t in result["texts"].values())
    assert result["torch"] is False
