"""Generation throughput by batch size and the no-cache decoding cost (vsfa/perf/generate.py): ``vsfa bench --only generate``.

The measuring code lives in the package; this script is kept so that older notes keep working. Options are
those of ``vsfa bench`` (``--model``, ``--device``, ``--dtype``, ``--quick``, ``--out``, ...).

    python perf/bench_generate.py [vsfa bench options]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsfa.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["bench", "--only", "generate", *sys.argv[1:]])
