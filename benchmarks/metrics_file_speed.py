"""What a logging call costs ``MetricsFileLogger`` as a run grows: time and bytes written per call.

    python benchmarks/metrics_file_speed.py [--calls 20000] [--keys 10]

Logs ``--calls`` calls of ``--keys`` figures at successive steps into a temporary run
directory and prints, for the first and the last 1,000 calls, the mean time per call and
the bytes each call wrote (its history line plus the rewritten metrics.json), as JSON lines
(``name``, ``value``, ``unit``). Both stay flat: the history is appended to, and metrics.json
holds the last value of each key, not the history.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=10)
    args = parser.parse_args()
    from vaelab.errors import RunStatus
    from vaelab.loggers import MetricsFileLogger
    from vaelab.runfiles import HISTORY_FILE, METRICS_FILE

    rng = random.Random(0)
    keys = [f"train/term_{k}" for k in range(args.keys)]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        logger = MetricsFileLogger(run_dir, objective={"name": "betavae"})
        seconds, written = [], []
        for step in range(args.calls):
            figures = {key: rng.random() for key in keys}
            before = (run_dir / HISTORY_FILE).stat().st_size if step else 0
            started = time.perf_counter()
            logger.log_metrics(figures, step=step)
            seconds.append(time.perf_counter() - started)
            written.append((run_dir / HISTORY_FILE).stat().st_size - before + (run_dir / METRICS_FILE).stat().st_size)
        logger.end(RunStatus.SUCCESS)
    window = min(1000, args.calls)
    for part, cut in (("first", slice(0, window)), ("last", slice(-window, None))):
        print(json.dumps({"name": f"metrics_file_log_call_{part}_{window}", "value": round(1e6 * sum(seconds[cut]) / window, 1), "unit": "us"}))
        print(json.dumps({"name": f"metrics_file_bytes_per_call_{part}_{window}", "value": max(written[cut]), "unit": "bytes"}))


if __name__ == "__main__":
    main()
