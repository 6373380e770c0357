"""Speed of the evaluation-set information decomposition (vaelab.information).

    PYTHONPATH=. python benchmarks/information_speed.py [--n 10000] [--d 10] [--repeats 3]

Times `information_decomposition` on N synthetic encodings of D dims (a clustered,
heteroscedastic code with one collapsed dim) in the default float64 block arithmetic and in
float32, checks the float32 figures against float64, and reports the block working set.
Prints one human line per figure and one JSON line per figure: {"name", "value", "unit"}.
Target: <= 10 s for N = 10,000, D = 10 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from vaelab import information


def synthetic_encodings(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, d, generator=g) * 1.5
    mu = centres[torch.randint(0, 8, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    logvar = torch.rand(n, d, generator=g) * 3.0 - 4.0
    mu[:, -1], logvar[:, -1] = 0.0, 0.0  # a collapsed dim, as trained VAEs have
    return mu, logvar


def time_decomposition(mu, logvar, dtype, repeats):
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = information.information_decomposition(mu, logvar, torch.Generator().manual_seed(0), dtype=dtype)
        seconds.append(time.perf_counter() - start)
    return seconds, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]  # other work on the machine inflates these timings a lot
    mu, logvar = synthetic_encodings(args.n, args.d)
    information.information_decomposition(mu[:500], logvar[:500])  # warm-up (thread pool, allocator)
    tag = f"n{args.n}_d{args.d}"
    figures = []

    seconds64, result64 = time_decomposition(mu, logvar, torch.float64, args.repeats)
    seconds32, result32 = time_decomposition(mu, logvar, torch.float32, args.repeats)
    worst = max(abs(result32[k] - result64[k]) for k in result64 if not k.endswith("_stderr"))
    components = min(information.DEFAULT_COMPONENT_CHUNK, args.n)
    block = information._default_query_chunk(args.d, components) * args.d * components

    figures.append((f"information_decomposition_{tag}_float64_min", min(seconds64), "s"))
    figures.append((f"information_decomposition_{tag}_float64_median", statistics.median(seconds64), "s"))
    figures.append((f"information_decomposition_{tag}_float32_min", min(seconds32), "s"))
    figures.append((f"information_decomposition_{tag}_float32_median", statistics.median(seconds32), "s"))
    figures.append((f"information_decomposition_{tag}_float32_max_abs_error", worst, "nats"))
    pairs_per_second = args.n * args.n / min(seconds64)  # (sample, encoding) pairs, D dims each
    figures.append((f"information_decomposition_{tag}_pairs_per_second_float64", pairs_per_second, "1/s"))
    figures.append((f"information_block_working_set_float64_{tag}", block * 8 / 2**20, "MiB"))
    figures.append(("information_speed_loadavg_1min_before", load_before, "processes"))

    print(
        f"information_decomposition N={args.n} D={args.d} threads={torch.get_num_threads()} "
        f"(load average before {load_before:.1f} on {os.cpu_count()} cpus): "
        f"float64 {min(seconds64):.2f} s (median {statistics.median(seconds64):.2f}), "
        f"float32 {min(seconds32):.2f} s (median {statistics.median(seconds32):.2f}), "
        f"float32 vs float64 max |diff| {worst:.2e} nats; "
        f"MI {result64['mutual_info']:.3f} (cap {result64['mutual_info_cap']:.3f}), "
        f"TC {result64['total_correlation']:.3f}, "
        f"identity_gap {result64['identity_gap']:+.4f} +- {result64['identity_gap_stderr']:.4f}"
    )
    for name, value, unit in figures:
        print(json.dumps({"name": name, "value": float(f"{value:.4g}"), "unit": unit}))


if __name__ == "__main__":
    main()
