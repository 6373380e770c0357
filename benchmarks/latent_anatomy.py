"""What each latent of a trained model encodes, and whether a factor it fails to separate is mixed
linearly (a rotation) or not.

    PYTHONPATH=. python benchmarks/latent_anatomy.py CKPT [--num 10000] [--seed 0]

On ``--num`` images drawn uniformly from the checkpoint's dataset grid (metric seed ``--seed``),
encoded to their posterior means as the metrics encode them:

- the *active* latents: variance of the posterior mean over the sample above 0.01;
- per latent and factor, the discrete mutual information of MIG (20 equal-width bins) divided
  by the factor's entropy: where each factor lives;
- per factor, how well it is read from the active latents together, on a held-out fifth:
  linearly (least squares on the latents, plus a constant) and non-linearly (15 nearest
  neighbours), as R² of the factor's index (shape: accuracy of the class, chance 1/3).

A factor whose best single latent carries little of it but that the active latents predict
well is *mixed*: a rotation if the linear read-out already recovers it, a non-linear fold
(one latent's meaning changes with another's value) if only the neighbours do. A factor that
neither reads well is *absent* from the code.
"""

from __future__ import annotations

import argparse

import numpy as np


def anatomy(codes: np.ndarray, factors: np.ndarray, factor_names, categorical) -> dict:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    from vaelab.metrics._common import discrete_entropy, discrete_mutual_info, histogram_discretize

    active = np.flatnonzero(codes.var(0) > 0.01)
    normalised = discrete_mutual_info(histogram_discretize(codes, 20), factors) / discrete_entropy(factors)  # (D, K)
    split = len(codes) * 4 // 5
    read = {}
    for k, name in enumerate(factor_names):
        x_train, x_test = codes[:split, active], codes[split:, active]
        y_train, y_test = factors[:split, k], factors[split:, k]
        if categorical[k]:
            linear = LogisticRegression(max_iter=2000).fit(x_train, y_train).score(x_test, y_test)
            neighbours = KNeighborsClassifier(15).fit(x_train, y_train).score(x_test, y_test)
        else:
            linear = LinearRegression().fit(x_train, y_train).score(x_test, y_test)
            neighbours = KNeighborsRegressor(15).fit(x_train, y_train).score(x_test, y_test)
        read[name] = (linear, neighbours)
    return {"active": active, "normalised_mi": normalised, "read": read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--num", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import hydra.utils

    from vaelab.metrics.representation import MeanEncoder
    from vaelab.module import VAEModule

    module = VAEModule.load_from_checkpoint(args.checkpoint)  # the stored config is checked there
    dataset = hydra.utils.instantiate(module.config["dataset"])
    factors = dataset.sample_factors(args.num, np.random.default_rng(args.seed))
    encode = MeanEncoder(module.model)
    codes = np.concatenate([encode(dataset.images(factors[i : i + 1000])) for i in range(0, args.num, 1000)])
    categorical = [name == "shape" for name in dataset.factor_names]
    found = anatomy(codes, factors, dataset.factor_names, categorical)

    names = dataset.factor_names
    print(f"active latents (variance of the mean > 0.01): {len(found['active'])} of {codes.shape[1]}: z{', z'.join(map(str, found['active']))}")
    print("normalised mutual information, active latent x factor:")
    print("      " + " ".join(f"{name:>11}" for name in names))
    for j in found["active"]:
        print(f"  z{j:<3}" + " ".join(f"{value:11.2f}" for value in found["normalised_mi"][j]))
    print("per factor: best single latent (its normalised MI), and read from all active latents "
          "(R², shape: accuracy) linearly / by 15 nearest neighbours:")
    for k, name in enumerate(names):
        best = int(np.argmax(found["normalised_mi"][:, k]))
        linear, neighbours = found["read"][name]
        tag = "" if best in found["active"] else ", inactive"  # MIG bins every latent over its own range, however small
        print(f"  {name:<12} z{best} ({found['normalised_mi'][best, k]:.2f}{tag})   linear {linear:.2f}   neighbours {neighbours:.2f}")


if __name__ == "__main__":
    main()
