"""HAProxy in front of Triton: refuses oversized requests before Triton receives them
(``python -m spinrec.serving.front``).

Why a proxy: Triton 2.51 (the server this project runs) has no request-size limit for HTTP or gRPC, and
copies every request into the Python-backend shared memory of ``spin_preprocess`` before our byte limit
(:data:`spinrec.preprocess.MAX_BYTES`) can refuse it; those regions grow with large requests and do not
shrink (triton-inference-server/server#7481), so a stream of large requests grows the server without
bound. The proxy forwards at most :data:`spinrec.preprocess.MAX_REQUEST_BYTES` per request: HTTP by its
``Content-Length`` (413 before the body is read; no length, e.g. chunked, is refused with 400), gRPC by
its buffered body (``tune.bufsize`` holds one request of the limit, so memory stays bounded by
``maxconn`` x 2 buffers). Everything else passes through unchanged, TLS or authentication can be added on
the same frontends (README "Security and limits").
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Callable

from spinrec.preprocess import MAX_REQUEST_BYTES

#: Buffer slack above the body limit for HTTP/2 framing and headers.
_BUFFER_SLACK = 64 * 1024


def size_limit(limit: int = MAX_REQUEST_BYTES) -> dict[str, str]:
    """The HAProxy lines that refuse request bodies over ``limit`` bytes, for any HAProxy in front of Triton
    (this front, the replicas' balancer of deploy/local/haproxy.cfg): ``global`` (the buffer that holds one
    request), ``http`` and ``grpc`` (the rules of an HTTP and an h2c frontend)."""
    return {
        "global": f"    tune.bufsize {limit + _BUFFER_SLACK}",
        "http": f"    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {limit} }}\n"
                f"    http-request deny deny_status 400 if {{ method POST }} !{{ req.hdr(content-length) -m found }}",
        "grpc": f"    option http-buffer-request\n    http-request deny deny_status 413 if {{ req.body_size gt {limit} }}",
    }


#: The value :func:`drain` adds to the drain ACL's pattern file: from then on readiness reads "not ready".
_DRAINING = "draining"


def drain_rules(drain_file: str) -> str:
    """Frontend lines that answer every readiness check with 503 once ``drain_file`` (an ACL pattern file,
    empty at start) holds :data:`_DRAINING`: ``/v2/health/ready``, ``/v2/models/.../ready`` and gRPC's
    ``ServerReady`` / ``ModelReady`` (a gRPC client reads the 503 as UNAVAILABLE). Liveness and inference pass."""
    return (
        f"    acl draining str({_DRAINING}) -m str -f {drain_file}\n"
        "    acl readiness path /v2/health/ready /inference.GRPCInferenceService/ServerReady /inference.GRPCInferenceService/ModelReady\n"
        "    acl readiness path_reg ^/v2/models/[^/]+(/versions/[^/]+)?/ready$\n"
        '    http-request return status 503 content-type text/plain string "draining" if draining readiness'
    )


def haproxy_config(address: str, http_port: int, grpc_port: int, triton_http: str, triton_grpc: str,
                   limit: int = MAX_REQUEST_BYTES, maxconn: int = 64, admin: tuple[str, str] | None = None) -> str:
    """The HAProxy configuration: HTTP on ``address:http_port`` -> ``triton_http``, gRPC (h2c) on
    ``address:grpc_port`` -> ``triton_grpc``, both refusing bodies over ``limit`` bytes. ``admin``: (the runtime
    API's UNIX socket, the drain ACL's pattern file), for :func:`drain`."""
    rules = size_limit(limit)
    global_admin = f"\n    stats socket {admin[0]} mode 600 level admin" if admin else ""
    draining = f"\n{drain_rules(admin[1])}" if admin else ""
    return f"""global
    maxconn {maxconn}
{rules["global"]}{global_admin}
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend spin_http
    bind {address}:{http_port}
{rules["http"]}{draining}
    default_backend triton_http
frontend spin_grpc
    bind {address}:{grpc_port} proto h2
{rules["grpc"]}{draining}
    default_backend triton_grpc
backend triton_http
    # Triton answers an HTTP/1.0 request (HAProxy's own health checks send one) without a length and ends it
    # by closing; reusing that connection left HAProxy tunnelling both sides until its 300 s timeout, one of the
    # {maxconn} connections held per request. Closing the server side after every response ends each one.
    option http-server-close
    server triton {triton_http}
backend triton_grpc
    server triton {triton_grpc} proto h2
"""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/sbin/haproxy") if os.access(p, os.X_OK)), None)
    if found is None:
        raise FileNotFoundError("haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)")
    return found


def start(config: str, directory: str, preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen:
    """HAProxy in the foreground on ``config`` (written into ``directory``), after checking it; ``preexec_fn``
    runs in the child before HAProxy (the launcher ties HAProxy's life to its own there)."""
    path = os.path.join(directory, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(config)
    binary = haproxy_binary()
    subprocess.run([binary, "-c", "-q", "-f", path], check=True)
    return subprocess.Popen([binary, "-db", "-f", path], preexec_fn=preexec_fn)


def admin_files(directory: str) -> tuple[str, str]:
    """The runtime API's socket and the (empty) drain pattern file in ``directory``, for :func:`haproxy_config`."""
    socket_path, drain_file = os.path.join(directory, "admin.sock"), os.path.join(directory, "draining.acl")
    open(drain_file, "w").close()
    return socket_path, drain_file


def drain(admin: tuple[str, str]) -> None:
    """From now on every readiness check through this proxy answers 503 while inference still passes, so
    balancers and probes take the server out before it stops (HAProxy's runtime API: ``add acl``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(admin[0])
        s.sendall(f"add acl {admin[1]} {_DRAINING}\n".encode())
        s.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: s.recv(4096), b"")).decode(errors="replace").strip()
    if answer:  # "add acl" answers nothing when it worked
        raise RuntimeError(f"HAProxy refused to drain: {answer}")


def stop(proxy: subprocess.Popen) -> None:
    """HAProxy's soft stop (SIGUSR1): it closes its listeners at once and exits when the requests in flight are
    answered (SIGTERM, its hard stop, would cut them)."""
    if proxy.poll() is None:
        proxy.send_signal(signal.SIGUSR1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spinrec.serving.front", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1", help="listen address (default: %(default)s; 0.0.0.0 to expose)")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=8081)
    parser.add_argument("--triton-http", default="127.0.0.1:8000", help="Triton's HTTP endpoint (default: %(default)s)")
    parser.add_argument("--triton-grpc", default="127.0.0.1:8001", help="Triton's gRPC endpoint (default: %(default)s)")
    parser.add_argument("--print-config", action="store_true", help="print the HAProxy configuration and exit")
    args = parser.parse_args(argv)
    config = haproxy_config(args.address, args.http_port, args.grpc_port, args.triton_http, args.triton_grpc)
    if args.print_config:
        print(config, end="")
        return 0
    with tempfile.TemporaryDirectory(prefix="spinrec-front-") as tmp:
        proxy = start(config, tmp)
        # systemd, supervisors and Kubernetes send SIGTERM, a terminal SIGINT: either stops HAProxy before this
        # process exits, and the temporary folder goes with it (Python's default SIGTERM would leave both).
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: stop(proxy))
        code = proxy.wait()
        return 0 if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
