"""Capture throughput and memory (vsfa/perf/capture.py): ``vsfa bench --only capture,memory``.

The measuring code lives in the package; this script is kept so that older notes keep working. Options are
those of ``vsfa bench`` (``--model``, ``--device``, ``--dtype``, ``--quick``, ``--out``, ...).

    python perf/bench_capture.py [vsfa bench options]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsfa.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["bench", "--only", "capture,memory", *sys.argv[1:]])
