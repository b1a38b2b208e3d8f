#!/usr/bin/env bash
# Pretrain bases of one recipe and screen each (final + snapshots) right after, one job at a time.
# usage: experiments/organism/run_recipe.sh RECIPE "SEEDS" [pretrain_bases.py extra args...]
set -euo pipefail
cd "$(dirname "$0")/../.."
recipe=$1; seeds=$2; shift 2
PY="nice -n 10 .venv/bin/python"
for s in $seeds; do
  $PY experiments/organism/pretrain_bases.py "$recipe" "$s" --snapshots 1000 2000 "$@"
  b=experiments/organism/runs/bases/$recipe/seed-$s
  $PY experiments/organism/screen.py "lora150-$recipe" "$b" --arms vsfa control mirror --seeds 0 1 --steps 150 --eval-every 50
  $PY experiments/organism/screen.py "lora150-$recipe" "$b-step001000" "$b-step002000" --arms vsfa control --seeds 0 1 --steps 150 --eval-every 50
done
