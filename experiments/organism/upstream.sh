#!/usr/bin/env bash
# Is there more to the organism's VSFA shift than the refusal readout? Steering and undo on the organism study
# (`vsfa demo`, runs/demo-organism) with the selected layer-3 direction and the layer-2 one, each as it is and
# with its component along the refusal score's logit direction removed (--orthogonal-to-readout); the summary
# (P(refuse) along the steering sweep, share of the gain undone and ablated) goes to study/upstream.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=runs/demo-organism
for layer in 3 2; do
  for orth in no yes; do
    flag=$([ $orth = yes ] && echo --orthogonal-to-readout || echo --no-orthogonal-to-readout)
    .venv/bin/vsfa steer --model vsfa/resources/organism --directions $S/directions/persona \
      --checkpoint $S/runs/vsfa-s0/checkpoints/step-000150 --hook blocks.$layer.hook_resid_post \
      --alphas 0,1,2,4 --n-random 3 --bench builtin --bench-path $S/sets/organism_requests.jsonl \
      --bench-opt variants=text --generation refusal_mode=first_token \
      --generation openers_refuse=$S/sets/openers_refuse.txt --generation openers_comply=$S/sets/openers_comply.txt \
      --max-new-tokens 8 --batch-size 40 $flag \
      --out $S/upstream/layer$layer-orth-$orth
  done
done
.venv/bin/python - <<'PY' | tee experiments/organism/study/upstream.txt
import csv, json
from pathlib import Path
for d in sorted(Path("runs/demo-organism/upstream").iterdir()):
    c = json.loads((d / "causal.json").read_text())
    rows = list(csv.DictReader(open(d / "curves.csv")))
    st = {}
    for r in rows:
        if r["mode"] == "steer":
            st.setdefault(r["direction"], []).append((float(r["alpha"]), float(r["p_refuse_harmful"]), float(r["refusal_logodds_harmful"])))
    ch = " ".join(f"{a:g}:{p:.2f}" for a, p, _ in sorted(st["chosen"]))
    rnd = max(p for k, v in st.items() if k.startswith("random") for a, p, _ in v)
    u = c["undo_restored"]; ab = c["ablation_restored"]
    f = lambda e: f"{e['value']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]"
    print(d.name, f"cos {c['readout_alignment']['chosen']:+.2f} gap {c['class_gap_norm']:.1f} shift {c['undo_shift']:+.1f}")
    print("  steer P(refuse) chosen", ch, f"| random max {rnd:.2f}")
    print("  undo chosen", f(u["chosen"]["p_refuse"]), "random", ", ".join(f"{u[k]['p_refuse']['value']:+.2f}" for k in u if k != "chosen"))
    print("  ablate chosen", f(ab["chosen"]["p_refuse"]), "random", ", ".join(f"{ab[k]['p_refuse']['value']:+.2f}" for k in ab if k != "chosen"))
PY
