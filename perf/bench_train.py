"""Step time of vsfa train vs a hand-written peft loop (vsfa/perf/train.py): ``vsfa bench --only train``.

The measuring code lives in the package; this script is kept so that older notes keep working. Options are
those of ``vsfa bench`` (``--model``, ``--device``, ``--dtype``, ``--quick``, ``--out``, ...).

    python perf/bench_train.py [vsfa bench options]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsfa.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["bench", "--only", "train", *sys.argv[1:]])
