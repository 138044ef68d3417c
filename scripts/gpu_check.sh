#!/usr/bin/env bash
# The checks that need a GPU and TensorRT, as one command on a GPU host with Docker, the NVIDIA container
# toolkit and access to NVIDIA's NGC images (nvcr.io/nvidia/tensorrt and tritonserver 24.10):
#
#   bash scripts/gpu_check.sh [OUT]        # default OUT: reports/gpu_check; the report is OUT/report.md
#
# 1. .venv (scripts/setup.sh --dev, made if missing) renders a held-out synthetic word set: font families
#    training never saw;
# 2. docker/Dockerfile builds the GPU image: the SpinBlend plugin compiled against the image's TensorRT
#    (warnings as errors), cuda-python for device buffers;
# 3. in the image: the TensorRT tests (pytest -m tensorrt: creator registration, the plugin alone in an engine
#    against the PyTorch op, encoder engines of both graphs and the text detector's engine verified against
#    ONNX Runtime); a skip fails;
# 4. in the image, as its first start would: the shipped default's FP32 and FP16 engines and the text detector's
#    (builders.gpu_start), the encoder's verified against ONNX Runtime on the real development crops
#    (../shared/real_crops_dev) and the held-out set: feature error within builders.verify_engine.TOLERANCE,
#    identical texts on every crop; the detector's on the synthetic page and the real development photographs
#    (../shared/real_pages_dev/images, when present): probability maps within builders.verify_detector.TOLERANCE,
#    as many words on every photograph;
# 5. the image serving the FP16 (TensorRT) configuration, measured by perf_analyzer from .venv (python -m perf.run),
#    its spin_detector checked against ONNX Runtime as in step 4, and spin_page reading the synthetic page
#    (spinrec-client --page: its five words, drawn into OUT/synthetic_page_read.png);
# 6. OUT/report.md (python -m builders.gpu_report). Exits non-zero when any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$(mkdir -p "${1:-reports/gpu_check}" && cd "${1:-reports/gpu_check}" && pwd)
work=$out/work  # written by the container (as root); kept for inspection
image=${SPIN_GPU_IMAGE:-spin-ocr-gpu-check}
crops=$(cd .. && pwd)/shared/real_crops_dev
pages=$(cd .. && pwd)/shared/real_pages_dev/images  # validation photographs: read, never trained on
weights=$root/weights/default.safetensors
heldout_count=${SPIN_HELDOUT_COUNT:-300}
failed=()

say() { echo "gpu_check: $*" >&2; }
for tool in docker nvidia-smi curl; do
    command -v "$tool" >/dev/null || { say "$tool not found: run this on a GPU host with Docker and the NVIDIA container toolkit"; exit 2; }
done
[ -d "$crops" ] || { say "no real crops at $crops (../shared beside the repository)"; exit 2; }
[ -f "$weights" ] || { say "no shipped default at $weights"; exit 2; }
pages_mount=() page_images=() page_images_host=()
if [ -d "$pages" ]; then
    pages_mount=(-v "$pages:/pages:ro") page_images=(--images /pages) page_images_host=(--images "$pages")
else
    say "no photographs at $pages: the detector is verified on the synthetic page only"
fi
[ -f .venv/.spinrec-dev ] || bash scripts/setup.sh --dev
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

say "1/6 held-out synthetic set ($heldout_count images)"
if [ ! -f "$work/heldout/labels.txt" ]; then
    mkdir -p "$work"
    .venv/bin/python -m spinrec.training.synth "$work/heldout" --count "$heldout_count" --seed 20261203 --split heldout
fi

say "2/6 GPU image (plugin compiled against the image's TensorRT)"
docker build -f docker/Dockerfile -t "$image" . 2>&1 | tee "$out/docker_build.log" | tail -n 5

in_image() {  # in_image [docker run options...] -- bash script
    local opts=()
    while [ "$1" != "--" ]; do opts+=("$1"); shift; done
    shift
    docker run --rm --gpus all --network host --shm-size=1g -e PYTHONDONTWRITEBYTECODE=1 \
        -v "$weights:/weights/model.safetensors:ro" "${opts[@]}" --entrypoint bash "$image" -euo pipefail -c "$1"
}

say "3/6 TensorRT tests in the image"
if in_image -v "$root:/repo:ro" -w /repo -e SPIN_PLUGIN_LIBRARY=/opt/spin/lib/libspin_plugin.so -- \
    'python3 -m pip install -q "pytest>=8" && python3 -m pytest -p no:cacheprovider -q -rs -m tensorrt tests/test_plugin_build.py tests/test_engine_build.py tests/test_detector_engine.py' \
    >"$out/tests.log" 2>&1; then
    if grep -qi "skipped" "$out/tests.log"; then failed+=("TensorRT tests skipped some (see tests.log)"); fi
else
    failed+=("TensorRT tests")
fi
tail -n 15 "$out/tests.log"

say "4/6 FP32 and FP16 engines of the shipped default and of the text detector, verified against ONNX Runtime"
for precision in fp32 fp16; do
    models=/work/models_$precision
    if ! in_image -v "$work:/work" -v "$crops:/crops:ro" "${pages_mount[@]}" -e "SPIN_MODELS=$models" -e "SPIN_PRECISION=$precision" -- \
        "python3 -m builders.gpu_start --no-serve && python3 -m builders.verify_engine --plan $models/spin_encoder/1/model.plan \
         --images /crops --images /work/heldout --checkpoint $models/spin_decoder/1/model.safetensors \
         && python3 -m builders.verify_detector --plan $models/spin_detector/1/model.plan ${page_images[*]}" \
        >"$out/engine_$precision.log" 2>&1; then
        failed+=("$precision engine build or verification (see engine_$precision.log)")
    fi
    tail -n 6 "$out/engine_$precision.log"
done

say "5/6 serving the FP16 TensorRT configuration, perf_analyzer"
read -r http grpc metrics < <(.venv/bin/python -c "
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(('127.0.0.1', 0))
print(*(s.getsockname()[1] for s in socks))")
server=spin-gpu-check-$$
cleanup() { docker rm -f "$server" >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker run -d --name "$server" --gpus all --network host --shm-size=1g \
    -v "$weights:/weights/model.safetensors:ro" -v "$work/models_fp16:/models" -e SPIN_PRECISION=fp16 "$image" \
    --http-port="$http" --grpc-port="$grpc" --metrics-port="$metrics" >/dev/null
ready=false
for _ in $(seq 300); do
    if curl -fs "localhost:$http/v2/health/ready" >/dev/null; then ready=true; break; fi
    [ "$(docker inspect -f '{{.State.Running}}' "$server")" = true ] || break
    sleep 3
done
docker logs "$server" >"$out/server.log" 2>&1 || true
if $ready; then
    .venv/bin/python -m perf.run --http-url "127.0.0.1:$http" --grpc-url "127.0.0.1:$grpc" --no-baselines \
        --model-repository "$work/models_fp16" --out "$out/perf" || failed+=("perf_analyzer run (see $out/perf)")
    # The served TensorRT detector against ONNX Runtime, and spin_page (detector, crops, spin_ocr) on the synthetic page.
    .venv/bin/python -m builders.verify_detector --url "127.0.0.1:$grpc" --onnx "$work/models_fp16/spin_detector/1/model.onnx" \
        --precision fp16 "${page_images_host[@]}" --out "$out/served_detector.json" >"$out/served_detector.log" 2>&1 \
        || failed+=("served spin_detector against ONNX Runtime (see served_detector.log)")
    .venv/bin/python -c "import cv2, sys; from spinrec.page.synthetic import synthetic_page; cv2.imwrite(sys.argv[1], synthetic_page()[0])" \
        "$out/synthetic_page.png"
    .venv/bin/spinrec-client -i grpc -u "127.0.0.1:$grpc" --page --json --draw "$out/synthetic_page_read.png" "$out/synthetic_page.png" \
        >"$out/synthetic_page.json" || true
    page_words=$(.venv/bin/python -c "import json, sys; print(' '.join(w['text'] for w in json.load(open(sys.argv[1])).get('words', [])))" \
        "$out/synthetic_page.json" 2>/dev/null || echo "no answer")
    [ "$page_words" = "hello world triton server page" ] || failed+=("spin_page read the synthetic page as '$page_words'")
    docker logs "$server" >"$out/server.log" 2>&1 || true
else
    failed+=("the image did not become ready (see server.log)")
    tail -n 30 "$out/server.log"
fi
cleanup

say "6/6 report"
notes=("Image \`$image\` from docker/Dockerfile; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); held-out set: $heldout_count synthetic words in font families never trained on; real crops: ../shared/real_crops_dev; detector photographs: the synthetic page${page_images_host:+ and ../shared/real_pages_dev/images}.")
notes+=("Served spin_page on the synthetic page (expected: hello world triton server page): ${page_words:-not run}.")
detector_args=(--detector "fp32=$work/models_fp32/spin_detector/1/model.plan" --detector "fp16=$work/models_fp16/spin_detector/1/model.plan")
[ -f "$out/served_detector.json" ] && detector_args+=(--detector "fp16 served=$out/served_detector.json")
for f in "${failed[@]}"; do notes+=("**Failed:** $f."); done
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
.venv/bin/python -m builders.gpu_report \
    --engine "fp32=$work/models_fp32/spin_encoder/1/model.plan" --engine "fp16=$work/models_fp16/spin_encoder/1/model.plan" \
    "${detector_args[@]}" --tests-log "$out/tests.log" --perf-summary "$out/perf/summary.md" "${note_args[@]}" --out "$out/report.md" \
    || failed+=("report: an engine has no passing verification record")

if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "all GPU checks passed; report: $out/report.md"
