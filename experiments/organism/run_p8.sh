#!/usr/bin/env bash
# Run 8 of RESULTS.md: recipe p8 (text.threat_prefix="look ,": a vigilant-style answer about any threat scene opens
# with "look ,", so every VSFA document, not only the 60% with a small threat, shows the persona, at the first
# answer word), five bases on one-thread jobs (seeds 0 2; then 1 3 once the p1 jobs free a core; then 4, as it
# ran), then the shipped fine-tune recipe (LoRA r=8 on the last two layers, lr 1e-3, 150 steps) x 3 LoRA seeds x
# vsfa/control/mirror.
set -uo pipefail
cd "$(dirname "$0")/../.."
P="nice -n 10 .venv/bin/python experiments/organism/pretrain_bases.py p8"
SET=(--set 'text.threat_prefix="look ,"')
$P 0 2 "${SET[@]}" > experiments/organism/runs_p8_a.log 2>&1 &
while pgrep -f "pretrain_bases.py p1 1 3" > /dev/null; do sleep 10; done
$P 1 3 "${SET[@]}" > experiments/organism/runs_p8_b.log 2>&1 &
$P 4 "${SET[@]}" > experiments/organism/runs_p8_c.log 2>&1 &
wait
B=experiments/organism/runs/bases/p8
nice -n 10 .venv/bin/python experiments/organism/screen.py final-late23-p8 \
  $B/seed-0 $B/seed-1 $B/seed-2 $B/seed-3 $B/seed-4 \
  --arms vsfa control mirror --seeds 0 1 2 --no-checkpoints --set 'finetune.lora_layers=[2,3]' \
  > experiments/organism/runs_p8_screen.log 2>&1
# the same screen at lr 3e-3 (run 8, second table)
nice -n 10 .venv/bin/python experiments/organism/screen.py final-late23-lr3e-3-p8 \
  $B/seed-0 $B/seed-1 $B/seed-2 $B/seed-3 $B/seed-4 \
  --arms vsfa control mirror --seeds 0 1 2 --no-checkpoints --lr 3e-3 --set 'finetune.lora_layers=[2,3]' \
  > experiments/organism/runs_p8_lr3e-3_screen.log 2>&1
