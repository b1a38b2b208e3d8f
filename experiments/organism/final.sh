#!/usr/bin/env bash
# The final run: recipe r0 bases 0-4 x LoRA seeds 0-2 x arms vsfa/control/mirror, adapters on the late layers.
set -uo pipefail
cd /work/main
S="nice -n 10 .venv/bin/python experiments/organism/screen.py"
$S final-l3-r0 experiments/organism/runs/bases/r0/seed-0 experiments/organism/runs/bases/r0/seed-1 experiments/organism/runs/bases/r0/seed-2 experiments/organism/runs/bases/r0/seed-3 experiments/organism/runs/bases/r0/seed-4 --arms vsfa control mirror --seeds 0 1 2 --no-checkpoints --set 'finetune.lora_layers=[3]'
$S final-late23-r0 experiments/organism/runs/bases/r0/seed-0 experiments/organism/runs/bases/r0/seed-1 experiments/organism/runs/bases/r0/seed-2 experiments/organism/runs/bases/r0/seed-3 experiments/organism/runs/bases/r0/seed-4 --arms vsfa control mirror --seeds 0 1 2 --no-checkpoints --set 'finetune.lora_layers=[2,3]'
$S lora150-r0 /work/main/experiments/organism/runs/bases/r0/seed-4 --arms vsfa control mirror --seeds 0 1 --no-checkpoints
