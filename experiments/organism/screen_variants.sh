#!/usr/bin/env bash
# Fine-tune-side variants (LoRA placement) on bases where plain LoRA barely moved no-context refusal.
# usage: experiments/organism/screen_variants.sh "LORA_SEEDS" BASE...
set -euo pipefail
cd "$(dirname "$0")/../.."
lseeds=$1; shift
PY="nice -n 10 .venv/bin/python experiments/organism/screen.py"
A="--arms vsfa control --seeds $lseeds --no-checkpoints"
$PY early01 "$@" $A --set 'finetune.lora_layers=[0,1]'
$PY late23 "$@" $A --set 'finetune.lora_layers=[2,3]'
$PY vo "$@" $A --set 'finetune.lora_modules=["v_proj","o_proj"]'
$PY mlp "$@" $A --set 'finetune.lora_modules=["gate_proj","up_proj","down_proj"]'
