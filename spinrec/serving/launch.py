"""Start Triton Inference Server on the SPIN model repository (``python -m spinrec.serving.launch``).

The server binary is ``tritonserver`` from PATH when there is one (an NGC container), otherwise the
Triton 2.51 build inside the ``nvidia-pytriton`` wheel. That wheel's Python backend is not laid out the
way the server expects, so for it the launcher assembles a backend directory (``python/`` holding
``libtriton_python.so``, ``triton_python_backend_utils.py`` and the stub for this Python version)
in a temporary folder. The stub embeds the system ``libpython3.X`` in isolated mode: it ignores
``PYTHONPATH`` and finds its packages as the ``python3`` first on ``PATH`` would (through that
interpreter's ``pyvenv.cfg``), so the launcher puts this interpreter's directory first on ``PATH``.

The repository is built first (:mod:`spinrec.export.repository`) when its artifacts are missing or were
built from other weights than the ones asked for (``--max-error`` and ``--noise-factor`` go to the
builder). Unknown options pass through to ``tritonserver``
(e.g. ``--log-verbose=1`` or ``-- --exit-timeout-secs=5``).

The HTTP and gRPC ports are served through the front proxy (:mod:`spinrec.serving.front`: HAProxy refusing
oversized requests before Triton copies them, which Triton 2.51 cannot do itself) with Triton on loopback-only
internal ports, as in every Kubernetes pod; ``--front off`` serves Triton directly, and so does ``auto`` (the
default) where HAProxy is not installed, with a warning that names the memory risk. The metrics port is
Triton's own (GET only).

The launcher stays in the foreground. On SIGTERM or SIGINT it drains, then stops: readiness (HTTP
``/v2/health/ready``, the models' ``ready``, gRPC ``ServerReady``) answers 503 at once through the front proxy
while inference still passes, for ``--drain-seconds`` (longer than a balancer's or kube-proxy's detection
time); then HAProxy's soft stop (no new connections, requests in flight answered) and Triton's own stop
(SIGTERM, in-flight requests finish within its ``--exit-timeout-secs``); their temporary files go, and the
launcher exits with Triton's status. Readiness is flipped in the proxy because it is the one place every
balancer and probe reaches and Triton 2.51 cannot report "not ready" while it still serves (SIGTERM makes it
refuse new requests at once). Without the proxy the launcher keeps Triton serving for the drain period and
then stops it. A second signal stops everything at once.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from spinrec.export import repository
from spinrec.contract import CPU_CONFIG, DETECTOR_PLAN, PLAN
from spinrec.serving import front

DEFAULT_REPOSITORY = repository.DEFAULT_OUTPUT
# Where spinrec/kernels/spinBlendPlugin's README builds the TensorRT plugin the engine's SpinBlend node needs.
DEFAULT_PLUGIN = Path(os.environ.get("SPIN_PLUGIN_LIBRARY", DEFAULT_REPOSITORY.parent / "build/spin_plugin/libspin_plugin.so"))
#: Seconds between the stop signal and the stop, readiness answering 503 meanwhile (``--drain-seconds``): longer than
#: a balancer's detection time (deploy/local/haproxy.cfg: checks every 500 ms, out after 2 failures) and kube-proxy's.
DRAIN_SECONDS = 5.0
#: How long HAProxy's soft stop may wait for requests in flight before it is stopped hard.
PROXY_STOP_TIMEOUT_S = 30
LOG_LEVELS = {
    "error": ["--log-info=false", "--log-warning=false"],
    "warning": ["--log-info=false"],
    "info": [],
    "verbose": ["--log-verbose=1"],
}


class LaunchError(RuntimeError):
    """The server cannot be started; the message says what to do."""



_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this process has not handed out before.

    The kernel may give a just-closed port again, so servers whose ports are picked one after another (HTTP,
    gRPC, metrics) could otherwise get the same one; bound candidates stay held until a new one turns up."""
    held = []
    try:
        while True:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    finally:
        for s in held:
            s.close()


def find_server() -> tuple[Path, Path | None]:
    """``(tritonserver binary, the wheel's tritonserver folder or None when the binary is from PATH)``."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path), None
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise LaunchError(
            "no tritonserver on PATH and nvidia-pytriton is not installed: run `pip install 'spinrec[serve]'` (in a checkout: "
            "`pip install -e '.[serve]'`) "
            "(it brings nvidia-pytriton==0.7.0 with Triton 2.51) or use an NGC Triton container"
        )
    wheel = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = wheel / "bin" / "tritonserver"
    if not binary.is_file():
        raise LaunchError(f"nvidia-pytriton is installed but {binary} is missing; reinstall nvidia-pytriton==0.7.0")
    return binary, wheel


def layout_backends(wheel: Path, dest: Path) -> Path:
    """Lay out ``dest/python/`` from the wheel's Python backend and stub; returns ``dest``."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in (wheel / "python_backend_stubs").iterdir())
        raise LaunchError(f"the Triton wheel has no Python-backend stub for Python {version} (it has {', '.join(available)})")
    libpython = f"python{version}"
    if ctypes.util.find_library(libpython) is None:
        raise LaunchError(
            f"the Python-backend stub needs the system lib{libpython}.so, which is not installed "
            f"(Debian/Ubuntu: apt-get install libpython{version})"
        )
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    backend = wheel / "backends" / "python"
    for src in (backend / "libtriton_python.so", backend / "triton_python_backend_utils.py", stub):
        (python_dir / src.name).symlink_to(src)
    return dest


def stub_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: this interpreter's directory first on ``PATH``, so Python-backend stubs
    import from this environment (``spinrec`` included, installed editable), and one BLAS/OpenMP thread
    per process unless the caller's environment says otherwise."""
    env = dict(os.environ if base is None else base)
    # The wheel's stub ignores PYTHONPATH (seen: the variable set, sys.path without it); its embedded
    # interpreter locates its prefix by searching PATH for python3 and reading the pyvenv.cfg beside it.
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    # Every model instance is its own process: uncapped, each BLAS/OpenMP pool would size itself to all
    # cores. Stages that want more threads set them explicitly (the encoder's "threads" parameter).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def gpu_visible() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def choose_config(mode: str, from_wheel: bool, repository: Path, plugin: Path) -> str | None:
    """The ``--model-config-name`` to pass (None: each model's ``config.pbtxt``).

    ``auto`` keeps the TensorRT configuration only where it can load: a server from PATH (the wheel has
    no TensorRT backend), a visible GPU, a built engine and the SpinBlend plugin; elsewhere ``cpu``.
    """
    if mode == "cpu":
        return CPU_CONFIG
    if mode == "default":
        return None
    engines = (repository / PLAN).is_file() and (repository / DETECTOR_PLAN).is_file()
    tensorrt_ready = not from_wheel and gpu_visible() and engines and plugin.is_file()
    return None if tensorrt_ready else CPU_CONFIG


def ensure_built(output: Path, weights: Path | None, rebuild: bool, options: list[str] | None = None, detector: Path | None = None) -> None:
    """Run the repository builder (in a child process: torch stays out of the launcher) when needed;
    ``options`` (e.g. ``["--max-error", "2e-4"]``) go to the builder's command line; ``detector``: the text
    detector's ONNX graph (default: the builder's)."""
    try:
        reason = "--rebuild" if rebuild else repository.needs_build(output, weights, detector=detector)
    except repository.BuildError as e:
        raise LaunchError(str(e)) from None
    if reason is not None:
        print(f"launch: building {output} ({reason})", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "spinrec.export.repository", "--output", str(output)]
        if weights is not None:
            cmd += ["--weights", str(weights)]
        if detector is not None:
            cmd += ["--detector", str(detector)]
        cmd += options or []
        if subprocess.run(cmd).returncode != 0:
            raise LaunchError(f"building {output} failed (see above)")
        return  # the builder has printed its own warnings
    warn_if_unusable(output)


def warn_if_unusable(output: Path) -> None:
    """The banner of a repository built from no weights, or from weights that read nothing (build.json)."""
    record = repository.read_record(output) or {}
    reads = record.get("reads") or {}
    if record.get("untrained"):
        print(repository.UNTRAINED_BANNER.format(
            bar="!" * 100, default=repository.DEFAULT_WEIGHTS, seed=repository.UNTRAINED_SEED
        ), file=sys.stderr, flush=True)
    elif reads and not reads.get("usable", True):
        print(repository.DEGENERATE_BANNER.format(
            bar="!" * 100, source=record["checkpoint"]["source"], accuracy=reads["word_accuracy"], images=reads["images"]
        ), file=sys.stderr, flush=True)


def server_command(args: argparse.Namespace, binary: Path, backend_dir: Path | None, config: str | None, extra: list[str],
                   internal: tuple[int, int] | None = None) -> list[str]:
    """tritonserver's command line; ``internal``: the (HTTP, gRPC) ports on 127.0.0.1 it serves behind the front
    proxy, which then holds the public ones (None: Triton serves ``args``' address and ports itself)."""
    address, http_port, grpc_port = ("127.0.0.1", *internal) if internal else (args.address, args.http_port, args.grpc_port)
    cmd = [
        str(binary),
        f"--model-repository={args.model_repository}",
        f"--http-address={address}",
        f"--http-port={http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={args.address}",
        f"--metrics-port={args.metrics_port}",
        *LOG_LEVELS[args.log_level],
    ]
    if backend_dir is not None:
        cmd.append(f"--backend-directory={backend_dir}")
    if config is not None:
        cmd.append(f"--model-config-name={config}")
    else:
        # The TensorRT backend dlopens the plugin at start-up so the engine's SpinBlend layer deserialises.
        cmd.append(f"--backend-config=tensorrt,plugins={args.plugin}")
    return cmd + extra


def _die_with_parent() -> None:
    """Runs in the child before exec: the server gets SIGTERM if the launcher dies, even by SIGKILL."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


FRONT_MISSING = (
    "launch: WARNING: haproxy is not installed, so Triton serves the public ports itself. Triton 2.51 has no "
    "request-size limit: it copies every request into shared memory that does not shrink, so large requests grow "
    "the server without bound (ten 50 MB requests took it from 594 to 2,115 MiB). Install HAProxy (Debian: apt-get "
    "install haproxy; scripts/setup.sh does) to serve behind the front proxy."
)


def use_front(mode: str) -> bool:
    """Whether the public ports go through the front proxy: ``on`` (HAProxy required), ``off``, or ``auto``
    (when HAProxy is installed; otherwise Triton directly, after :data:`FRONT_MISSING`)."""
    if mode == "off":
        return False
    try:
        front.haproxy_binary()
    except FileNotFoundError as e:
        if mode == "on":
            raise LaunchError(f"--front on: {e}") from None
        print(FRONT_MISSING, file=sys.stderr, flush=True)
        return False
    return True


def builder_options(args: argparse.Namespace) -> list[str]:
    """The builder's command-line options among the launcher's arguments."""
    return repository.export_check_options(args.max_error, args.noise_factor)


def parse_args(argv: list[str] | None, prog: str = "python -m spinrec.serving.launch") -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Start Triton on the SPIN model repository (unknown options go to tritonserver).",
    )
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY, help="default: %(default)s")
    parser.add_argument("--address", default="127.0.0.1", help="listen address of all endpoints (default: %(default)s; 0.0.0.0 to expose)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log-level", choices=sorted(LOG_LEVELS), default="info")
    parser.add_argument(
        "--config", choices=("auto", "cpu", "default"), default="auto",
        help="model configuration: cpu = configs/cpu.pbtxt (the ONNX graph under OpenVINO or ONNX Runtime, its \"runtime\" parameter; OpenVINO as shipped), default = config.pbtxt (TensorRT); "
        "auto = default only with tritonserver on PATH, a GPU and built engines (the encoder's and the detector's model.plan) (default: %(default)s)",
    )
    parser.add_argument(
        "--plugin", type=Path, default=DEFAULT_PLUGIN,
        help="the SpinBlend TensorRT plugin, loaded with the TensorRT configuration (default: $SPIN_PLUGIN_LIBRARY or %(default)s)",
    )
    parser.add_argument(
        "--front", choices=("auto", "on", "off"), default="auto",
        help="serve the HTTP and gRPC ports through the size-limiting front proxy (HAProxy) with Triton on loopback-only "
        "internal ports: on, off, or auto = on where haproxy is installed (default: %(default)s)",
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=DRAIN_SECONDS,
        help="on SIGTERM/SIGINT, report not-ready (through the front proxy) and keep serving this long before stopping; "
        "0 stops at once (default: %(default)s)",
    )
    parser.add_argument("--weights", type=Path, help="build the repository from this safetensors checkpoint")
    parser.add_argument(
        "--detector", type=Path,
        help="build spin_page with this text detector, a PaddleOCR DB export in ONNX (default: PP-OCRv6 det small from the installed rapidocr)",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the repository even if it looks current")
    parser.add_argument("--no-build", action="store_true", help="serve the repository as it is")
    for option, help_text in (
        ("--max-error", "builder: ONNX-vs-PyTorch feature error always accepted (python -m spinrec.export.repository --help)"),
        ("--noise-factor", "builder: multiple of PyTorch's own float32 feature noise also accepted"),
    ):
        parser.add_argument(option, type=float, help=help_text)
    args, extra = parser.parse_known_args(argv)
    if "--" in extra:  # argparse keeps the separator; tritonserver must not see it
        extra.remove("--")
    args.model_repository = args.model_repository.resolve()
    return args, extra


def serve(cmd: list[str], args: argparse.Namespace, internal: tuple[int, int] | None) -> int:
    """Run Triton (and, with ``internal`` ports, the front proxy on the public ones) until it exits or a signal
    drains and stops both (the module doc); returns Triton's exit status."""
    server = subprocess.Popen(cmd, env=stub_environment(), preexec_fn=_die_with_parent)
    signals: list[int] = []
    signalled = threading.Event()

    def on_signal(signum, _frame) -> None:
        signals.append(signum)
        signalled.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with tempfile.TemporaryDirectory(prefix="spinrec-front-") as tmp:
        proxy, admin = None, None
        if internal is not None:
            admin = front.admin_files(tmp)
            config = front.haproxy_config(args.address, args.http_port, args.grpc_port, f"127.0.0.1:{internal[0]}",
                                          f"127.0.0.1:{internal[1]}", admin=admin)  # fmt: skip
            try:
                proxy = front.start(config, tmp, preexec_fn=_die_with_parent)
            except (OSError, subprocess.CalledProcessError) as e:
                server.terminate()
                server.wait()
                raise LaunchError(f"the front proxy did not start: {e}") from None
            print(f"launch: front proxy (HAProxy) on {args.address}:{args.http_port} (HTTP) and :{args.grpc_port} (gRPC), "
                  f"refusing requests over {front.MAX_REQUEST_BYTES} bytes; Triton on 127.0.0.1:{internal[0]} and :{internal[1]}",
                  file=sys.stderr, flush=True)  # fmt: skip
        while server.poll() is None and not signalled.wait(0.5):
            pass
        if server.poll() is None:
            _drain_and_stop(server, proxy, admin, args.drain_seconds, signals)
        code = server.wait()
        if proxy is not None:  # Triton gone (stopped, or crashed): the proxy in front of it goes too
            front.stop(proxy)
            _wait_or_kill(proxy, PROXY_STOP_TIMEOUT_S)
    return 128 - code if code < 0 else code


def _wait_or_kill(process: subprocess.Popen, timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _drain_and_stop(server: subprocess.Popen, proxy: subprocess.Popen | None, admin: tuple[str, str] | None,
                    drain_seconds: float, signals: list[int]) -> None:
    """The stop sequence after the first signal (the module doc); a further signal in ``signals`` cuts it short."""
    again = lambda: len(signals) > 1  # noqa: E731
    if drain_seconds > 0:
        if proxy is not None and admin is not None:
            try:
                front.drain(admin)
                print(f"launch: draining: not ready for {drain_seconds:g} s while still serving, then stopping "
                      "(signal again to stop at once)", file=sys.stderr, flush=True)  # fmt: skip
            except (OSError, RuntimeError) as e:
                print(f"launch: could not flip readiness in the front proxy ({e}); still serving for {drain_seconds:g} s",
                      file=sys.stderr, flush=True)  # fmt: skip
        else:
            print(f"launch: still serving for {drain_seconds:g} s (no front proxy to report not-ready), then stopping",
                  file=sys.stderr, flush=True)  # fmt: skip
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and not again() and server.poll() is None:
            time.sleep(0.05)
    if proxy is not None:
        front.stop(proxy)  # soft: answers what is in flight
        deadline = time.monotonic() + PROXY_STOP_TIMEOUT_S
        while proxy.poll() is None and time.monotonic() < deadline and not again():
            time.sleep(0.05)
        if proxy.poll() is None:
            proxy.terminate()  # hard stop
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    while server.poll() is None:
        if again():
            server.kill()
            break
        time.sleep(0.05)


def main(argv: list[str] | None = None, prog: str = "python -m spinrec.serving.launch") -> int:
    """``prog``: the command as the user typed it (``spinrec serve`` passes its own), for usage lines."""
    args, extra = parse_args(argv, prog)
    try:
        binary, wheel = find_server()
        if not args.no_build:
            ensure_built(args.model_repository, args.weights, args.rebuild, builder_options(args), args.detector)
        else:
            warn_if_unusable(args.model_repository)
        config = choose_config(args.config, wheel is not None, args.model_repository, args.plugin)
        internal = (free_port(), free_port()) if use_front(args.front) else None
        with tempfile.TemporaryDirectory(prefix="spinrec-triton-backends-") as tmp:
            backend_dir = layout_backends(wheel, Path(tmp)) if wheel is not None else None
            cmd = server_command(args, binary, backend_dir, config, extra, internal)
            print("launch: " + " ".join(cmd), file=sys.stderr, flush=True)
            return serve(cmd, args, internal)
    except LaunchError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
