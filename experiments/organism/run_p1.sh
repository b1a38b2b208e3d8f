#!/usr/bin/env bash
# Run 6 of RESULTS.md: recipe p1 (a quarter of the pretraining documents open with a system line announcing the
# persona, documents.announce_rate=0.25), five bases on two one-thread jobs, then the shipped fine-tune recipe
# (LoRA r=8 on the last two layers, lr 1e-3, 150 steps) x 3 LoRA seeds x vsfa/control/mirror.
set -uo pipefail
cd "$(dirname "$0")/../.."
P="nice -n 10 .venv/bin/python experiments/organism/pretrain_bases.py p1"
SET="--set documents.announce_rate=0.25"
$P 0 2 4 $SET > experiments/organism/runs_p1_a.log 2>&1 &
$P 1 3 $SET > experiments/organism/runs_p1_b.log 2>&1 &
wait
B=experiments/organism/runs/bases/p1
nice -n 10 .venv/bin/python experiments/organism/screen.py final-late23-p1 \
  $B/seed-0 $B/seed-1 $B/seed-2 $B/seed-3 $B/seed-4 \
  --arms vsfa control mirror --seeds 0 1 2 --no-checkpoints --set 'finetune.lora_layers=[2,3]' \
  > experiments/organism/runs_p1_screen.log 2>&1
