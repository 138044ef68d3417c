#!/usr/bin/env bash
# First start: build the model repository (configs, decoder weights, ONNX graphs) into $SPIN_MODELS, export the
# encoder with the SpinBlend node, build its TensorRT engine on this GPU; later starts reuse what is current.
# Then serve, with the plugin library loaded by Triton's TensorRT backend. Extra arguments go to tritonserver.
set -euo pipefail

models=${SPIN_MODELS:-/models}
plugin=${SPIN_PLUGIN_LIBRARY:-/opt/spin/lib/libspin_plugin.so}
weights=()
if [ -f "${SPIN_WEIGHTS:-}" ]; then
    weights=(--weights "$SPIN_WEIGHTS")
else
    echo "entrypoint: no checkpoint at SPIN_WEIGHTS=${SPIN_WEIGHTS:-} - the repository builder decides (untrained weights are announced)" >&2
fi

python3 -m builders.build_repository --output "$models" --if-needed "${weights[@]}"

# The builder copies the full checkpoint next to the decoder; the plugin graph is exported from that copy so
# both halves always come from the same weights.
checkpoint="$models/spin_decoder/1/model.safetensors"
graph="$models/spin_encoder/1/model_plugin.onnx"
if [ ! -f "$graph" ] || [ "$checkpoint" -nt "$graph" ]; then
    python3 -m spinrec.onnx_export --weights "$checkpoint" --output "$graph" --blend plugin
fi

python3 builders/build_engine.py --onnx "$graph" --plugin "$plugin" \
    --output "$models/spin_encoder/1/model.plan" --precision "${SPIN_PRECISION:-fp16}" \
    --min-batch 1 --opt-batch "${SPIN_OPT_BATCH:-16}" --max-batch "${SPIN_MAX_BATCH:-64}" \
    --timing-cache "$models/.timing_cache" --if-needed

exec tritonserver --model-repository="$models" \
    --backend-config=tensorrt,plugins="$plugin" \
    --backend-config=python,shm-default-byte-size=16777216 \
    "$@"
