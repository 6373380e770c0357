"""Time the metric suites (conf/metrics/*.yaml) and the encoding path on a dSprites-sized grid.

Three parts (``--parts``, default all three); every figure is a wall-clock time on
this machine, so compare runs on the same machine, preferably idle:

- ``codes``: each suite given codes: a cheap lookup table (a fixed random linear map
  of the factors plus fixed noise, precomputed for all 737,280 grid points), so the
  timings are the metrics' own cost. Figures ``metrics_speed/<suite>/<metric>`` (s).
- ``encode``: encoder throughput (images/s) of the conv VAE on procedural dSprites,
  per variant: ``nchw_no_grad`` (vaelab's first encoding path: ``no_grad``, the NCHW
  layout, a float64 copy), ``fp32_nchw`` (``MeanEncoder`` over the NCHW layout,
  ``model.channels_last=false``), ``fp32`` (``MeanEncoder``, the default: channels-last)
  and ``bf16`` (``encode_precision=bf16``). The variants take turns on the same blocks of images
  (rendering excluded), and each figure is the median over the blocks.
  Figures ``metrics_speed/encode/<variant>`` (images/s).
- ``e2e``: what ``vaelab eval ckpt=...`` spends: render + encode every needed image
  + the metrics, per suite and encode precision, on ``--ckpt`` (else a randomly
  initialised conv VAE: the same cost, meaningless scores). Figures
  ``metrics_speed/e2e/<suite>_<precision>/{total,encode,metrics}`` (s) and
  ``.../images_encoded``; ``e2e/<suite>_before`` with ``--baseline``.

Prints a table, then one JSON line per figure: {"name": ..., "value": ..., "unit": ...}.

    PYTHONPATH=. python benchmarks/metrics_speed.py            # all parts, fast and full (several minutes)
    PYTHONPATH=. python benchmarks/metrics_speed.py --quick    # fast preset only, short encode test (~1 min)
    PYTHONPATH=. python benchmarks/metrics_speed.py --parts codes --suites full [--dci-booster exact|fast_exact]
    PYTHONPATH=. python benchmarks/metrics_speed.py --parts e2e --suites full --precisions fp32 bf16 --ckpt outputs/.../last.ckpt
    ... --baseline    # also the pipeline as before the speed-ups, interleaved, and check its scores equal fp32's
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import time

import numpy as np
from omegaconf import OmegaConf

from vaelab.data.grid import FactorGrid
from vaelab.metrics import evaluate
from vaelab.metrics.representation import resolve_precision

ROOT = pathlib.Path(__file__).resolve().parent.parent
DSPRITES_SIZES = (3, 6, 40, 32, 32)
NUM_CODES = 10


def synthetic_representation(sizes=DSPRITES_SIZES, num_codes=NUM_CODES, seed=0):
    rng = np.random.default_rng(seed)
    grid = FactorGrid(
        factor_names=("shape", "scale", "orientation", "x", "y"),
        factor_sizes=sizes,
        factor_values=tuple(np.linspace(0, 1, s) for s in sizes),
    )
    factors = np.stack(np.unravel_index(np.arange(len(grid)), sizes), axis=1)
    # partly entangled: each code mixes the factors a little, plus noise
    mixing = np.eye(len(sizes), num_codes) + 0.2 * rng.standard_normal((len(sizes), num_codes))
    table = (factors / (np.asarray(sizes) - 1)) @ mixing + 0.05 * rng.standard_normal((len(grid), num_codes))
    return grid, lambda f: table[grid.factors_to_index(f)]


@contextlib.contextmanager
def before_this_change():
    """The metrics as they ran before the speed-ups (``--baseline``): DCI's factors fitted
    one after another and BLAS on its default threads. Same numbers, only slower."""
    import vaelab.metrics as metrics
    from vaelab.metrics import dci

    saved = metrics._one_blas_thread, dci.default_workers
    metrics._one_blas_thread, dci.default_workers = contextlib.nullcontext, lambda: 1
    try:
        yield
    finally:
        metrics._one_blas_thread, dci.default_workers = saved


def nchw_copy(model):
    """A copy of the conv model that computes in the NCHW layout (``model.channels_last=false``)."""
    import copy

    import torch

    model = copy.deepcopy(model)
    model.channels_last = False
    return model.to(memory_format=torch.contiguous_format)


def nchw_no_grad_encoder(model):
    """vaelab's encoding before MeanEncoder: ``no_grad``, NCHW, a float64 copy per batch."""
    import torch

    model = nchw_copy(model)

    @torch.no_grad()
    def encode(images):
        return model.encode(images)[0].double().cpu().numpy()

    return encode


def load_suite(name: str, dci_booster: str | None = None) -> dict:
    suite = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "metrics" / f"{name}.yaml"))["suite"]
    if dci_booster and "dci" in suite:
        suite["dci"] = {**(suite["dci"] or {}), "booster": dci_booster}
    return suite


def dsprites_model(ckpt: str | None):
    """(dataset, conv VAE in eval mode): from a checkpoint, or freshly initialised."""
    if ckpt:
        from vaelab.checkpoint import load_checkpoint
        from vaelab.module import dataset_and_model_from_checkpoint

        return dataset_and_model_from_checkpoint(load_checkpoint(ckpt))
    import torch

    from vaelab.data.dsprites import ProceduralDSprites
    from vaelab.models.conv import ConvVAE

    torch.manual_seed(0)
    dataset = ProceduralDSprites()
    return dataset, ConvVAE(dataset.image_shape, dataset.binary).eval()


def time_codes(suites, dci_booster, seed, baseline: bool) -> list[tuple[str, float, str]]:
    """Per metric; with ``baseline``, the metric before the speed-ups right after it (``<tag>_before``)."""
    grid, represent = synthetic_representation()
    # first calls import and initialise sklearn's solvers: not part of any metric's cost
    evaluate(grid, represent, {"beta_vae": dict(num_train=50, num_eval=50), "sap": dict(num_train=100, num_test=50)}, seed)
    figures = []
    for suite_name in suites:
        suite = load_suite(suite_name, dci_booster)
        tag = suite_name + (f"_dci_{dci_booster}" if dci_booster else "")
        totals = {tag: 0.0, f"{tag}_before": 0.0}
        for metric, hparams in suite.items():
            runs = [(tag, contextlib.nullcontext)] + ([(f"{tag}_before", before_this_change)] if baseline else [])
            if len(figures) % 4 == 2:  # with --baseline, alternate which of the two goes first
                runs.reverse()
            scores = []
            for name, context in runs:
                start = time.perf_counter()
                with context():
                    scores.append(evaluate(grid, represent, {metric: hparams}, seed=seed))
                seconds = time.perf_counter() - start
                totals[name] += seconds
                figures.append((f"metrics_speed/{name}/{metric}", seconds, "s"))
            if len(scores) == 2 and scores[0] != scores[1]:
                raise SystemExit(f"{metric}: the scores differ from before the speed-ups")
        figures += [(f"metrics_speed/{name}/total", totals[name], "s") for name in totals if baseline or name == tag]
    return figures


def default_precisions() -> list[str]:
    """Encode precisions timed unless asked: bf16 only where the CPU computes it natively. Where it
    is emulated it runs hundreds of times slower than fp32, and vaelab never picks it there
    (metrics.encode_precision=auto), so timing it would only keep the benchmark from finishing."""
    from vaelab.device import native_bf16_cpu

    return ["fp32", "bf16"] if native_bf16_cpu() else ["fp32"]


def encoder_flops_per_image(model, image_shape) -> float:
    """Forward FLOPs of ``model.encode`` per image (torch's counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode(torch.zeros(8, *image_shape))
    return counter.get_total_flops() / 8


def time_encode(dataset, model, blocks: int, block: int, batch_size: int, precisions: list[str]) -> list[tuple[str, float, str]]:
    from vaelab.metrics.representation import MeanEncoder

    variants = {
        "nchw_no_grad": nchw_no_grad_encoder(model),
        "fp32_nchw": MeanEncoder(nchw_copy(model), "cpu", "fp32"),
        "fp32": MeanEncoder(model, "cpu", "fp32"),
    }
    if "bf16" in precisions:
        variants["bf16"] = MeanEncoder(model, "cpu", "bf16")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    rng = np.random.default_rng(0)
    warm = dataset.images_at(np.arange(batch_size))
    for encode in variants.values():  # oneDNN builds its kernels on the first call
        encode(warm)
    for b in range(blocks):
        start = int(rng.integers(0, len(dataset) - block))
        images = dataset.images_at(np.arange(start, start + block))
        names = list(variants)
        for name in names[b % len(names) :] + names[: b % len(names)]:  # rotate who goes first
            began = time.perf_counter()
            for i in range(0, block, batch_size):
                variants[name](images[i : i + batch_size])
            rates[name].append(block / (time.perf_counter() - began))
    return [(f"metrics_speed/encode/{name}", float(np.median(r)), "images/s") for name, r in rates.items()]


def time_e2e(dataset, model, suites, precisions, batch_size, seed, baseline: bool) -> list[tuple[str, float, str]]:
    """Per suite and precision; with ``baseline`` first the pipeline before the speed-ups
    (``<suite>_before``: the NCHW no_grad encoder and :func:`before_this_change`), whose
    scores must be within 0.005 of fp32's."""
    from vaelab.metrics.representation import CachedEncoder, encoder_representation
    from benchmarks.machine import matmul_gflops

    flops = encoder_flops_per_image(model, dataset.image_shape)
    figures = [("metrics_speed/encoder_flops_per_image", flops / 1e6, "MFLOP")]
    for suite_name in suites:
        suite = load_suite(suite_name)
        scores = {}
        for precision in (["before"] if baseline else []) + list(precisions):
            matmul_before = matmul_gflops(repeats=10)
            began = time.perf_counter()
            if precision == "before":
                represent = CachedEncoder(dataset, nchw_no_grad_encoder(model), batch_size)
                with before_this_change():
                    scores[precision] = evaluate(dataset, represent, suite, seed=seed)
            else:
                represent = encoder_representation(model, dataset, "cpu", batch_size=batch_size, precision=precision)
                scores[precision] = evaluate(dataset, represent, suite, seed=seed)
            total = time.perf_counter() - began
            matmul = (matmul_before + matmul_gflops(repeats=10)) / 2
            # the yardstick: encoding the same images at the machine's fp32 matmul rate
            at_matmul_rate = represent.num_encoded * flops / (matmul * 1e9)
            tag = f"metrics_speed/e2e/{suite_name}_{precision}"
            figures += [
                (f"{tag}/total", total, "s"),
                (f"{tag}/matmul_fp32_gflops_around", matmul, "GFLOP/s"),
                (f"{tag}/total_over_encoding_at_matmul_rate", total / at_matmul_rate, "ratio"),
                (f"{tag}/encode", represent.encode_seconds, "s"),
                (f"{tag}/metrics", total - represent.encode_seconds, "s"),
                (f"{tag}/images_encoded", float(represent.num_encoded), "images"),
            ]
        if "before" in scores and "fp32" in scores:
            # the layouts differ (NCHW before, channels-last now): equal up to round-off's effect
            differences = {key: abs(scores["before"][key] - value) for key, value in scores["fp32"].items()}
            moved = {key: difference for key, difference in differences.items() if difference > 0.005}
            if moved:
                raise SystemExit(f"{suite_name}: fp32 scores moved from before the speed-ups: {moved}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["codes", "encode", "e2e"], default=["codes", "encode", "e2e"])
    parser.add_argument("--suites", nargs="+", default=["fast", "full"])
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"],
        help="encode precisions to time (default: encode fp32, and bf16 where native; e2e the presets' auto)",
    )  # fmt: skip
    parser.add_argument("--dci-booster", choices=["exact", "fast_exact"], help="override the preset's DCI booster (codes part)")
    parser.add_argument("--ckpt", help="a vaelab checkpoint for encode/e2e (default: a freshly initialised conv VAE)")
    parser.add_argument("--encode-blocks", type=int, default=12, help="blocks of images per encode variant")
    parser.add_argument("--encode-block", type=int, default=8192, help="images per block")
    parser.add_argument("--batch-size", type=int, default=1024, help="images per encoder call (eval.yaml encode_batch_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="also time the code as before the speed-ups (codes, e2e)")
    parser.add_argument("--quick", action="store_true", help="fast preset only, 4 encode blocks of 4096 images")
    args = parser.parse_args()
    if args.quick:
        args.suites, args.encode_blocks, args.encode_block = ["fast"], 4, 4096
    e2e_precisions = args.precisions
    if args.precisions is None:
        args.precisions = default_precisions()
        if "bf16" not in args.precisions:
            print("bfloat16 is emulated on this CPU: not timed (--precisions bf16 times it anyway)", flush=True)

    from vaelab.system import tune_glibc_malloc

    tune_glibc_malloc()  # as `vaelab eval` does
    figures: list[tuple[str, float, str]] = []
    if "codes" in args.parts:
        figures += time_codes(args.suites, args.dci_booster, args.seed, args.baseline)
    if "encode" in args.parts or "e2e" in args.parts:
        dataset, model = dsprites_model(args.ckpt)
        if "encode" in args.parts:
            figures += time_encode(dataset, model, args.encode_blocks, args.encode_block, args.batch_size, args.precisions)
        if "e2e" in args.parts:
            # unless asked: what the presets' encode_precision=auto runs on this machine
            e2e_precisions = e2e_precisions or [resolve_precision("auto", "cpu")]
            figures += time_e2e(dataset, model, args.suites, e2e_precisions, args.batch_size, args.seed, args.baseline)

    width = max(len(name) for name, _, _ in figures)
    print(f"{'figure'.ljust(width)}  value")
    for name, value, unit in figures:
        print(f"{name.ljust(width)}  {value:10.2f} {unit}")
    for name, value, unit in figures:
        print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}))


if __name__ == "__main__":
    main()
