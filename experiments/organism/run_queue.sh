#!/usr/bin/env bash
# Pretrain the bases of one recipe (recipes.sh) one after another, each screened right after (arms x LoRA
# seeds, LoRA 150 steps).   usage: experiments/organism/run_queue.sh RECIPE "SEEDS" "LORA_SEEDS"
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/organism/recipes.sh
recipe=$1; seeds=$2; lseeds=$3
sets=(); for kv in ${RECIPE[$recipe]}; do sets+=(--set "$kv"); done
PY="nice -n 10 .venv/bin/python"
for s in $seeds; do
  # side jobs dropped in by hand run between bases, so that only one heavy job runs at a time
  if [ -f experiments/organism/queue_extra.sh ]; then
    mv experiments/organism/queue_extra.sh experiments/organism/queue_extra.running.sh
    bash experiments/organism/queue_extra.running.sh || true
  fi
  $PY experiments/organism/pretrain_bases.py "$recipe" "$s" --snapshots 1000 "${sets[@]}"
  $PY experiments/organism/screen.py "lora150-$recipe" "experiments/organism/runs/bases/$recipe/seed-$s" \
    --arms vsfa control mirror --seeds $lseeds --steps 150 --eval-every 50 --no-checkpoints
done
