"""sklearn's GradientBoostingClassifier, vectorised: DCI's ``fast_exact`` booster.

DCI needs, per factor, the impurity-based feature importances and the accuracy
of ``GradientBoostingClassifier()`` (100 trees per class, learning rate 0.1,
depth 3, log loss). sklearn grows every tree on its own with an exact sort-based
splitter. ``ExactGradientBoosting`` computes the same model with the same exact
thresholds, growing all trees of a boosting round together:

- init: log class priors; per iteration the residuals r = onehot(y) - softmax(raw)
  (sigmoid with one tree for two classes);
- one regression tree per class on its residuals, grown level by level to
  depth 3, each node split where the squared-error reduction
  G_l^2/n_l + G_r^2/n_r - G^2/n is largest (sklearn's friedman_mse picks the same
  split), nodes with zero impurity stay leaves;
- leaf values are sklearn's Newton step: sum(r) / sum(p (1 - p)), times
  (C - 1) / C for C > 2 classes;
- importance of a feature = total squared-error reduction of its splits,
  normalised (sklearn's ``feature_importances_``).

Its speed against sklearn is measured in docs/metrics.md.
"""

from __future__ import annotations

import numpy as np

_EPSILON = np.finfo(np.float64).eps  # sklearn's tree: nodes with impurity <= EPSILON are leaves


class _TreeEnsemble:
    """Prediction from fitted level-wise trees: raw scores, and probabilities from raw
    scores (sigmoid for two classes, softmax otherwise).

    Each stage is (features per level, thresholds per level, leaf values); the arrays of
    a level are indexed [tree, node], so every sample walks every tree of a stage at once.
    """

    def _raw_scores(self, x: np.ndarray, stages) -> np.ndarray:
        n = len(x)
        trees = len(self.init_)
        rows, tree_ids = np.arange(n)[:, None], np.arange(trees)[None, :]
        raw = np.tile(self.init_, (n, 1))
        for features, thresholds, values in stages:
            node = np.zeros((n, trees), dtype=np.int64)
            for feature, threshold in zip(features, thresholds):
                node = 2 * node + (x[rows, feature[tree_ids, node]] > threshold[tree_ids, node])
            raw += self.learning_rate * values[tree_ids, node]
        return raw

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        if self.binary_:
            return 1.0 / (1.0 + np.exp(-raw))
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


_FEATURE_THRESHOLD = np.float32(1e-7)  # sklearn's splitter: closer values are ties
# Gains are compared after dropping their last 24 mantissa bits (relative resolution
# 2**-28): splits that tie in exact arithmetic (frequent: residuals take few distinct
# values while samples share leaves) then tie here too, whatever the round-off of the
# cumulative sums, and the lowest position wins, as in sklearn.
_TIE_MASK = ~((1 << 24) - 1)
# Split decreases are added to the importances tree group by tree group, level by level,
# in groups of this many trees (the order of the additions fixes their round-off,
# so it does not depend on how many trees are grown at once).
_IMPORTANCE_GROUP = 8


def _truncate(gain):
    import torch

    return (gain.view(torch.int64) & _TIE_MASK).view(torch.float64)


class ExactGradientBoosting(_TreeEnsemble):
    """sklearn's ``GradientBoostingClassifier`` (log loss, squared-error splits, no
    subsampling, min_samples_leaf=1) with sklearn's exact thresholds, grown level-wise.

    The model is sklearn's: features cast to float32, a candidate threshold between
    every two consecutive distinct values in a node (values within 1e-7 are ties),
    the threshold at their midpoint, the split maximising the squared-error
    reduction, Newton leaf values, impurity-decrease importances. The search differs:
    every feature is sorted once, and the samples of all trees of a chunk are kept,
    per tree and feature, in one row ordered by (node, value). A level of all those
    trees is then a few whole-array torch operations: one cumulative sum of the
    node-centred residuals gives every candidate's gain c^2 / (n_left n_right), and a
    stable partition (a scatter) orders the rows for the next level. Equal gains go
    to the lowest position, then the lowest feature; sklearn visits the features in a
    random order, so where two features tie its trees differ between random_states,
    and ours are one of its possible outcomes.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        max_depth: int = 3,
        tree_chunk: int = 8,
        num_threads: int | None = 1,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        # Trees grown together (the numbers do not depend on it; 4-32 cost about the same
        # CPU time); memory is ~55 bytes x chunk x D x N.
        self.tree_chunk = tree_chunk
        # torch threads while fitting (restored after; None: leave torch's setting).
        # One by default: the operations are many and short, and where the machine is
        # busy elsewhere more OpenMP threads make a fit slower, not faster (DCI fits the
        # factors in parallel threads instead).
        self.num_threads = num_threads

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ExactGradientBoosting":
        import torch

        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            return self._fit(x, y)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, x: np.ndarray, y: np.ndarray) -> "ExactGradientBoosting":
        import torch

        x32 = np.ascontiguousarray(x, dtype=np.float32)  # sklearn's trees split float32 values
        if x32.ndim != 2 or len(x32) != len(y):
            raise ValueError("x must be (N, D) with one label per row")
        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        num_classes = len(self.classes_)
        if num_classes < 2:
            raise ValueError("need at least two classes")
        n, d = x32.shape
        self.n_features_in_ = d
        onehot = np.zeros((n, num_classes))
        onehot[np.arange(n), y_index.ravel()] = 1.0
        eps = np.finfo(np.float64).eps
        prior = np.clip(onehot.mean(axis=0), eps, 1 - eps)  # sklearn's 'prior' init
        self.binary_ = num_classes == 2
        if self.binary_:
            targets = onehot[:, 1:]
            self.init_ = np.log(prior[1:] / (1 - prior[1:]))
        else:
            targets = onehot
            self.init_ = np.log(prior) - np.log(prior).mean()  # sklearn's symmetric link
        trees = targets.shape[1]

        order = np.ascontiguousarray(np.argsort(x32, axis=0, kind="stable").T, dtype=np.int64)  # (D, N)
        x_sorted = np.take_along_axis(x32.T, order, axis=1)
        invalid = np.ones((d, n), dtype=bool)  # no split after the last value, nor inside ties
        invalid[:, :-1] = x_sorted[:, 1:] <= x_sorted[:, :-1] + _FEATURE_THRESHOLD
        # Below the root, ties are found by comparing tie groups (runs of values that
        # sklearn would not split, numbered in sorted order) rather than the values.
        group = np.zeros((d, n), dtype=np.int32)
        group[:, 1:] = np.cumsum(~invalid[:, :-1], axis=1)
        packed = np.empty((d, n, 2), dtype=np.int32)  # (sample id, tie group) in one int64
        packed[..., 0] = order
        packed[..., 1] = group
        left = np.arange(1, n + 1, dtype=np.float64)
        self._root = dict(
            order=torch.from_numpy(order).unsqueeze(0),
            x32=torch.from_numpy(np.ascontiguousarray(x32.T)),  # (D, N)
            packed=torch.from_numpy(packed.view(np.int64).reshape(1, d, n)),
            ties=torch.from_numpy(invalid.reshape(1, d, n)),
            weight=torch.from_numpy(np.where(left < n, 1.0 / (left * np.maximum(n - left, 1)), 0.0)),
            any_ties=bool(invalid[:, :-1].any()),
            x=torch.from_numpy(np.ascontiguousarray(x32.T, dtype=np.float64)),  # (D, N)
            positions=torch.arange(n),
            positions_f=torch.arange(n, dtype=torch.float64).unsqueeze(0),
        )
        chunk = max(1, min(self.tree_chunk, trees))
        self._buffers = {
            name: torch.empty((chunk, d, n), dtype=dtype)
            for name, dtype in [
                ("cum", torch.float64),
                ("packed", torch.int64),
                ("packed_next", torch.int64),
                ("ids", torch.int64),
                ("index", torch.int64),
                ("right", torch.int32),
                ("tie", torch.bool),
                ("count", torch.int32),
                ("dest", torch.int32),
            ]
        }
        raw = np.tile(self.init_, (n, 1))
        importances = torch.zeros(d, dtype=torch.float64)
        self.stages_: list[tuple[list[np.ndarray], list[np.ndarray], np.ndarray]] = []
        factor = 1.0 if self.binary_ else (num_classes - 1) / num_classes
        leaves = 2**self.max_depth
        try:
            for _ in range(self.n_estimators):
                prob = self._probabilities(raw)
                residual = np.ascontiguousarray((targets - prob).T)  # (T, N)
                hessian = torch.from_numpy(np.ascontiguousarray((prob * (1.0 - prob)).T))
                features = [np.zeros((trees, 2**level), dtype=np.int64) for level in range(self.max_depth)]
                thresholds = [np.zeros((trees, 2**level)) for level in range(self.max_depth)]
                values = np.zeros((trees, leaves))
                for lo in range(0, trees, chunk):
                    hi = min(trees, lo + chunk)
                    leaf, chunk_features, chunk_thresholds, decreases = self._grow(residual[lo:hi])
                    group = min(_IMPORTANCE_GROUP, trees)
                    for start in range(0, hi - lo, group):
                        for level in range(self.max_depth):
                            importances.index_add_(
                                0,
                                torch.from_numpy(chunk_features[level][start : start + group].reshape(-1)),
                                decreases[level][start : start + group].reshape(-1),
                            )
                    for level in range(self.max_depth):
                        features[level][lo:hi] = chunk_features[level]
                        thresholds[level][lo:hi] = chunk_thresholds[level]
                    numerator = torch.zeros(hi - lo, leaves, dtype=torch.float64)
                    numerator.scatter_add_(1, leaf, torch.from_numpy(residual[lo:hi]))
                    denominator = torch.zeros(hi - lo, leaves, dtype=torch.float64)
                    denominator.scatter_add_(1, leaf, hessian[lo:hi])
                    numerator, denominator = numerator.numpy() * factor, denominator.numpy()
                    small = np.abs(denominator) < 1e-150  # sklearn's _safe_divide
                    values[lo:hi] = np.where(small, 0.0, numerator / np.where(small, 1.0, denominator))
                    leaf_values = np.take_along_axis(values[lo:hi], leaf.numpy(), axis=1)
                    raw[:, lo:hi] += self.learning_rate * leaf_values.T
                self.stages_.append((features, thresholds, values))
            self.train_decision_ = raw  # = decision_function(x), without recomputing it
        finally:
            del self._root, self._buffers
        total = float(importances.sum())
        self.feature_importances_ = importances.numpy() / total if total > 0 else importances.numpy()
        return self

    def _grow(self, residual: np.ndarray):
        """Grow the trees of one chunk (T residual vectors, (T, N)) level by level.

        Returns each sample's leaf (T, N) and per level the split features and
        thresholds (T, 2**level) and each split's squared-error decrease (T, 2**level)
        (0 where a node is not split). An unsplit node gets threshold +inf: its samples all go to its
        left child, which is then not split either, so it stays one leaf.
        """
        import torch

        root = self._root
        t, n = residual.shape
        d = root["order"].shape[1]
        f64 = torch.float64
        positions = root["positions"]
        buf = {name: b[:t] for name, b in self._buffers.items()}
        rows = torch.arange(t).unsqueeze(1)
        residual_t = torch.from_numpy(residual)
        node = torch.zeros(t, n, dtype=torch.int64)  # each sample's node at this level
        sizes = torch.full((t, 1), n, dtype=torch.int64)  # node sizes, nodes in order
        unsplittable = torch.zeros(t, 1, dtype=torch.bool)
        # Per (tree, feature) row, the samples ordered by (node, value), as sample ids
        # and (below the root) as packed (sample id, tie group) pairs.
        ids, packed = root["order"].expand(t, d, n), None
        cum = buf["cum"]
        features, thresholds, decreases = [], [], []
        for level in range(self.max_depth):
            m = 2**level
            sums = torch.zeros(t, m, dtype=f64).scatter_add_(1, node, residual_t)
            count = sizes.to(f64).clamp(min=1.0)
            mean = sums / count
            centred = residual_t - mean.gather(1, node)
            impurity = torch.zeros(t, m, dtype=f64).scatter_add_(1, node, centred * centred) / count
            unsplittable = unsplittable | (sizes < 2) | (impurity <= _EPSILON)
            # c = running sum of the node-centred residuals along each row: it restarts
            # at every node boundary, and the split after position p of a node with
            # n_l samples on its left gains n c^2 / (n_l n_r) in squared error.
            torch.gather(centred.unsqueeze(1).expand(t, d, n), 2, ids, out=cum)
            torch.cumsum(cum, 2, out=cum)
            starts = torch.cumsum(sizes, 1) - sizes
            if level == 0:
                segment = torch.zeros(t, n, dtype=torch.int64)
                weight = root["weight"].expand(t, n)
                if root["any_ties"]:
                    cum.masked_fill_(root["ties"], 0.0)
            else:
                segment = torch.repeat_interleave(
                    torch.arange(m).repeat(t), sizes.reshape(-1), output_size=t * n
                ).view(t, n)
                n_left = root["positions_f"] - (starts.to(f64) - 1.0).gather(1, segment)
                n_right = sizes.to(f64).gather(1, segment) - n_left
                weight = (n_left * n_right).reciprocal_().nan_to_num_(posinf=0.0)  # 0 after a node's end
                if root["any_ties"]:  # no split between two equal values
                    tie, group = buf["tie"], packed.view(torch.int32)[..., 1::2]
                    torch.eq(group[..., 1:], group[..., :-1], out=tie[..., :-1])
                    tie[..., -1] = True
                    cum.masked_fill_(tie, 0.0)
            # gain c^2 / (n_l n_r) (n_l n_r is the same for every feature of a tree)
            cum.mul_(cum)
            best = _truncate(cum.amax(1) * weight)  # (T, N)
            node_best = torch.zeros(t, m, dtype=f64).scatter_reduce_(1, segment, best, "amax")
            hit = best == node_best.gather(1, segment)
            candidate = torch.where(hit, positions.unsqueeze(0), n)
            position = torch.full((t, m), n, dtype=torch.int64).scatter_reduce_(1, segment, candidate, "amin")
            split = (node_best > 0) & ~unsplittable
            position = torch.where(split, position, 0).clamp(max=n - 2)
            at_best = cum.gather(2, position.unsqueeze(1).expand(t, d, m))  # c^2, (T, D, M)
            w_best = weight.gather(1, position)
            feature = torch.where(split, torch.argmax(_truncate(at_best * w_best.unsqueeze(1)), 1), 0)
            x32 = root["x32"]
            low_x = x32[feature, ids[rows, feature, position]].to(f64)
            high_x = x32[feature, ids[rows, feature, position + 1]].to(f64)
            threshold = torch.where(split, low_x / 2.0 + high_x / 2.0, np.inf)
            # importance: the split's squared-error decrease n c^2 / (n_l n_r)
            c2_best = at_best.gather(1, feature.unsqueeze(1)).squeeze(1)
            decreases.append(torch.where(split, sizes.to(f64) * c2_best * w_best, 0.0))
            features.append(feature.numpy())
            thresholds.append(threshold.numpy())
            go_right = torch.gather(root["x"], 0, feature.gather(1, node)) > threshold.gather(1, node)
            left_sizes = torch.where(split, position - starts + 1, sizes)
            right_sizes = sizes - left_sizes
            if level + 1 < self.max_depth:
                packed = self._partition(level, ids, packed, go_right, segment, starts, left_sizes, right_sizes)
                ids = buf["ids"]
                ids.copy_(packed.view(torch.int32)[..., 0::2])
            node = 2 * node + go_right
            sizes = torch.stack([left_sizes, right_sizes], 2).reshape(t, 2 * m)
            unsplittable = (~split).repeat_interleave(2, 1)
        return node, features, thresholds, decreases

    def _partition(self, level, ids, packed, go_right, segment, starts, left_sizes, right_sizes):
        """Stable partition of every (tree, feature) row into its children's order:
        returns the packed (sample id, tie group) rows of the next level."""
        import torch

        root = self._root
        t, d, n = ids.shape
        buf = {name: b[:t] for name, b in self._buffers.items()}
        right, count, dest, index = buf["right"], buf["count"], buf["dest"], buf["index"]
        torch.gather(go_right.to(torch.int32).unsqueeze(1).expand(t, d, n), 2, ids, out=right)
        torch.cumsum(right, 2, out=count)  # right-goers up to here
        right_base = (torch.cumsum(right_sizes, 1) - right_sizes).gather(1, segment)
        # left-goer: position - right-goers before it in its node; right-goer: after the
        # node's left-goers: start + n_left - 1 + (right-goers up to it in its node)
        to_left = (root["positions"].unsqueeze(0) + right_base).to(torch.int32)
        to_right = ((starts + left_sizes - 1).gather(1, segment) - right_base).to(torch.int32)
        torch.mul(count, 2, out=dest)
        dest += (to_right - to_left).unsqueeze(1)
        dest *= right
        dest += to_left.unsqueeze(1)
        dest -= count
        index.copy_(dest)
        if packed is None:
            packed = root["packed"].expand(t, d, n)
        out = buf["packed_next"] if packed.data_ptr() == buf["packed"].data_ptr() else buf["packed"]
        return out.scatter_(2, index, packed)

    # -- prediction --------------------------------------------------------------------------

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (N, 1) for two classes, else (N, K), as sklearn's."""
        return self._raw_scores(np.asarray(x, dtype=np.float32).astype(np.float64), self.stages_)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        prob = self._probabilities(self.decision_function(x))
        return np.concatenate([1.0 - prob, prob], axis=1) if self.binary_ else prob

    def classes_from_decision(self, raw: np.ndarray) -> np.ndarray:
        """Predicted labels from raw scores, as sklearn's ``predict`` decides."""
        if self.binary_:
            return self.classes_[(raw[:, 0] >= 0).astype(np.int64)]
        return self.classes_[np.argmax(raw, axis=1)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_from_decision(self.decision_function(x))
