"""Multi-process training (``trainer=ddp``) through the `vaelab` command line.

Lightning's ``ddp`` strategy starts ranks 1..n-1 by re-running the command line of
rank 0 with ``hydra.run.dir`` appended. For vaelab that command is wrong twice: the
subcommand (``train``) is gone by then, and inside a multirun (``-m``) every worker
would re-run the whole sweep. So rank 0 writes the exact command of *its* job into
``VAELAB_DDP_ARGV`` before launching; :func:`worker_argv` gives that command to a
worker, which runs one ``vaelab train`` job in rank 0's run directory.

Each job launches its own workers. Lightning leaves the process group and its
``MASTER_PORT``/``LOCAL_RANK``/``WORLD_SIZE`` variables behind after ``fit``; the
next job of a sweep would then neither launch workers nor open a new group and wait
forever, so :func:`launching_workers` undoes both when the job ends.

Only ``os`` and ``json`` here: the CLI imports this before torch.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

DDP_ARGV_ENV = "VAELAB_DDP_ARGV"
# What Lightning's launcher sets in rank 0's own environment (plus ours).
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", DDP_ARGV_ENV)


def worker_argv() -> list[str] | None:
    """For a DDP worker started by rank 0 of a vaelab job: the vaelab arguments of that job."""
    if DDP_ARGV_ENV not in os.environ or os.environ.get("LOCAL_RANK", "0") == "0":
        return None
    rank = os.environ["LOCAL_RANK"]
    # hydra.job.name: the worker logs to train_rank<r>.log beside rank 0's train.log.
    return [*json.loads(os.environ[DDP_ARGV_ENV]), f"hydra.job.name=train_rank{rank}"]


def is_worker() -> bool:
    """True in ranks other than 0 (of this node's job): no loggers, no run files."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) != 0


@contextmanager
def launching_workers(subcommand: str = "train"):
    """Around ``trainer.fit`` in rank 0: tell workers which job to run; clean up after it."""
    from hydra.core.hydra_config import HydraConfig

    saved = {key: os.environ.get(key) for key in LAUNCH_ENV}
    launcher = "LOCAL_RANK" not in os.environ  # else this process was started by a launcher (DDP, SLURM)
    if launcher and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        os.environ[DDP_ARGV_ENV] = json.dumps(
            [
                subcommand,
                *hydra_cfg.overrides.task,
                # Quoted: sweep run dirs contain '=' and ',' (override grammar).
                f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
                "hydra.output_subdir=null",  # rank 0 already wrote .hydra/
            ]
        )
    try:
        yield
    finally:
        import torch.distributed

        if launcher and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
