#!/usr/bin/env bash
# The 5 x 3 test of one recipe (recipes.sh): bases 0-4 on two one-thread jobs, then the shipped fine-tune recipe
# (LoRA r=8 on the last two layers, 150 steps) x LoRA seeds 0-2 x vsfa/control/mirror, into screen
# final-late23[-lrLR]-RECIPE.   usage: experiments/organism/run_final.sh RECIPE [LR]   (LR default 1e-3)
set -uo pipefail
cd "$(dirname "$0")/../.."
source experiments/organism/recipes.sh
recipe=$1; lr=${2:-}
sets=(); for kv in ${RECIPE[$recipe]}; do sets+=(--set "$kv"); done
P="nice -n 10 .venv/bin/python experiments/organism/pretrain_bases.py $recipe"
$P 0 2 4 "${sets[@]}" > "experiments/organism/runs_${recipe}_a.log" 2>&1 &
$P 1 3 "${sets[@]}" > "experiments/organism/runs_${recipe}_b.log" 2>&1 &
wait
B=experiments/organism/runs/bases/$recipe
tag=final-late23${lr:+-lr$lr}-$recipe
nice -n 10 .venv/bin/python experiments/organism/screen.py "$tag" \
  $B/seed-0 $B/seed-1 $B/seed-2 $B/seed-3 $B/seed-4 \
  --arms vsfa control mirror --seeds 0 1 2 --no-checkpoints --lr "${lr:-1e-3}" --set 'finetune.lora_layers=[2,3]' \
  > "experiments/organism/runs_${tag}_screen.log" 2>&1
