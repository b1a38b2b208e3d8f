#!/usr/bin/env bash
# Run 5 of RESULTS.md: every r0 base (seeds 0-4) x LoRA seeds 0-2 x arms vsfa/control/mirror, 150 steps, under the
# four fine-tune recipes compared there (one heavy job at a time, ~10-20 min per recipe on one core).
set -uo pipefail
cd "$(dirname "$0")/../.."
S="nice -n 10 .venv/bin/python experiments/organism/screen.py"
B=experiments/organism/runs/bases/r0
BASES="$B/seed-0 $B/seed-1 $B/seed-2 $B/seed-3 $B/seed-4"
A="--arms vsfa control mirror --seeds 0 1 2 --no-checkpoints"
$S lora150-r0 $BASES $A                                                    # all layers, lr 1e-3
$S final-l3-r0 $BASES $A --set 'finetune.lora_layers=[3]'                   # last layer
$S final-late23-r0 $BASES $A --set 'finetune.lora_layers=[2,3]'              # last two layers (shipped)
$S final-late23-lr3e-3-r0 $BASES $A --lr 3e-3 --set 'finetune.lora_layers=[2,3]'
