#!/bin/bash
# Makes the golden reference data on the GPU host (PyTorch + transformers there):
#   device run: bash tools/golden/run_on_gpu_host.sh models/golden-tiny tools/golden/prompts_tiny.json
# Writes $OUT/golden.tar.gz with the .npy files, golden.json and the log.
set -euo pipefail
MODEL=$1 PROMPTS=$2
W=$(mktemp -d)
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
PYTHONUNBUFFERED=1 python3 tools/golden/golden.py --model "$MODEL" --prompts "$PROMPTS" --out "$W/golden" 2>&1 | tee "$W/golden.log"
cp "$W/golden.log" "$W/golden/"
python3 -c 'import transformers.models.deepseek_v32.modeling_deepseek_v32 as m; print(m.__file__)' > "$W/golden/modeling_path.txt"
cp "$(cat "$W/golden/modeling_path.txt")" "$W/golden/modeling_deepseek_v32.py"
tar -C "$W" -czf "$OUT/golden.tar.gz" golden
ls -la "$W/golden"
