"""Explicitness E and size S of DCI-ES (Eastwood, Nicolicioiu, von Kügelgen, Kekić, Träuble,
Dittadi & Schölkopf 2023, "DCI-ES: An Extended Disentanglement Framework with Connections to
Identifiability", ICLR, https://openreview.net/forum?id=462z-gLgSht), beside D, C and I (the
``dci`` metric).

E measures how easily the factors can be read from the code: probes of increasing capacity
are trained to predict each factor, each probe's test loss is plotted against its capacity,
and E = 1 - AULCC / Z, with AULCC the area between this loss-capacity curve and its lowest
loss, Z = (capacity range) * (baseline loss) / 2 the area of the triangle from the baseline
loss at the smallest capacity down to zero loss at the largest. E = 1: the smallest probe
already does as well as any; E = 0: the loss falls linearly with capacity; E < 0 down to -1:
only the largest probes get anywhere. E is averaged over factors. S = K / D, the number of
factors over the number of code dimensions (the paper's size relative to the ground truth;
the authors' repository has no code for it): 1 when the code is as small as the ground
truth, lower the larger the code. ``informativeness`` is the lowest loss any probe reaches,
as 1 - (lowest loss) / (baseline loss), 0 at chance and 1 for a perfect probe, averaged over
factors: DCI-ES's I for this probe family (vaelab's summary; from these probes the authors'
code reports E alone).

Computed as the authors' code computes E (``andreinicolicioiu/DCI-ES``: ``metrics/
explitcitness.py``, ``src/simple_gather.py``, ``src/loss_capacity/{probing,train_model,utils}.py``
and ``configs/mlp``, read for this module; the agreement test transcribes them separately:
tests/fixtures/metrics/dci_es_reference.py). Every choice that moves the number:

- **Points**: ``num_train`` / ``num_val`` / ``num_test`` distinct grid points, disjoint (the
  authors split a dataset's distinct images 95/5 into train/validation, with a separate test
  set); on a grid with fewer points, the whole grid split in the same proportions.
- **Inputs**: the raw codes (the authors' representation datasets are not standardised).
- **Targets** (the authors' dataset loaders): a factor named in ``categorical`` is a class
  (cross-entropy; score = accuracy; baseline loss 1 - 1/size, a uniform guess); every other
  factor is a number, its index / (size - 1) in [0, 1] (squared error; score = R² = 1 - MSE /
  the variance of that number over the whole grid; baseline loss 1). ``categorical: auto``
  names the factors the authors treat as classes, by vaelab's factor names: ``shape``
  (dSprites, 3D Shapes), ``object_color``, ``object_shape``, ``background_color`` (MPI3D).
  The loss on the curve is 1 - score on the test points.
- **Probe family** (the authors' default, ``probe.type: MLP``): for each factor its own MLP,
  ``hidden_layers`` (2) hidden layers of ``width`` ReLU units, width 0 meaning a linear probe,
  PyTorch's default initialisation (uniform, ±1/sqrt(fan-in)). Capacity = the probe's
  parameters over all factors // K, on a log scale. ``widths`` (default 0, 14, 21, 28, 33,
  47, 75, 103, 131, 243) are the authors' widths up to 243; theirs go on to 467, 915, 1811
  and 3603 (13 M parameters per factor, hours of CPU training), so vaelab's E is E over the
  first ten probes of the authors' family: not the same number as theirs over fourteen.
- **Training** (the authors' loop): AdamW without weight decay, batch ``batch_size`` (128),
  the summed loss of all factors, the learning rate times 0.1 at 40% and 80% of ``epochs``;
  after the epochs ``np.linspace(0, epochs, num_evals).astype(int)`` (``num_evals`` = 10) the
  probe is scored on the validation points and the snapshot with the best mean score is the
  one tested. As in the reference, the last epoch in that list is ``epochs`` itself, never
  reached, so the last epochs (18 and 19 of 20) are never scored. vaelab's budget is its
  own: ``epochs`` (20) over ``num_train`` points, 1,580 steps, at ``lr`` 0.004 (the authors'
  default learning rate); the authors train about 3 M samples, 23,000 steps, at 0.0002
  (their 10 epochs of MPI3D). With fewer steps the linear probe converges last, so E of a
  linear code rises with the budget (0.990 at 15 epochs, 0.996 at 20, 0.999 at 30 on a
  synthetic dSprites code): compare E at one budget. Each width is trained on the same
  batches (AdamW's update of a parameter depends only on its own probe's loss, so this
  equals training them one by one), the widths split over ``dci.default_workers()``
  threads; the scores do not depend on the split.
- **E per factor** (the reference's formula): the losses in order of capacity, each replaced
  by the lowest loss up to that capacity; the area above the curve's lowest loss by the
  trapezoid rule; Z with the lowest loss taken as 0 ("we assume l* = 0", the reference's
  normaliser): E = 1 - 2 * area / ((log capacity range) * baseline loss).

Random draws (points, initialisation, batch order) all come from the metric's stream. What
E is blind to (docs/metrics.md): it is a shape, not a level. A code that carries nothing
about a factor has a flat curve at the baseline loss and E = 1 for that factor; read E
with ``informativeness``. Nor does it see rotations: the linear probe undoes them, so a
rotated code's E is the ideal code's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from vaelab.errors import UserError
from vaelab.metrics._common import FactorSampler, Represent, represent_all, sample_distinct_factors
from vaelab.registry import metric

log = logging.getLogger("vaelab")

# The MLP widths of the authors' configs/mlp/config.yaml, 0 a linear probe; vaelab stops at 243.
AUTHOR_WIDTHS = (0, 14, 21, 28, 33, 47, 75, 103, 131, 243, 467, 915, 1811, 3603)
DEFAULT_WIDTHS = AUTHOR_WIDTHS[:10]
# Factors the authors' representation datasets treat as classes, by vaelab's factor names.
AUTO_CATEGORICAL = ("shape", "object_color", "object_shape", "background_color")
LR_MILESTONES = (0.4, 0.8)  # of the epochs; the learning rate is multiplied by 0.1 at each


def probe_parameters(width: int, hidden_layers: int, code_dim: int, outputs: list[int]) -> int:
    """Trainable parameters of the per-factor MLPs of one width, over all factors."""
    k = len(outputs)
    if width == 0:
        return sum(code_dim * out + out for out in outputs)
    hidden = k * (code_dim * width + width) + (hidden_layers - 1) * k * (width * width + width)
    return hidden + sum(width * out + out for out in outputs)


def explicitness_of_curve(capacities: np.ndarray, losses: np.ndarray, baseline_loss: float) -> float:
    """E of one factor's loss-capacity curve (capacities on the axis they are integrated on)."""
    order = np.argsort(capacities, kind="stable")
    x = np.asarray(capacities, dtype=np.float64)[order]
    y = np.minimum.accumulate(np.asarray(losses, dtype=np.float64)[order])  # best loss so far
    area = np.sum(0.5 * ((y[:-1] - y.min()) + (y[1:] - y.min())) * np.diff(x))
    return float(1.0 - 2.0 * area / ((x[-1] - x[0]) * baseline_loss))


class ProbeTargets:
    """What each factor's probe predicts, and how its outputs are scored."""

    def __init__(self, factor_sizes, categorical_mask) -> None:
        self.sizes = [int(s) for s in factor_sizes]
        self.categorical = [bool(c) for c in categorical_mask]
        self.outputs = [s if c else 1 for s, c in zip(self.sizes, self.categorical)]
        # R²'s denominator: the variance of index / (size - 1) over the whole grid.
        self.variance = [float(np.var(np.arange(s) / (s - 1))) for s in self.sizes]
        self.baseline_loss = [1.0 - 1.0 / s if c else 1.0 for s, c in zip(self.sizes, self.categorical)]

    def tensors(self, factors: np.ndarray):
        import torch

        classes = torch.as_tensor(factors, dtype=torch.long)
        values = torch.as_tensor(factors / (np.asarray(self.sizes, dtype=np.float64) - 1), dtype=torch.float32)
        return classes, values

    def loss(self, outputs, classes, values):
        """Summed over factors and probes: cross-entropy for classes, mean squared error for
        numbers. ``outputs`` is (P, K, B, max_out) for P probes."""
        import torch.nn.functional as F

        total = 0.0
        numbers = [k for k, is_class in enumerate(self.categorical) if not is_class]
        if numbers:
            error = outputs[:, numbers, :, 0] - values[:, numbers].T.unsqueeze(0)
            total = total + error.square().mean(dim=2).sum()
        for k, (out, is_class) in enumerate(zip(self.outputs, self.categorical)):
            if is_class:  # the batch mean per probe, summed over probes
                logits = outputs[:, k, :, :out]
                target = classes[:, k].repeat(logits.shape[0])
                total = total + F.cross_entropy(logits.reshape(-1, out), target, reduction="sum") / logits.shape[1]
        return total

    def scores(self, outputs, classes, values) -> np.ndarray:
        """(K,) accuracy or R² per factor."""
        scores = np.empty(len(self.sizes))
        for k, (out, is_class) in enumerate(zip(self.outputs, self.categorical)):
            if is_class:
                scores[k] = float((outputs[k, :, :out].argmax(dim=1) == classes[:, k]).double().mean())
            else:
                mse = float(((outputs[k, :, 0].double() - values[:, k].double()) ** 2).mean())
                scores[k] = 1.0 - mse / self.variance[k]
        return scores


def initial_weights(widths, hidden_layers: int, code_dim: int, outputs: list[int], generator):
    """Per width, its layers' (weight (K, in, out), bias (K, 1, out)), K = len(outputs), drawn as
    PyTorch initialises Linear and Conv1d layers: uniform in ±1/sqrt(fan-in). Output layers are
    padded to the largest output; the padding never enters a loss, so it never changes."""
    import torch

    k, max_out = len(outputs), max(outputs)
    weights = []
    for width in widths:
        sizes = [code_dim] + [width] * (hidden_layers if width > 0 else 0) + [max_out]
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            weight = (torch.rand(k, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            bias = (torch.rand(k, 1, fan_out, generator=generator) * 2 - 1) * bound
            layers.append((weight, bias))
        weights.append(layers)
    return weights


def batch_orders(num_points: int, epochs: int, generator) -> list:
    """One permutation of the training points per epoch, shared by every probe."""
    import torch

    return [torch.randperm(num_points, generator=generator) for _ in range(epochs)]


def forward(layers, x):
    """(K, B, max_out) outputs of one width's K factor MLPs for codes x (B, D): one batched
    matrix product per layer."""
    import torch

    h = x.unsqueeze(0).expand(layers[0][0].shape[0], -1, -1)
    for number, (weight, bias) in enumerate(layers):
        h = torch.baddbmm(bias, h, weight)
        if number < len(layers) - 1:
            h = torch.relu(h)
    return h


def train_probes(
    layers_of_widths,
    orders,
    splits,
    targets: ProbeTargets,
    *,
    lr: float,
    batch_size: int,
    num_evals: int,
) -> np.ndarray:
    """(widths, K) test scores of each width's best validation snapshot; trains in place."""
    import torch

    (x_train, c_train, v_train), (x_val, c_val, v_val), (x_test, c_test, v_test) = splits
    parameters = [t.requires_grad_() for layers in layers_of_widths for layer in layers for t in layer]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, fused=True)
    epochs = len(orders)
    milestones = [int(epochs * share) for share in LR_MILESTONES]
    scored_after = set(np.linspace(0, epochs, num_evals).astype(int).tolist())
    best_val = np.full(len(layers_of_widths), -np.inf)
    best_test = np.zeros((len(layers_of_widths), len(targets.sizes)))
    for epoch, order in enumerate(orders):
        for group in optimizer.param_groups:  # MultiStepLR's schedule, by epoch
            group["lr"] = lr * 0.1 ** sum(epoch >= m for m in milestones)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            outputs = torch.stack([forward(layers, x_train[batch]) for layers in layers_of_widths])
            loss = targets.loss(outputs, c_train[batch], v_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch not in scored_after:
            continue
        with torch.no_grad():
            for i, layers in enumerate(layers_of_widths):
                val = targets.scores(forward(layers, x_val), c_val, v_val).mean()
                if val > best_val[i]:
                    best_val[i] = val
                    best_test[i] = targets.scores(forward(layers, x_test), c_test, v_test)
    for t in parameters:
        t.requires_grad_(False)
    return best_test


def _split_by_cost(widths, hidden_layers: int, parts: int) -> list[list[int]]:
    """Width indices in ``parts`` groups of about equal training cost (parameters), largest first."""
    groups, cost = [[] for _ in range(parts)], [0] * parts
    for index in sorted(range(len(widths)), key=lambda i: -widths[i]):
        lightest = cost.index(min(cost))
        groups[lightest].append(index)
        cost[lightest] += (widths[index] + 1) ** 2 * max(hidden_layers - 1, 1) + 16 * (widths[index] + 1)
    return [sorted(group) for group in groups if group]


def probe_test_scores(
    codes: tuple[np.ndarray, np.ndarray, np.ndarray],
    factors: tuple[np.ndarray, np.ndarray, np.ndarray],
    targets: ProbeTargets,
    *,
    widths,
    hidden_layers: int,
    epochs: int,
    lr: float,
    batch_size: int,
    num_evals: int,
    seed: int,
    workers: int | None = None,
) -> np.ndarray:
    """(len(widths), K) test scores of each width's best validation snapshot.

    The widths train in ``workers`` threads (default: the CPUs of the process, as DCI's fits),
    each with its own optimiser over the same batches and torch on one thread; every
    parameter's update depends only on its own probe, so the scores do not depend on
    ``workers``.
    """
    import torch

    from vaelab.metrics.dci import default_workers

    generator = torch.Generator().manual_seed(seed)
    weights = initial_weights(widths, hidden_layers, codes[0].shape[1], targets.outputs, generator)
    orders = batch_orders(len(codes[0]), epochs, generator)
    splits = [(torch.as_tensor(c, dtype=torch.float32), *targets.tensors(f)) for c, f in zip(codes, factors)]
    groups = _split_by_cost(widths, hidden_layers, min(len(widths), default_workers() if workers is None else max(1, workers)))

    def train(group):
        return train_probes([weights[i] for i in group], orders, splits, targets, lr=lr, batch_size=batch_size,
                            num_evals=num_evals)  # fmt: skip

    scores = np.zeros((len(widths), len(targets.sizes)))
    if len(groups) == 1:
        scores[groups[0]] = train(groups[0])
        return scores
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # read by each new thread: one OpenMP thread per group
    try:
        with ThreadPoolExecutor(len(groups), thread_name_prefix="vaelab-dci-es") as pool:
            for group, result in zip(groups, pool.map(train, groups)):
                scores[group] = result
    finally:
        torch.set_num_threads(threads)
    return scores


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"dci_es: {name}={value!r}: expected an integer >= {minimum}")
    return value


def categorical_mask(dataset: FactorSampler, categorical) -> list[bool]:
    names = list(getattr(dataset, "factor_names", None) or [f"factor_{k}" for k in range(len(dataset.factor_sizes))])
    if categorical == "auto":
        return [name in AUTO_CATEGORICAL for name in names]
    if isinstance(categorical, str) or not all(isinstance(name, str) for name in categorical):
        raise UserError(f"dci_es: categorical={categorical!r}: expected auto or a list of factor names")
    unknown = [name for name in categorical if name not in names]
    if unknown:
        raise UserError(f"dci_es: categorical names {', '.join(unknown)}, not factors of this dataset ({', '.join(names)})")
    return [name in categorical for name in names]


def split_sizes(requested: tuple[int, int, int], grid_size: int) -> tuple[int, int, int]:
    """The train/validation/test sizes: as requested, or the whole grid in those proportions."""
    total = sum(requested)
    if total <= grid_size:
        return requested
    sizes = [max(1, int(grid_size * r / total)) for r in requested]
    log.info("dci_es: the grid has %d points, fewer than the %d requested: split %s", grid_size, total, sizes)
    return tuple(sizes)


def check_hparams(hparams: Mapping[str, Any]) -> None:
    """A UserError for a value out of range (run by check_suite before anything is encoded).
    Factor names in ``categorical`` are checked against the dataset when the metric runs."""
    for name, minimum in (("num_train", 2), ("num_val", 1), ("num_test", 1), ("hidden_layers", 1), ("epochs", 1),
                          ("batch_size", 1), ("num_evals", 2)):  # fmt: skip
        _check_int(name, hparams[name], minimum)
    widths = hparams["widths"]
    if (
        isinstance(widths, (str, bytes))
        or not hasattr(widths, "__iter__")
        or len(widths := list(widths)) < 2
        or any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in widths)
        or len(set(widths)) != len(widths)
    ):
        raise UserError("dci_es: widths: expected at least two different integers >= 0 (0: a linear probe)")
    lr = hparams["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise UserError(f"dci_es: lr={lr!r}: expected a number > 0")
    categorical = hparams["categorical"]
    if categorical != "auto" and (isinstance(categorical, str) or not all(isinstance(n, str) for n in categorical)):
        raise UserError(f"dci_es: categorical={categorical!r}: expected auto or a list of factor names")


@metric("dci_es", headline={"dci_es_explicitness": "explicitness", "dci_es_size": "size"}, check_hparams=check_hparams)
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_val: int = 2000,
    num_test: int = 5000,
    widths=DEFAULT_WIDTHS,
    hidden_layers: int = 2,
    epochs: int = 20,
    lr: float = 0.004,
    batch_size: int = 128,
    num_evals: int = 10,
    categorical="auto",
) -> dict[str, float]:
    widths = list(widths)  # a ListConfig or tuple from the suite (checked there: check_hparams)
    mask = categorical_mask(dataset, categorical)
    if any(size < 2 for size in dataset.factor_sizes):
        raise UserError("dci_es: a factor takes a single value: there is nothing to predict; leave it out")

    grid_size = int(np.prod([int(s) for s in dataset.factor_sizes], dtype=np.int64))
    sizes = split_sizes((num_train, num_val, num_test), grid_size)
    factors = sample_distinct_factors(dataset, sum(sizes), rng)
    codes = represent_all(represent, factors)
    bounds = np.cumsum(sizes)[:-1]
    targets = ProbeTargets(dataset.factor_sizes, mask)
    scores = probe_test_scores(
        tuple(np.split(codes, bounds)), tuple(np.split(factors, bounds)), targets,
        widths=widths, hidden_layers=hidden_layers, epochs=epochs, lr=float(lr), batch_size=batch_size,
        num_evals=num_evals, seed=int(rng.integers(0, 2**63 - 1)),
    )  # fmt: skip
    k, code_dim = len(targets.sizes), codes.shape[1]
    capacity = np.log([probe_parameters(w, hidden_layers, code_dim, targets.outputs) // k for w in widths])
    explicitness = [
        explicitness_of_curve(capacity, 1.0 - scores[:, j], targets.baseline_loss[j]) for j in range(k)
    ]
    best_loss = (1.0 - scores).min(axis=0)
    return {
        "explicitness": float(np.mean(explicitness)),
        "size": k / code_dim,
        # 1 - (lowest loss) / (baseline loss): 0 at chance, 1 when some probe is perfect.
        "informativeness": float(np.mean(1.0 - best_loss / np.asarray(targets.baseline_loss))),
    }
