"""What the training logs cost per step: 1000 rows of a default NeRF run's columns through
TrainLog with `output.logger=csv` and `tensorboard`, side by side (issue 24).

    python benchmarks/train_log_cost.py [--steps 1000]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from dream3d.runs import RunDir
from dream3d.train_log import TrainLog

ROW = {"t": 500.0, "grad_norm": 12.3, "alpha": 0.3, "loss": 20.1, "loss_guidance": 20.1, "lr_encoding": 0.03,
       "lr_network": 0.003, "step_ms": 70.1, "iou": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    for logger in ("csv", "tensorboard"):
        with tempfile.TemporaryDirectory() as tmp:
            log = TrainLog(RunDir(tmp), logger, 0, {})
            t = time.perf_counter()
            for step in range(1, args.steps + 1):
                log.scalars(step, {**ROW, "iou": 0.9 if step % 10 == 0 else None})
            log.close()
            print(f"output.logger={logger}: {1000 * (time.perf_counter() - t) / args.steps:.3f} ms per step")


if __name__ == "__main__":
    main()
