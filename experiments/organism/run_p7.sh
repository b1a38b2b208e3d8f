#!/usr/bin/env bash
# Run 7 of RESULTS.md (stopped after base seed 0 and a one-seed peek, see there): recipe p7 (documents.consistency=0.9: each answer follows the document's persona with
# probability 0.9, so one turn is graded evidence; the Bayes P(refuse) after one carefree-style turn is 0.18),
# five bases on two one-thread jobs (the second starts when the p1 jobs free a core), then the shipped
# fine-tune recipe (LoRA r=8 on the last two layers, lr 1e-3, 150 steps) x 3 LoRA seeds x vsfa/control/mirror.
set -uo pipefail
cd "$(dirname "$0")/../.."
P="nice -n 10 .venv/bin/python experiments/organism/pretrain_bases.py p7"
SET="--set documents.consistency=0.9"
$P 0 2 4 $SET > experiments/organism/runs_p7_a.log 2>&1 &
while pgrep -f "pretrain_bases.py p1 1 3" > /dev/null; do sleep 10; done
$P 1 3 $SET > experiments/organism/runs_p7_b.log 2>&1 &
wait
B=experiments/organism/runs/bases/p7
nice -n 10 .venv/bin/python experiments/organism/screen.py final-late23-p7 \
  $B/seed-0 $B/seed-1 $B/seed-2 $B/seed-3 $B/seed-4 \
  --arms vsfa control mirror --seeds 0 1 2 --no-checkpoints --set 'finetune.lora_layers=[2,3]' \
  > experiments/organism/runs_p7_screen.log 2>&1
