"""sklearn's GradientBoostingClassifier algorithm on binned features, vectorised.

DCI needs, per factor, the impurity-based feature importances and the accuracy
of ``GradientBoostingClassifier()`` (100 trees per class, learning rate 0.1,
depth 3, log loss). sklearn grows every tree with an exact sort-based splitter,
which costs about two minutes per representation at the study's sizes. This
module runs the same algorithm with each feature cut into at most ``num_bins``
quantile bins (exact midpoints when a feature has fewer distinct values):

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

All trees of an iteration grow together: the per-node, per-bin residual sums of
every class are one sparse (bins x samples) @ dense (samples x nodes) product.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

_EPSILON = np.finfo(np.float64).eps  # sklearn's tree: nodes with impurity <= EPSILON are leaves


def bin_edges(x: np.ndarray, num_bins: int) -> list[np.ndarray]:
    """Per feature, increasing thresholds t: a split sends x <= t[b] left."""
    edges = []
    for column in x.T:
        distinct = np.unique(column)
        if len(distinct) <= num_bins:
            cut = (distinct[:-1] + distinct[1:]) / 2  # sklearn's exact thresholds
        else:
            cut = np.unique(np.quantile(column, np.arange(1, num_bins) / num_bins))
        edges.append(cut)
    return edges


def apply_bins(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """(N, D) values -> (N, D) bin indices; bin b holds t[b-1] < x <= t[b]."""
    return np.stack([np.searchsorted(e, col, side="left") for e, col in zip(edges, x.T)], axis=1)


class BinnedGradientBoosting:
    def __init__(self, n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = 3, num_bins: int = 256):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.num_bins = num_bins

    def fit(self, x: np.ndarray, y: np.ndarray) -> "BinnedGradientBoosting":
        self.classes_, y_index = np.unique(y, return_inverse=True)
        num_classes = len(self.classes_)
        if num_classes < 2:
            raise ValueError("need at least two classes")
        self.edges_ = bin_edges(x, self.num_bins)
        xb = apply_bins(x, self.edges_)
        n, d = xb.shape
        width = max(len(e) for e in self.edges_) + 1  # bins per feature
        self._width = width
        onehot = np.zeros((n, num_classes))
        onehot[np.arange(n), y_index.ravel()] = 1.0
        prior = onehot.mean(axis=0)
        self.binary_ = num_classes == 2
        if self.binary_:
            targets = onehot[:, 1:]
            self.init_ = np.log(prior[1:] / prior[:1])
        else:
            targets = onehot
            self.init_ = np.log(prior)
        trees = targets.shape[1]
        # (D * width, N) indicator of each sample's bin in each feature.
        bins_by_sample = scipy.sparse.csr_matrix(
            (np.ones(n * d), (np.ravel(np.arange(d)[None, :] * width + xb), np.repeat(np.arange(n), d))),
            shape=(d * width, n),
        )
        raw = np.tile(self.init_, (n, 1))
        self.importances_ = np.zeros(d)
        self.splits_: list[tuple[list[np.ndarray], list[np.ndarray], np.ndarray]] = []
        samples = np.arange(n)
        tree_ids = np.arange(trees)
        for _ in range(self.n_estimators):
            prob = self._probabilities(raw)
            residual = targets - prob
            node = np.zeros((n, trees), dtype=np.int64)
            split_features, split_bins = [], []
            for depth in range(self.max_depth):
                nodes = 2**depth
                flat = tree_ids[None, :] * nodes + node  # (N, T) column of each sample's node
                columns = np.zeros((n, trees * nodes))
                columns[samples[:, None], flat] = residual
                present = np.zeros((n, trees * nodes))
                present[samples[:, None], flat] = 1.0
                sums = (bins_by_sample @ columns).reshape(d, width, trees * nodes)
                counts = (bins_by_sample @ present).reshape(d, width, trees * nodes)
                node_sum, node_count = sums[0].sum(axis=0), counts[0].sum(axis=0)
                node_sq = np.bincount(flat.ravel(), weights=(residual**2).ravel(), minlength=trees * nodes)
                left_sum, left_count = np.cumsum(sums, axis=1), np.cumsum(counts, axis=1)
                right_sum, right_count = node_sum - left_sum, node_count - left_count
                with np.errstate(divide="ignore", invalid="ignore"):
                    gain = left_sum**2 / left_count + right_sum**2 / right_count - node_sum**2 / node_count
                gain[(left_count < 0.5) | (right_count < 0.5)] = -np.inf
                gain = gain.reshape(d * width, trees * nodes)
                best = np.argmax(gain, axis=0)
                best_gain = gain[best, np.arange(trees * nodes)]
                with np.errstate(divide="ignore", invalid="ignore"):
                    impurity = node_sq / node_count - (node_sum / node_count) ** 2
                splits = np.isfinite(best_gain) & (impurity > _EPSILON)
                feature = np.where(splits, best // width, 0)
                threshold = np.where(splits, best % width, width)  # bin > width never happens: stays left
                np.add.at(self.importances_, feature[splits], np.maximum(best_gain[splits], 0.0))
                go_right = xb[samples[:, None], feature[flat]] > threshold[flat]
                node = 2 * node + go_right
                split_features.append(feature.reshape(trees, nodes))
                split_bins.append(threshold.reshape(trees, nodes))
            leaves = 2**self.max_depth
            flat = tree_ids[None, :] * leaves + node
            numerator = np.bincount(flat.ravel(), weights=residual.ravel(), minlength=trees * leaves)
            hessian = (prob * (1.0 - prob)).ravel()
            denominator = np.bincount(flat.ravel(), weights=hessian, minlength=trees * leaves)
            if not self.binary_:
                numerator *= (num_classes - 1) / num_classes
            values = np.where(np.abs(denominator) < 1e-150, 0.0, numerator / np.where(denominator == 0, 1, denominator))
            values = values.reshape(trees, leaves)
            raw += self.learning_rate * values[tree_ids[None, :], node]
            self.splits_.append((split_features, split_bins, values))
        total = self.importances_.sum()
        self.feature_importances_ = self.importances_ / total if total > 0 else self.importances_
        return self

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        if self.binary_:
            return 1.0 / (1.0 + np.exp(-raw))
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        xb = apply_bins(x, self.edges_)
        n = len(xb)
        trees = len(self.init_)
        samples, tree_ids = np.arange(n)[:, None], np.arange(trees)[None, :]
        raw = np.tile(self.init_, (n, 1))
        for split_features, split_bins, values in self.splits_:
            node = np.zeros((n, trees), dtype=np.int64)
            for feature, threshold in zip(split_features, split_bins):
                node = 2 * node + (xb[samples, feature[tree_ids, node]] > threshold[tree_ids, node])
            raw += self.learning_rate * values[tree_ids, node]
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.decision_function(x)
        if self.binary_:
            return self.classes_[(raw[:, 0] > 0).astype(np.int64)]
        return self.classes_[np.argmax(raw, axis=1)]


# --- exact thresholds ----------------------------------------------------------------------

_FEATURE_THRESHOLD = np.float32(1e-7)  # sklearn's tree: values closer than this are ties
_INVALID = -1.0  # gain of a position that is not a candidate split (valid gains are >= 0)


class ExactGradientBoosting:
    """sklearn's ``GradientBoostingClassifier`` (log loss, friedman_mse, no
    subsampling, min_samples_leaf=1) with exact thresholds, grown level-wise.

    Same model as sklearn: features cast to float32, a candidate threshold between
    every two consecutive distinct values of a node (ties up to sklearn's 1e-7),
    the threshold at their midpoint, the split maximising the squared-error
    reduction, Newton leaf values, impurity-decrease importances. What differs is
    the search: every feature is sorted once; the samples of all trees of a chunk
    are kept, per tree and feature, in an array ordered by (node, value), so one
    level of all those trees is a handful of whole-array torch operations
    (a cumulative sum of the node-centred residuals gives every candidate's gain),
    and the samples are stably partitioned into the next level's order by a scatter.
    Equal gains are broken by the lowest position, then the lowest feature (sklearn:
    random feature order), which is the only way its trees can differ.
    """

    def __init__(
        self, n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = 3, tree_chunk: int = 16
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.tree_chunk = tree_chunk

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ExactGradientBoosting":
        import torch

        x32 = np.ascontiguousarray(x, dtype=np.float32)  # what sklearn's trees see
        if x32.ndim != 2:
            raise ValueError("x must be 2-d")
        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        num_classes = len(self.classes_)
        if num_classes < 2:
            raise ValueError("need at least two classes")
        n, d = x32.shape
        self.n_features_in_ = d
        onehot = np.zeros((n, num_classes))
        onehot[np.arange(n), y_index.ravel()] = 1.0
        eps = np.finfo(np.float64).eps
        prior = np.clip(onehot.mean(axis=0), eps, 1 - eps)
        self.binary_ = num_classes == 2
        if self.binary_:
            targets = onehot[:, 1:]
            self.init_ = np.log(prior[1:] / (1 - prior[1:]))
        else:
            targets = onehot
            self.init_ = np.log(prior) - np.log(prior).mean()  # sklearn's symmetric link
        trees = targets.shape[1]

        order = np.argsort(x32, axis=0, kind="stable").T  # (D, N)
        x_sorted = np.take_along_axis(x32.T, order, axis=1)
        ties = np.zeros((d, n), dtype=bool)
        ties[:, :-1] = x_sorted[:, 1:] <= x_sorted[:, :-1] + _FEATURE_THRESHOLD
        self._data = dict(
            order=torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64)),
            x_sorted=torch.from_numpy(np.ascontiguousarray(x_sorted)),
            ties=torch.from_numpy(ties),
            any_ties=bool(ties.any()),
            x=torch.from_numpy(np.ascontiguousarray(x32.T, dtype=np.float64)),  # (D, N)
            positions=torch.arange(n),
        )
        raw = np.tile(self.init_, (n, 1))
        importances = torch.zeros(d, dtype=torch.float64)
        self.stages_: list[tuple[list[np.ndarray], list[np.ndarray], np.ndarray]] = []
        factor = 1.0 if self.binary_ else (num_classes - 1) / num_classes
        for _ in range(self.n_estimators):
            prob = self._probabilities(raw)
            residual = torch.from_numpy(np.ascontiguousarray((targets - prob).T))  # (T, N)
            hessian = torch.from_numpy(np.ascontiguousarray((prob * (1.0 - prob)).T))
            features = [np.zeros((trees, 2**level), dtype=np.int64) for level in range(self.max_depth)]
            thresholds = [np.zeros((trees, 2**level)) for level in range(self.max_depth)]
            values = np.zeros((trees, 2**self.max_depth))
            for lo in range(0, trees, self.tree_chunk):
                hi = min(trees, lo + self.tree_chunk)
                leaf, chunk_features, chunk_thresholds = self._grow(residual[lo:hi], importances)
                for level in range(self.max_depth):
                    features[level][lo:hi] = chunk_features[level]
                    thresholds[level][lo:hi] = chunk_thresholds[level]
                leaves = 2**self.max_depth
                numerator = torch.zeros(hi - lo, leaves, dtype=torch.float64).scatter_add_(1, leaf, residual[lo:hi])
                denominator = torch.zeros(hi - lo, leaves, dtype=torch.float64).scatter_add_(
                    1, leaf, hessian[lo:hi]
                )
                numerator, denominator = numerator.numpy() * factor, denominator.numpy()
                small = np.abs(denominator) < 1e-150  # sklearn's _safe_divide
                values[lo:hi] = np.where(small, 0.0, numerator / np.where(small, 1.0, denominator))
                raw[:, lo:hi] += self.learning_rate * np.take_along_axis(values[lo:hi], leaf.numpy(), axis=1).T
            self.stages_.append((features, thresholds, values))
        del self._data
        total = float(importances.sum())
        self.feature_importances_ = importances.numpy() / total if total > 0 else importances.numpy()
        return self

    def _grow(self, residual, importances):
        """Grow the trees of one chunk (T residual vectors) level by level.

        Returns each sample's leaf (T, N), and per level the split features and
        thresholds (T, 2**level); an unsplit node gets threshold +inf, so all of its
        samples go to its left child and it stays a leaf.
        """
        import torch

        data = self._data
        t, n = residual.shape
        d = data["order"].shape[0]
        positions = data["positions"]
        f64 = torch.float64
        node = torch.zeros(t, n, dtype=torch.int64)  # each sample's node at this level
        sizes = torch.full((t, 1), n, dtype=torch.int64)  # node sizes, nodes in order
        unsplittable = torch.zeros(t, 1, dtype=torch.bool)
        # The samples of every (tree, feature) ordered by (node, value): residuals,
        # float32 feature values, sample ids. Level 0: one node, the presorted order.
        r_layout = torch.index_select(residual, 1, data["order"].reshape(-1)).reshape(t, d, n)
        x_layout = data["x_sorted"].unsqueeze(0)
        id_layout = data["order"].unsqueeze(0)
        tie_layout = data["ties"].unsqueeze(0) if data["any_ties"] else None
        features, thresholds = [], []
        residual_sq = residual * residual
        for level in range(self.max_depth):
            m = 2**level
            sums = torch.zeros(t, m, dtype=f64).scatter_add_(1, node, residual)
            squares = torch.zeros(t, m, dtype=f64).scatter_add_(1, node, residual_sq)
            count = sizes.to(f64).clamp(min=1.0)
            mean = sums / count
            impurity = squares / count - mean * mean
            unsplittable = unsplittable | (sizes < 2) | (impurity <= _EPSILON)
            starts = torch.cumsum(sizes, 1) - sizes
            # per position of the layout (same for every feature of a tree): its node
            segment = (positions.view(1, 1, n) >= (starts + sizes).unsqueeze(2)).sum(1) if m > 1 else (
                torch.zeros(t, n, dtype=torch.int64)
            )
            segment = segment.clamp(max=m - 1)
            start_p = starts.gather(1, segment)
            n_left = positions.unsqueeze(0) - start_p + 1
            n_right = sizes.gather(1, segment) - n_left
            valid = (n_right > 0) & ~unsplittable.gather(1, segment)
            weight = torch.where(valid, 1.0 / (n_left * n_right).to(f64).clamp(min=1.0), 0.0)
            offset = torch.where(valid, 0.0, _INVALID).to(f64)
            centred = r_layout - mean.gather(1, segment).unsqueeze(1)
            cum = torch.cumsum(centred, 2)
            # gain of splitting after each position: (sum_left - n_left * mean)^2 / (n_left n_right)
            gain = torch.addcmul(offset.unsqueeze(1), cum * weight.unsqueeze(1), cum)
            if tie_layout is not None:
                gain.masked_fill_(tie_layout, _INVALID)
            best_over_features = gain.amax(1)  # (T, N)
            node_best = torch.full((t, m), -np.inf, dtype=f64).scatter_reduce_(
                1, segment, best_over_features, "amax"
            )
            hit = best_over_features == node_best.gather(1, segment)
            candidate = torch.where(hit, positions.unsqueeze(0), n)
            position = torch.full((t, m), n, dtype=torch.int64).scatter_reduce_(1, segment, candidate, "amin")
            split = node_best >= 0
            position = torch.where(split, position, 0).clamp(max=n - 2)
            at_best = gain.gather(2, position.unsqueeze(1).expand(t, d, m))  # (T, D, M)
            feature = torch.where(split, torch.argmax(at_best, 1), 0)
            x_full = x_layout.expand(t, d, n)
            x_lo = x_full[torch.arange(t).unsqueeze(1), feature, position].to(f64)
            x_hi = x_full[torch.arange(t).unsqueeze(1), feature, position + 1].to(f64)
            threshold = torch.where(split, x_lo / 2.0 + x_hi / 2.0, np.inf)
            # importance: the squared-error decrease n c^2 / (n_l n_r) of each split
            c_best = cum[torch.arange(t).unsqueeze(1), feature, position]
            w_best = weight.gather(1, position)
            decrease = torch.where(split, sizes.to(f64) * c_best * c_best * w_best, 0.0)
            importances.index_add_(0, feature.reshape(-1), decrease.reshape(-1))
            features.append(feature.numpy())
            thresholds.append(threshold.numpy())
            go_right = torch.gather(data["x"], 0, feature.gather(1, node)) > threshold.gather(1, node)
            left_sizes = torch.where(split, position - starts + 1, sizes)
            right_sizes = sizes - left_sizes
            if level + 1 < self.max_depth:
                # stable partition of every (tree, feature) row into the children's order
                if id_layout.shape[0] == 1:
                    bits = torch.index_select(go_right, 1, id_layout.reshape(-1)).reshape(t, d, n)
                else:
                    bits = torch.gather(go_right.unsqueeze(1).expand(t, d, n), 2, id_layout)
                right_before = torch.cumsum(bits, 2, dtype=torch.int32)
                right_base = torch.cumsum(right_sizes, 1) - right_sizes  # right-goers in earlier nodes
                a0 = (positions.unsqueeze(0) + right_base.gather(1, segment)).to(torch.int32)
                a1 = (starts + left_sizes - 1 - right_base).gather(1, segment).to(torch.int32)
                dest = right_before * 2
                dest += (a1 - a0).unsqueeze(1)
                dest *= bits
                dest += a0.unsqueeze(1)
                dest -= right_before
                dest = dest.long()
                r_layout = torch.empty_like(r_layout).scatter_(2, dest, r_layout)
                x_layout = torch.empty(t, d, n, dtype=torch.float32).scatter_(2, dest, x_layout.expand(t, d, n))
                if level + 2 < self.max_depth:
                    id_layout = torch.empty(t, d, n, dtype=torch.int64).scatter_(2, dest, id_layout.expand(t, d, n))
                if tie_layout is not None:
                    tie_layout = torch.zeros(t, d, n, dtype=torch.bool)
                    tie_layout[:, :, :-1] = x_layout[:, :, 1:] <= x_layout[:, :, :-1] + _FEATURE_THRESHOLD
            node = 2 * node + go_right
            sizes = torch.stack([left_sizes, right_sizes], 2).reshape(t, 2 * m)
            unsplittable = (~split).repeat_interleave(2, 1)
        return node, features, thresholds

    # -- prediction --------------------------------------------------------------------------

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        if self.binary_:
            return 1.0 / (1.0 + np.exp(-raw))
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        xv = np.asarray(x, dtype=np.float32).astype(np.float64)
        n = len(xv)
        trees = len(self.init_)
        rows, tree_ids = np.arange(n)[:, None], np.arange(trees)[None, :]
        raw = np.tile(self.init_, (n, 1))
        for features, thresholds, values in self.stages_:
            node = np.zeros((n, trees), dtype=np.int64)
            for feature, threshold in zip(features, thresholds):
                node = 2 * node + (xv[rows, feature[tree_ids, node]] > threshold[tree_ids, node])
            raw += self.learning_rate * values[tree_ids, node]
        return raw

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        prob = self._probabilities(self.decision_function(x))
        return np.concatenate([1.0 - prob, prob], axis=1) if self.binary_ else prob

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(x), axis=1)]
