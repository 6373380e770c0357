"""`vaelab compare --udr`: ranking the runs without labels by UDR (Duan et al. 2020;
vaelab/metrics/udr.py has the maths) from their last checkpoints, and how that ranking agrees
with each supervised metric. The only part of compare that loads torch: checkpoints are
loaded and their models encode the same images.
"""

from __future__ import annotations

from vaelab.compare.groups import figures
from vaelab.compare.runs import Run
from vaelab.errors import UserError

CHECKPOINT = ("checkpoints", "last.ckpt")


def encode_for_udr(run: Run, factors_rng_seed: int, num_images: int, dataset_config: dict | None, trust: bool = False):
    """(posterior means (N, D), mean KL per latent (D,), dataset config) of a run's last checkpoint
    on ``num_images`` images drawn from its dataset with ``factors_rng_seed``."""
    import numpy as np
    import torch

    from vaelab.checkpoint import load_checkpoint
    from vaelab.information import kl_conditional_per_dim
    from vaelab.module import dataset_and_model_from_checkpoint

    checkpoint = load_checkpoint(run.path.joinpath(*CHECKPOINT), trust=trust, trust_option="--trust-checkpoints")
    config = checkpoint["vaelab_config"]["dataset"]
    if dataset_config is not None and config != dataset_config:
        raise UserError(f"compare --udr: {run.path} was trained on another dataset than the first run; UDR compares models on the same images")
    dataset, model = dataset_and_model_from_checkpoint(checkpoint)
    factors = dataset.sample_factors(num_images, np.random.default_rng(factors_rng_seed))
    images = torch.as_tensor(np.asarray(dataset.images_at(dataset.factors_to_index(factors)), dtype=np.float32))
    mu, logvar = model.posterior(images)
    return mu.double().numpy(), kl_conditional_per_dim(mu.double(), logvar.double()).mean(0).numpy(), config


def add_udr(runs: list[Run], correlation: str, num_images: int = 1000, seed: int = 0, trust: bool = False) -> list[str]:
    """Adds ``udr/<correlation>`` (peers: the same objective and knobs, other seeds) and
    ``udr_a2a/<correlation>`` (peers: every other run) to the figures of each successful run with a
    checkpoint, and returns lines on how UDR ranks the runs against each supervised metric
    (Spearman rank correlation over the runs). ``trust``: the checkpoints may name parts vaelab
    does not ship (vaelab/checkpoint.py)."""
    from vaelab.metrics import udr

    scored = [run for run in runs if run.succeeded and run.path.joinpath(*CHECKPOINT).is_file()]
    if len(scored) < 2:
        raise UserError(f"compare --udr: needs at least 2 finished runs with checkpoints, found {len(scored)}")
    codes, kls, dataset_config = [], [], None
    for run in scored:
        mu, kl, dataset_config = encode_for_udr(run, seed, num_images, dataset_config, trust)
        codes.append(mu)
        kls.append(kl)
    pairwise = udr.pairwise_scores(codes, kls, correlation=correlation)
    cell = [(run.objective, run.setting) for run in scored]
    peers = [[j for j in range(len(scored)) if j != m and cell[j] == cell[m]] for m in range(len(scored))]
    keys = (f"udr/{correlation}", f"udr_a2a/{correlation}")
    for key, values in zip(keys, (udr.model_scores(pairwise, peers), udr.model_scores(pairwise))):
        for run, value in zip(scored, values):
            if value == value:  # not NaN: the run had peers
                run.figures[key] = float(value)
    lines = []
    for key in keys:
        for metric in (f for f in figures() if f.startswith("metrics/")):
            pairs = [(run.figures[key], run.figures[metric]) for run in scored if key in run.figures and metric in run.figures]
            if len(pairs) >= 3:
                lines.append(rank_correlation_line(key, metric, pairs))
    return lines


def rank_correlation_line(key: str, metric: str, pairs: list[tuple[float, float]]) -> str:
    """How a label-free ranking (``key``) agrees with a supervised metric over runs, in words."""
    from scipy.stats import spearmanr

    ours, theirs = zip(*pairs)
    for name, values in ((key, ours), (metric, theirs)):
        if len(set(values)) < 2:  # no ranks to correlate: say so, not nan
            return f"{key} against {metric}: no rank correlation ({name} is the same for all {len(pairs)} runs)"
    rho = spearmanr(ours, theirs).statistic
    return f"{key} against {metric}: Spearman rank correlation {rho:+.2f} over {len(pairs)} runs"
