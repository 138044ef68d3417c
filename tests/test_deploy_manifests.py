"""deploy/: every Kustomize tree renders, validates against the Kubernetes JSON schemas offline, passes
only flags the served tritonserver accepts, and probes paths a real server answers."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, free_port

DEPLOY = REPO_ROOT / "deploy"
TREES = {
    "cpu": DEPLOY / "kubernetes" / "overlays" / "cpu",
    "gpu": DEPLOY / "kubernetes" / "overlays" / "gpu",
    "monitoring": DEPLOY / "kubernetes" / "monitoring",
    "kserve": DEPLOY / "kserve",
}
EXPECTED_KINDS = {
    "cpu": {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor", "PersistentVolumeClaim", "ConfigMap"},
    "gpu": {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor", "PersistentVolumeClaim", "ConfigMap"},
    "monitoring": {"ConfigMap"},
    "kserve": {"ServingRuntime", "InferenceService", "HorizontalPodAutoscaler", "PodMonitor"},
}
# Custom resources: kubernetes-validate bundles only the core API's schemas. These are checked by hand below
# for the fields this project relies on; their full schemas come with the operators' CRDs, not available offline.
CUSTOM_KINDS = {"PodMonitor", "ServingRuntime", "InferenceService"}
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests target (autoscaling/v2, policy/v1, PDB)
TRITON_CONTAINERS = {"triton", "kserve-container"}


def kubectl() -> str:
    path = shutil.which("kubectl") or shutil.which("kubectl", path=str(REPO_ROOT / ".venv" / "bin"))
    if path is None:
        pytest.fail("kubectl is not installed: scripts/setup.sh --dev installs it")
    return path


def render(tree: str) -> list[dict]:
    done = subprocess.run([kubectl(), "kustomize", str(TREES[tree])], capture_output=True, text=True)
    assert done.returncode == 0, f"kubectl kustomize {TREES[tree]} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {tree: render(tree) for tree in TREES}


def pod_specs(docs: list[dict]):
    for d in docs:
        if d["kind"] == "Deployment":
            yield d["spec"]["template"]["spec"]
        elif d["kind"] == "ServingRuntime":
            yield d["spec"]


def triton_containers(docs: list[dict]) -> list[dict]:
    return [c for spec in pod_specs(docs) for c in spec["containers"] if c["name"] in TRITON_CONTAINERS]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_tree_renders_with_expected_kinds(rendered, tree):
    kinds = {d["kind"] for d in rendered[tree]}
    assert kinds == EXPECTED_KINDS[tree]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_manifests_validate_against_kubernetes_schemas(rendered, tree):
    import kubernetes_validate

    for doc in rendered[tree]:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{tree}: {doc['kind']}/{doc['metadata']['name']} is invalid at {list(e.path)}: {e.message}")


def test_custom_resources_carry_what_their_operators_need(rendered):
    """What the operators' CRDs require of the custom resources used here (their schemas are not offline)."""
    for tree in ("cpu", "gpu", "kserve"):
        for monitor in (d for d in rendered[tree] if d["kind"] == "PodMonitor"):
            assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
            [endpoint] = monitor["spec"]["podMetricsEndpoints"]
            labels = monitor["spec"]["selector"]["matchLabels"]
            ports = {p["name"] for c in triton_containers(rendered[tree]) for p in c["ports"]}
            assert endpoint["port"] in ports, f"{tree}: PodMonitor scrapes port {endpoint['port']!r}, containers have {ports}"
            if tree != "kserve":  # KServe labels its pods itself
                [deployment] = [d for d in rendered[tree] if d["kind"] == "Deployment"]
                pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
                assert labels.items() <= pod_labels.items(), f"{tree}: the PodMonitor selects no pod of the Deployment"
    by_kind = {d["kind"]: d for d in rendered["kserve"]}
    runtime, isvc = by_kind["ServingRuntime"], by_kind["InferenceService"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert {"name": model["modelFormat"]["name"], "version": model["modelFormat"]["version"]} in [
        {"name": f["name"], "version": f["version"]} for f in runtime["spec"]["supportedModelFormats"]
    ]
    assert re.match(r"^(s3|gs|pvc|https?)://", model["storageUri"])
    assert by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == f"{isvc['metadata']['name']}-predictor"


def test_hpa_scales_on_the_adapter_metric(rendered):
    rule = yaml.safe_load((DEPLOY / "kubernetes" / "monitoring" / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"][0]
    for tree in ("cpu", "gpu", "kserve"):
        [hpa] = [d for d in rendered[tree] if d["kind"] == "HorizontalPodAutoscaler"]
        pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        assert [p["metric"]["name"] for p in pods] == [rule["name"]["as"]]
        assert float(pods[0]["target"]["averageValue"]) > 0
    # Per pod: both sides grouped by the HPA's pods, the denominator counts ensemble requests only.
    query = rule["metricsQuery"]
    assert query.count("sum by (<<.GroupBy>>)") == 2 and query.count("<<.LabelMatchers>>") == 2
    assert 'model="spin_ocr"' in query and "1 +" not in query


def test_dashboard_is_grafana_json(rendered):
    [configmap] = rendered["monitoring"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["grafana-dashboard.json"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "p50", "p99", "queue time", "failures by reason", "batch size"):
        assert topic in titles
    assert all(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    # Bad images are answered per image, so Triton's request failures miss them: the preprocessor's own counters.
    from spinrec.contract import FLAGGED_METRIC, REJECTED_METRIC

    [failures] = [p for p in dashboard["panels"] if "failures by reason" in p["title"].lower()]
    exprs = " ".join(t["expr"] for t in failures["targets"])
    assert "nv_inference_request_failure" in exprs and REJECTED_METRIC in exprs and FLAGGED_METRIC in exprs


def tritonserver_flags(docs: list[dict]) -> list[str]:
    """The tritonserver flags a rendered tree passes: a container running the launcher passes the flags the
    launcher composes plus what follows its ``--``; any other container passes its args as they are."""
    from spinrec.serving import launch

    flags = []
    for container in triton_containers(docs):
        args = container.get("args", [])
        if container.get("command", [])[-1:] == ["spinrec.serving.launch"]:
            parsed, extra = launch.parse_args(args)
            assert not [a for a in extra if not a.startswith("--")], f"stray launcher arguments {extra}"
            config = launch.choose_config(parsed.config, True, parsed.model_repository, parsed.plugin)
            flags += launch.server_command(parsed, Path("tritonserver"), None, config, extra)[1:]
        else:
            flags += args
    return flags


def help_options(binary: Path) -> set[str]:
    done = subprocess.run([str(binary), "--help"], capture_output=True, text=True)
    options = set(re.findall(r"^\s+(--[a-z0-9-]+)", done.stdout + done.stderr, re.M))
    assert "--model-repository" in options, "cannot read tritonserver --help"
    return options


@pytest.mark.parametrize("tree", ["cpu", "gpu", "kserve"])
def test_every_tritonserver_flag_is_accepted(rendered, tree, tmp_path):
    """Each flag is in ``tritonserver --help``, and the served binary starts with all of them (ports made
    free, an empty repository) and answers /v2/health/live: it rejects bad flags and values at start."""
    from spinrec.serving.launch import find_server

    binary, _ = find_server()
    flags = tritonserver_flags(rendered[tree])
    known = help_options(binary)
    assert flags, f"{tree}: no tritonserver flags found"
    unknown = [f for f in flags if f.split("=", 1)[0] not in known]
    assert not unknown, f"{tree}: flags tritonserver {binary} does not know: {unknown}"
    http = free_port()
    ports = {"--http-port": http, "--grpc-port": free_port(), "--metrics-port": free_port()}
    cmd = [str(binary)] + [f for f in flags if f.split("=", 1)[0] not in ports and not f.startswith("--model-repository")]
    cmd += [f"--model-repository={tmp_path}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]
    cmd += [f"{k}={v}" for k, v in ports.items()]
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"{tree}: tritonserver refused {cmd}:\n{log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/live", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{tree}: tritonserver not live after 60 s:\n{log.read_text()[-2000:]}"
            time.sleep(0.25)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_clients_reach_triton_only_through_the_size_limiting_front(rendered, tmp_path):
    """Triton 2.51 has no request-size limit, so in each pod its HTTP and gRPC listen on loopback and the
    Service's ports, like the probes, lead to the `front` container: HAProxy with spinrec.serving.front's
    configuration, the one the hostile-traffic test runs (tests/test_hostile_memory.py)."""
    from spinrec.serving import front

    expected = front.haproxy_config("0.0.0.0", 8000, 8001, "127.0.0.1:8010", "127.0.0.1:8011")
    assert (DEPLOY / "kubernetes" / "base" / "haproxy.cfg").read_text() == expected, "regenerate it: see base/kustomization.yaml"
    (tmp_path / "haproxy.cfg").write_text(expected)
    subprocess.run([front.haproxy_binary(), "-c", "-q", "-f", str(tmp_path / "haproxy.cfg")], check=True)
    for tree in ("cpu", "gpu"):
        docs = rendered[tree]
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        [service] = [d for d in docs if d["kind"] == "Service"]
        [configmap] = [d for d in docs if d["kind"] == "ConfigMap"]
        pod = deployment["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        assert {p["name"]: p["containerPort"] for p in containers["front"]["ports"]} == {"http": 8000, "grpc": 8001}
        assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "grpc": "grpc", "metrics": "metrics"}
        assert configmap["data"]["haproxy.cfg"] == expected
        mounted = {v["name"]: v for v in pod["volumes"]}
        [mount] = containers["front"]["volumeMounts"]
        assert mounted[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
        assert {containers["triton"][k]["httpGet"]["port"] for k in ("startupProbe", "readinessProbe", "livenessProbe")} == {8000}
        assert containers["front"]["livenessProbe"]["tcpSocket"]["port"] == "http"
        flags = dict(f.split("=", 1) for f in tritonserver_flags(docs) if "=" in f)  # tritonserver keeps the last
        assert (flags["--http-address"], flags["--grpc-address"]) == ("127.0.0.1", "127.0.0.1"), tree
        assert (flags["--http-port"], flags["--grpc-port"]) == ("8010", "8011"), tree
        assert flags.get("--metrics-address", "0.0.0.0") == "0.0.0.0", tree


def test_probe_paths_answer_on_a_real_server(rendered, triton_server):
    probes = {
        (kind, c[kind]["httpGet"]["path"])
        for tree in ("cpu", "gpu", "kserve")
        for c in triton_containers(rendered[tree])
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert {kind for kind, _ in probes} == {"startupProbe", "readinessProbe", "livenessProbe"}
    for kind, path in sorted(probes):
        with urllib.request.urlopen(f"http://{triton_server.http_url}{path}", timeout=5) as r:
            assert r.status == 200, f"{kind} {path}: HTTP {r.status}"


def _hook_seconds(container: dict) -> tuple[float, list[str]]:
    """The seconds a container's preStop hook sleeps in all, and its shell commands."""
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    assert command[:2] == ["/bin/sh", "-c"], f"{container['name']}: no preStop hook"
    steps = [s.strip() for s in command[2].split("&&")]
    return sum(float(s.split()[1]) for s in steps if s.startswith("sleep ")), steps


def _flag(flags: list[str], name: str) -> float:
    [value] = [f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}=")]
    return float(value)


@pytest.mark.parametrize("tree", ["cpu", "gpu", "kserve"])
def test_a_terminating_pod_drains_before_either_container_stops_accepting(rendered, tree):
    """Kubernetes sends SIGTERM to every container of a pod at once, and the Service's routers learn of the pod's
    removal seconds later: every container first keeps accepting (a preStop sleep), the front proxy then stops
    softly (SIGUSR1, never the kubelet's SIGTERM, HAProxy's hard stop), Triton outlives the front's drain, and the
    grace period covers the front's hook (its drain, then up to its wait for requests in flight) and Triton's hook
    plus its exit timeout, with 10 s to spare."""
    docs = rendered[tree]
    [triton] = triton_containers(docs)
    triton_sleep, _ = _hook_seconds(triton)
    exit_timeout = _flag(tritonserver_flags(docs), "exit-timeout-secs")
    longest = triton_sleep + exit_timeout
    if tree == "kserve":
        [service] = [d for d in docs if d["kind"] == "InferenceService"]
        grace = service["spec"]["predictor"]["terminationGracePeriodSeconds"]
        assert triton_sleep >= 10
    else:
        [spec] = pod_specs(docs)
        grace = spec["terminationGracePeriodSeconds"]
        [front_container] = [c for c in spec["containers"] if c["name"] == "front"]
        front_sleep, steps = _hook_seconds(front_container)
        drain = float(steps[0].split()[1])
        assert steps[1] == "kill -USR1 1", steps  # the soft stop, before the kubelet's SIGTERM
        assert triton_sleep > drain >= 5, "Triton must still serve what the front forwards while it drains"
        longest = max(longest, front_sleep)
    assert grace >= longest + 10, (grace, longest)
    if tree == "cpu":  # the launcher in the pod does not drain again: the hooks did
        args = triton["args"]
        assert "--front=off" in args and "--drain-seconds=0" in args
