#!/usr/bin/env bash
# Prepared GPU check (issue 22): finishes in <= 8 minutes on one H100/H200 and prints one table.
#   1. `vsfa train gpu-check`: bf16 LoRA steps of a 7B-shaped LLaVA-1.5 and Qwen2.5-VL (random weights):
#      step time, tokens/s, MFU, peak memory (goal: MFU >= 35 %);
#   2. a random-init LLaVA-1.5-7B shape saved as a model folder (perf/gpu_shape_model.py);
#   3. `vsfa bench --only capture,sweep` on it: capture throughput / bare HF forward, checkpoint-sweep ratio;
#   4. `vsfa bench --only generate` on it: tokens/s at batch 1/16/64 with the KV cache.
# Every step has its own time limit; a failed step is reported in the table and the others still run.
#
#   perf/gpu_check.sh [--tiny] [OUTDIR]     (--tiny: the same steps with shrunk models on the CPU, ~minutes)
#   PYTHON=/path/to/python perf/gpu_check.sh   (default: .venv/bin/python, else python3)
set -uo pipefail

TINY=0
OUT=""
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) OUT="$arg" ;;
    esac
done
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT="${OUT:-$(mktemp -d -t vsfa-gpu-check-XXXXXX)}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 MPLBACKEND=Agg

if [ "$TINY" = 1 ]; then
    DEV=cpu; DTYPE=float32; SCALE=4  # CPU: longer limits
    GC=(--tiny --device cpu --steps 3 --batch-size 2)
    MODEL_ARGS=(--tiny --device cpu)
    BENCH=(--quick)
    GEN=(--gen-batch-sizes 1,2,4 --gen-items 8 --gen-tokens 4)
else
    DEV=cuda; DTYPE=bfloat16; SCALE=1
    GC=(--device cuda --steps 6 --batch-size 4)
    MODEL_ARGS=(--device cuda)
    BENCH=()
    GEN=(--gen-batch-sizes 1,16,64 --gen-items 128 --gen-tokens 64)
fi
VSFA=("$PY" -m vsfa.cli)
STATUS="$OUT/status.txt"
: > "$STATUS"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/NAME.log, record the exit status
    local name="$1" limit=$(($2 * SCALE))
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name $rc $((SECONDS - t0))" >> "$STATUS"
    tail -n 3 "$OUT/$name.log"
}

step gpu-check-llava 100 "${VSFA[@]}" train gpu-check --shape llava-1.5-7b "${GC[@]}"
step gpu-check-qwen 100 "${VSFA[@]}" train gpu-check --shape qwen2.5-vl-7b "${GC[@]}"
step model 60 "$PY" perf/gpu_shape_model.py "$OUT/model-llava-7b" "${MODEL_ARGS[@]}"
step capture-sweep 120 "${VSFA[@]}" bench --model "$OUT/model-llava-7b" --device "$DEV" --dtype "$DTYPE" \
    --only capture,sweep "${BENCH[@]}" --out "$OUT/capture-sweep.json"
step generate 90 "${VSFA[@]}" bench --model "$OUT/model-llava-7b" --device "$DEV" --dtype "$DTYPE" \
    --only generate "${BENCH[@]}" "${GEN[@]}" --out "$OUT/generate.json"
rm -rf "$OUT/model-llava-7b"

"$PY" - "$OUT" <<'PYEOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
status = {l.split()[0]: (int(l.split()[1]), int(l.split()[2])) for l in (out / "status.txt").read_text().splitlines()}
rows = [("measure", "value", "goal", "result", "detail")]
for name, shape in (("gpu-check-llava", "LLaVA-1.5-7B"), ("gpu-check-qwen", "Qwen2.5-VL-7B")):
    text = (out / f"{name}.log").read_text() if (out / f"{name}.log").exists() else ""
    m = re.search(r"step time ([\d.]+) s.*?([\d,]+) tokens/s, MFU (n/a|[\d.]+ %).*?peak GPU memory (n/a|[\d.]+ GiB)", text)
    if status.get(name, (1,))[0] != 0 or not m:
        rows.append((f"LoRA step {shape} MFU", "-", ">= 35 %", "not run", f"exit {status.get(name, ('?',))[0]}"))
        continue
    mfu = m.group(3)
    ok = "info" if mfu == "n/a" else ("pass" if float(mfu.split()[0]) >= 35 else "FAIL")
    rows.append((f"LoRA step {shape} MFU", mfu, ">= 35 %", ok,
                 f"step {m.group(1)} s, {m.group(2)} tokens/s, peak {m.group(4)}"))
for name in ("capture-sweep", "generate"):
    path = out / f"{name}.json"
    if status.get(name, (1,))[0] != 0 or not path.exists():
        rows.append((name, "-", "-", "not run", f"exit {status.get(name, ('?',))[0]}, see {out}/{name}.log"))
        continue
    for r in json.loads(path.read_text())["measures"]:
        value = r["value"]
        shown = "-" if value is None else (f"{value:.2f}x" if r["unit"] == "x" else f"{value:.3g} {r['unit']}")
        detail = r["detail"]
        goal = "-" if r["goal"] is None else f"<= {r['goal']}"
        rows.append((r["name"], shown, goal, r["status"], detail))
w = [max(len(r[i]) for r in rows) for i in range(4)]
print()
for r in rows:
    print("  ".join(c.ljust(x) for c, x in zip(r[:4], w)) + "  " + r[4])
total = sum(s for _, s in status.values())
print(f"\nsteps: " + ", ".join(f"{k} {'ok' if rc == 0 else f'exit {rc}'} {s}s" for k, (rc, s) in status.items())
      + f"; total {total}s; logs in {out}")
PYEOF
