#!/usr/bin/env bash
# The main job on the built-in default, offline: train -> synth check -> export -> quantize -> parity -> bench.
# Every step reads the previous step's folder on disk; rerunning resumes/skips finished work.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-outputs}"

step() { printf '\n==> %s\n' "$*"; }

step "train: built-in world, stage 0 (vision), stage 1 (PT), stage 2 (FT)  -> $OUT/tiny"
python train/run.py --output-dir "$OUT/tiny" --data-root "$OUT/world"

step "synth: caption-then-QA through the offline teacher (same pipeline as a GPT-4V run)"
python synth/run.py laion --images "$OUT/world/images" --teacher offline --limit 200 --output-dir "$OUT/synth-world"

step "export: GGUF F32 and F16 (language model + mmproj), parity-checked against PyTorch"
python export/to_gguf.py "$OUT/tiny" --outdir "$OUT/exports/gguf" --outtype f32
python export/to_gguf.py "$OUT/tiny" --outdir "$OUT/exports/gguf" --outtype f16

step "export: ONNX fp32 and fp16 (vision encoder, token embedding, decoder with KV cache; transformers.js layout)"
python export/to_onnx.py "$OUT/tiny" --outdir "$OUT/exports/onnx" --dtypes fp32,fp16

step "export: CoreML fp16, int8, int4, palette4 (vision, token embedding, stateful language model; checked on Linux by the reference MIL evaluator)"
python export/to_coreml.py "$OUT/tiny" --outdir "$OUT/exports/coreml/FP16" --precision fp16
for p in int8 int4 palette4; do
  python export/to_coreml.py "$OUT/tiny" --outdir "$OUT/exports/coreml/${p^^}" --precision "$p" --source "$OUT/exports/coreml/FP16"
done

step "quantize: llama.cpp's own quantizer (Q4_K_M also with a Q8_0 projector; Q3_K_M with a multimodal importance matrix); ONNX Runtime's int8 and 4-bit quantizers; GPTQ 4-bit (multimodal calibration)"
python quantize/run.py --format gguf --types q8_0,q5_k_m,q4_k_m,q4_0,q4_k_m-vq8_0 --export "$OUT/exports/gguf"
python quantize/run.py --format gguf --types q3_k_m --imatrix auto --export "$OUT/exports/gguf" \
  --calibration "$OUT/world/ALLaVA-Instruct-World.json"  # importance matrix from image + text passes (docs/imatrix.md)
python quantize/run.py --format onnx --types int8,q4,q4f16 --export "$OUT/exports/onnx"
python quantize/run.py --format gptq --bits 4 --group-size 128 "$OUT/tiny" --outdir "$OUT/exports/gptq/W4G128" \
  --calibration "$OUT/world/ALLaVA-Instruct-World.json"

step "parity: every variant (GGUF, ONNX, GPTQ; CoreML through the reference MIL evaluator) against the PyTorch checkpoint"
python export/check.py "$OUT/tiny" "$OUT/exports" -n 20 --accuracy 200 --heldout "$OUT/world/ALLaVA-Heldout-World.json"

step "user paths: the GGUF pair through llama-cpp-python's MTMDChatHandler and llama-mtmd-cli, against PyTorch"
python export/check.py "$OUT/tiny" "$OUT/exports/gguf/F16" "$OUT/exports/gguf/Q8_0" -n 20 --accuracy 200 --user-path 50 \
  --heldout "$OUT/world/ALLaVA-Heldout-World.json"

step "bench: latency, memory and accuracy per variant on the mobile profile (built-in world + the 12 report benchmarks, offline)"
python bench/run.py --device mobile --benchmarks all --checkpoint "$OUT/tiny" --exports "$OUT/exports" --output-dir "$OUT/bench/mobile"
