"""Information quantities of a Gaussian encoder q(z|x) = N(mu(x), diag exp(logvar(x))).

Notation follows the project's objectives.md (sections 2-3): p(z) = N(0, I) is the prior and
q(z) = E_{p_D(x)} q(z|x) = 1/N sum_n q(z|x_n) the aggregate posterior of a set of
N encodings. Every quantity below is an expectation over q(z, x) = q(z|x) p_D(x),
estimated with one sample z_n ~ q(z|x_n) per example:

    kl_conditional    = E_x KL[q(z|x) || p(z)]                (closed form per x)
    kl_marginal       = E[log q(z) - log p(z)]                = KL[q(z) || p(z)]
    mutual_info       = E[log q(z|x) - log q(z)]              = I(X;Z)
    total_correlation = E[log q(z) - sum_j log q(z_j)]        = KL[q(z) || prod_j q(z_j)]
    dimwise_kl        = sum_j E[log q(z_j) - log p(z_j)]      = sum_j KL[q(z_j) || p(z_j)]

Two identities hold exactly and are logged as checks:

    KL[q(z)||p(z)] = E_x KL[q(z|x)||p(z)] - I(X;Z)          (*)  ("identity_gap")
    KL[q(z)||p(z)] = TC + sum_j KL[q(z_j)||p(z_j)]                ("tc_gap", needs p factorised)

(*) is why a code that carries information cannot match the prior both per example
and in aggregate: the per-example KL pays for the information, the marginal KL does not.

Two families of estimators of log q(z) (Chen et al. 2018, "Isolating Sources of
Disentanglement in VAEs", the beta-TCVAE paper):

- Evaluation set: the exact mixture over all N encodings (`aggregate_posterior_log_density`),
  chunked so memory stays bounded. Not differentiable; for logging.
- Training minibatch of B << N encodings (`minibatch_log_density`): importance-weighted
  log-sum-exp over the batch, MWS or MSS weights, or over the batch and a memory of recent
  encodings (`EncodingMemory`). Differentiable; used by the native InfoMax loss
  KL_hat[q(z)||p(z)] + lambda * reconstruction and by β-TCVAE's total correlation.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)

# Block shape of the evaluation-set estimator: a (queries, D, components) working set of about
# BLOCK_ELEMENTS numbers (8 MiB in float64, reused across blocks): bounded whatever M and N are.
# Smaller blocks mean more parallel regions (each block is ~14 elementwise passes), larger ones
# fall out of cache; 2^20 was the fastest of 2^17..2^22 (docs/performance.md, "Information").
BLOCK_ELEMENTS = 2**20
DEFAULT_COMPONENT_CHUNK = 2048


def _default_query_chunk(num_dims: int, component_chunk: int) -> int:
    return max(1, BLOCK_ELEMENTS // (num_dims * component_chunk))


def evaluation_set_bytes(num_samples: int, num_dims: int) -> int:
    """At least the memory :func:`information_decomposition` holds for ``num_samples`` encodings
    of ``num_dims`` dims: mu, logvar, the noise, z and log q(z_j) (N x D float64 each) and one
    (queries, D, components) block of the estimator (a single query once D is large)."""
    components = min(num_samples, DEFAULT_COMPONENT_CHUNK)
    queries = min(num_samples, _default_query_chunk(num_dims, components))
    return 8 * (5 * num_samples * num_dims + queries * num_dims * components)


MINIBATCH_SAMPLING = ("mws", "mss", "memory")


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar)); broadcasts, no reduction."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def kl_conditional_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL[q(z|x) || N(0, I)] per example and latent dim, in closed form: (N, D).

    KL[N(mu, s^2) || N(0, 1)] = 0.5 (mu^2 + s^2 - log s^2 - 1).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def kl_conditional(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """E_x KL[q(z|x) || p(z)]: mean over examples of the closed-form KL summed over dims (scalar)."""
    return kl_conditional_per_dim(mu, logvar).sum(dim=1).mean()


def _check_encodings(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> None:
    if mu.dim() != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both be (N, D); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if z.dim() != 2 or z.shape[1] != mu.shape[1]:
        raise ValueError(f"z must be (M, D) with D = {mu.shape[1]}; got {tuple(z.shape)}")
    if mu.shape[0] == 0:
        raise ValueError("need at least one encoding")


# ---------------------------------------------------------------------------------------------
# Evaluation set: exact mixture
# ---------------------------------------------------------------------------------------------
#   log q(z)   = logsumexp_n  sum_j log q(z_j|x_n)  - log N
#   log q(z_j) = logsumexp_n        log q(z_j|x_n)  - log N
# Cost M*N*D exp's (10^9 for M = N = 10^4, D = 10) for the per-dim marginals, plus M*N for the
# joint, whose log-density is the per-dim sum (q(z|x_n) = prod_j q(z_j|x_n)). Each block is
# shifted by its max over n before exp (per dim, and per query for the joint), so every exp is
# <= 1 and the largest is 1: no overflow, no underflow of the terms that matter, whatever the
# dtype (inputs must be finite). Blocks over n are combined with logaddexp. The quadratic form
# is computed as (z - mu)^2 / var, never expanded into z^2/var - 2 z mu/var + mu^2/var
# (matmul-friendly, but it cancels for narrow posteriors: at var = e^-10, |mu| ~ 3 in float32 it
# is off by up to 0.3 nats per term, the direct form by < 0.001).


def _block_log_density(z_block, mu_t, neg_half_precision_t, log_norm_t, out):
    """log q(z_mj | x_nj) for a block, written into `out` (m, D, n). Inputs are laid out (D, n)
    so n is contiguous. Reusing `out` matters: a fresh multi-MiB tensor per block costs a round of
    page faults each time (it doubled the float64 run time)."""
    torch.sub(z_block.unsqueeze(2), mu_t, out=out)
    return out.square_().mul_(neg_half_precision_t).add_(log_norm_t)


# exp of arguments whose result is subnormal or zero takes a slow path on x86 (many times slower, and
# far-away components with narrow posteriors produce many of them). After the shift the largest
# term is 1, so raising arguments below the floor to it changes each sum by < n * exp(floor)
# relative, far below rounding (n * e^-80 ~ 1e-31 in float32).
_EXP_FLOOR = {torch.float32: -80.0, torch.float64: -700.0}


def _shifted_logsumexp_(values: torch.Tensor, exp_floor: float) -> torch.Tensor:
    """logsumexp over the last dim, shifted by its max; overwrites `values`."""
    shift = values.amax(dim=-1, keepdim=True)
    total = values.sub_(shift).clamp_(min=exp_floor).exp_().sum(dim=-1)
    return total.log_().add_(shift.squeeze(-1))


@torch.no_grad()
def aggregate_posterior_log_density(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    chunk_size: int | None = None,
    *,
    component_chunk_size: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact log q(z) and per-dim log q(z_j) of the mixture q(z) = 1/N sum_n q(z|x_n).

    z: (M, D) query points; mu, logvar: (N, D) the evaluation set's encodings.
    Returns (log_qz (M,), log_qz_dims (M, D)) in `dtype` (float64, or float32: faster,
    agrees to ~1e-6 nats on ordinary codes; benchmarks/information_speed.py measures both).
    Works in blocks of `chunk_size` queries x `component_chunk_size` encodings, so memory is
    O(chunk_size * D * component_chunk_size) whatever M and N are. None picks them: 2048
    encodings and as many queries as keep a block near BLOCK_ELEMENTS. (chunk_size=M,
    component_chunk_size=N is the unchunked computation.)
    Not differentiable (runs under no_grad).
    """
    _check_encodings(z, mu, logvar)
    num_queries, num_dims = z.shape
    num_components = mu.shape[0]
    component_chunk = DEFAULT_COMPONENT_CHUNK if component_chunk_size is None else int(component_chunk_size)
    component_chunk = min(component_chunk, num_components)
    query_chunk = _default_query_chunk(num_dims, component_chunk) if chunk_size is None else int(chunk_size)
    if query_chunk < 1 or component_chunk < 1:
        raise ValueError("chunk sizes must be positive (or None to choose them)")
    if dtype not in _EXP_FLOOR:
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")

    z = z.to(dtype)
    mu_t = mu.to(dtype).t().contiguous()
    logvar_t = logvar.to(dtype).t().contiguous()
    neg_half_precision_t = (-logvar_t).exp_().mul_(-0.5)
    log_norm_t = (logvar_t + LOG_2PI).mul_(-0.5)

    exp_floor = _EXP_FLOOR[dtype]
    log_qz = torch.empty(num_queries, dtype=dtype, device=z.device)
    log_qz_dims = torch.empty(num_queries, num_dims, dtype=dtype, device=z.device)
    buffers: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # at most 4 block shapes
    for q0 in range(0, num_queries, query_chunk):
        z_block = z[q0 : q0 + query_chunk]
        joint_acc = dims_acc = None
        for c0 in range(0, num_components, component_chunk):
            cols = slice(c0, c0 + component_chunk)
            shape = (z_block.shape[0], mu_t[:, cols].shape[1])
            if shape not in buffers:
                buffers[shape] = (z.new_empty(shape[0], num_dims, shape[1]), z.new_empty(shape))
            block, joint = buffers[shape]
            log_q = _block_log_density(  # (m, D, n)
                z_block, mu_t[:, cols], neg_half_precision_t[:, cols], log_norm_t[:, cols], block
            )
            joint_lse = _shifted_logsumexp_(torch.sum(log_q, dim=1, out=joint), exp_floor)  # (m,)
            dims_lse = _shifted_logsumexp_(log_q, exp_floor)  # (m, D); log_q is overwritten
            if joint_acc is None:
                joint_acc, dims_acc = joint_lse, dims_lse
            else:
                joint_acc = torch.logaddexp(joint_acc, joint_lse)
                dims_acc = torch.logaddexp(dims_acc, dims_lse)
        log_qz[q0 : q0 + query_chunk] = joint_acc
        log_qz_dims[q0 : q0 + query_chunk] = dims_acc
    log_n = math.log(num_components)
    return log_qz.sub_(log_n), log_qz_dims.sub_(log_n)


def _per_sample_terms(z, mu, logvar, chunk_size, component_chunk_size, dtype):
    """Per-sample integrands of the decomposition for paired samples z[n] ~ q(z|x_n)."""
    if z.shape != mu.shape:
        raise ValueError(f"z must pair one sample with each encoding: shape {tuple(mu.shape)}, got {tuple(z.shape)}")
    log_qz, log_qz_dims = aggregate_posterior_log_density(
        z, mu, logvar, chunk_size, component_chunk_size=component_chunk_size, dtype=dtype
    )
    # the mixture may run in float32; the closed-form terms and the differences stay float64
    log_qz, log_qz_dims = log_qz.double(), log_qz_dims.double()
    z, mu, logvar = z.double(), mu.double(), logvar.double()
    log_qz_given_x = gaussian_log_density(z, mu, logvar).sum(dim=1)
    log_pz_dims = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
    log_pz = log_pz_dims.sum(dim=1)
    return {
        "log_qz_given_x": log_qz_given_x,
        "log_pz": log_pz,
        "kl_marginal": log_qz - log_pz,
        "mutual_info": log_qz_given_x - log_qz,
        "total_correlation": log_qz - log_qz_dims.sum(dim=1),
        "dimwise_kl": (log_qz_dims - log_pz_dims).sum(dim=1),
    }


def _mean_and_stderr(terms: torch.Tensor) -> tuple[float, float]:
    n = terms.numel()
    stderr = terms.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return terms.mean().item(), stderr


# Paired-sample estimators over an evaluation set: z[n] ~ q(z|x_n), mu/logvar (N, D).
# MI on an empirical set is capped at log N: q(z_n) = 1/N sum_k q(z_n|x_k) >= q(z_n|x_n)/N, so
# log q(z_n|x_n) - log q(z_n) <= log N. With well-separated posteriors the estimate saturates
# at log N however much information the encoder really has; use N with log N >> I(X;Z).
# These take paired samples z[n] ~ q(z|x_n) and are not differentiable (no_grad): for logging.


@torch.no_grad()
def information_decomposition(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    *,
    component_chunk_size: int | None = None,
    dtype: torch.dtype = torch.float64,
    z: torch.Tensor | None = None,
) -> dict[str, float]:
    """The information quantities of an evaluation set of N encodings mu, logvar (N, D).

    Draws one z_n ~ q(z|x_n) per encoding from `generator` (deterministic given it; or takes
    the paired samples ``z`` (N, D) given) and returns
    kl_conditional, kl_marginal, mutual_info, total_correlation, dimwise_kl (nats), the checks
    identity_gap = kl_marginal - (kl_conditional - mutual_info) and
    tc_gap = kl_marginal - (total_correlation + dimwise_kl), kl_dim_<j> (closed-form conditional KL
    of dim j, averaged over examples: collapsed dims show ~0), mutual_info_cap = log N, and
    <name>_stderr Monte-Carlo standard errors (std of the per-sample terms / sqrt N; for terms
    involving log q(z) this ignores the dependence through the shared mixture, so read it as the
    error of sampling z given the set).

    identity_gap is the Monte-Carlo error of E[log q(z|x) - log p(z)] against the closed-form
    kl_conditional (log q(z) cancels), so |identity_gap| should be a few identity_gap_stderr at
    most. tc_gap is zero up to rounding (log q(z) and log q(z_j) cancel, log p factorises): it
    checks the bookkeeping, not the estimator.
    """
    if mu.dim() != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both be (N, D); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    mu64, logvar64 = mu.to(torch.float64), logvar.to(torch.float64)
    if z is None:
        noise_device = generator.device if generator is not None else mu64.device
        eps = torch.randn(mu64.shape, generator=generator, dtype=torch.float64, device=noise_device).to(mu64.device)
        z = mu64 + (0.5 * logvar64).exp() * eps
    terms = _per_sample_terms(z, mu64, logvar64, chunk_size, component_chunk_size, dtype)

    kl_cond_dims = kl_conditional_per_dim(mu64, logvar64)
    kl_cond_per_sample = kl_cond_dims.sum(dim=1)
    # identity (*) per sample: log q(z) cancels, leaving the MC error of the conditional KL
    identity_terms = terms["log_qz_given_x"] - terms["log_pz"] - kl_cond_per_sample

    out: dict[str, float] = {"kl_conditional": kl_cond_per_sample.mean().item()}
    for name in ("kl_marginal", "mutual_info", "total_correlation", "dimwise_kl"):
        out[name], out[f"{name}_stderr"] = _mean_and_stderr(terms[name])
    out["identity_gap"] = out["kl_marginal"] - (out["kl_conditional"] - out["mutual_info"])
    out["identity_gap_stderr"] = _mean_and_stderr(identity_terms)[1]
    out["tc_gap"] = out["kl_marginal"] - (out["total_correlation"] + out["dimwise_kl"])
    out["mutual_info_cap"] = math.log(mu.shape[0])
    for j, value in enumerate(kl_cond_dims.mean(dim=0).tolist()):
        out[f"kl_dim_{j}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# Training minibatch: importance-weighted log-sum-exp over the batch (differentiable)
# ---------------------------------------------------------------------------------------------
# A batch of B encodings {x_1..x_B} of a dataset of size N, z_i ~ q(z|x_i). The dataset sum
# q(z_i) = 1/N sum_n q(z_i|x_n) is replaced by a weighted sum over the batch,
#   log q_hat(z_i)   = logsumexp_k ( log w_ik + sum_j log q(z_ij|x_kj) )
#   log q_hat(z_ij)  = logsumexp_k ( log w_ik +       log q(z_ij|x_kj) ),   sum_k w_ik = 1.
# MWS (minibatch-weighted sampling): w_ik = 1/B, the batch is used as if it were the dataset.
#   Chen et al. print w_ik = 1/(N B), whose weights sum to 1/N: their log q_hat is offset by
#   -log N (harmless for gradients, wrong for the logged value and for KL_hat[q(z)||p(z)]);
#   the weights here are theirs normalised. The self term gets 1/B instead of its true 1/N, so
#   q_hat(z_i) >= q(z_i|x_i)/B: the minibatch MI is capped at log B and KL_hat is biased upwards.
# MSS (minibatch-stratified sampling): w_ii = 1/N for the sample's own encoding, one other
#   member (here k = i+1 mod B) gets (N - B + 1)/(N (B - 1)) and the remaining B - 2 get 1/(B - 1).
#   With the other members a uniform draw from the rest of the dataset, q_hat(z_i) is unbiased
#   for q(z_i). (The reference code strides by B instead of B + 1, so it fills columns 0 and 1
#   rather than the diagonal and its neighbour: rtqichen/beta-tcvae PR #1. Tested here.)
# Either way log q_hat is a log of a B-term average: Jensen biases E log q_hat(z) below log of its
# mean (MSS: below log q(z)), and q(z_i) is dominated by the few encodings near z_i, which a
# small batch rarely contains, so the bias and variance shrink only as B grows. Net effect on
# KL_hat[q(z)||p(z)]: MWS reads high, MSS low (the test's linear-Gaussian set, N = 1024, KL 0.52:
# B = 16 gives +0.16 / -0.23 nats, B = 256 gives +0.02 / -0.002). With B = N (the batch is the
# whole set) MWS is exactly the evaluation-set mixture and MSS nearly so.


# MEMORY (sampling="memory"): the components are the batch and the R encodings of recent batches
#   kept by an EncodingMemory (detached: no gradient flows into them). Every component but the
#   sample's own is treated as a draw from the rest of the dataset: w_ii = 1/N and each of the
#   B - 1 + R others (N - 1)/(N (B - 1 + R)), unbiased for q(z_i) when the others are uniform
#   draws from the rest (the memory's came from the encoder of up to R/B steps ago, so only
#   approximately). With R in the thousands many more components fall near z_i than a batch of
#   64 offers, so the bias and variance of log q_hat shrink as they do for a batch of B + R, at
#   (B + R)/B times the batch estimate's cost: the large-batch estimate of Chen et al. (B = 2048)
#   at a small batch's training cost.


def _minibatch_log_weights(batch_size: int, dataset_size: int, sampling: str, dtype, device,
                           memory_size: int = 0) -> torch.Tensor:  # fmt: skip
    """(B, B + memory_size) log weights: row i weighs the batch's encodings, then the memory's."""
    if sampling not in MINIBATCH_SAMPLING:
        raise ValueError(f"sampling must be one of {MINIBATCH_SAMPLING}; got {sampling!r}")
    if dataset_size < batch_size:
        raise ValueError(f"dataset_size ({dataset_size}) must be at least the batch size ({batch_size})")
    if memory_size and sampling != "memory":
        raise ValueError(f"sampling={sampling!r} weighs the batch alone; a memory of encodings needs sampling='memory'")
    if sampling == "mws":
        return torch.full((batch_size, batch_size), -math.log(batch_size), dtype=dtype, device=device)
    if sampling == "memory":
        others = batch_size - 1 + memory_size
        if others < 1:
            raise ValueError("memory sampling needs a batch of at least 2 or a non-empty memory")
        weights = torch.full((batch_size, batch_size + memory_size), (dataset_size - 1) / (dataset_size * others), dtype=torch.float64)
        rows = torch.arange(batch_size)
        weights[rows, rows] = 1.0 / dataset_size
        return weights.log().to(dtype=dtype, device=device)
    if batch_size < 2:
        raise ValueError("mss needs a batch of at least 2")
    others = batch_size - 1
    weights = torch.full((batch_size, batch_size), 1.0 / others, dtype=torch.float64)
    rows = torch.arange(batch_size)
    weights[rows, rows] = 1.0 / dataset_size
    weights[rows, (rows + 1) % batch_size] = (dataset_size - others) / (dataset_size * others)
    return weights.log().to(dtype=dtype, device=device)


def minibatch_log_density(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    dataset_size: int,
    sampling: str = "mss",
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch estimates (log q_hat(z_i) (B,), log q_hat(z_ij) (B, D)) with z[i] ~ q(z|x_i).

    mu, logvar are the batch's own encodings (B, D); dataset_size is N, the size of the set the
    batch was drawn from; sampling is "mws", "mss" or "memory" (see the comments above), and
    ``memory`` the (mu, logvar) of recent encodings, (R, D) each, for "memory" (None: R = 0).
    Differentiable in the batch's encodings. Builds a (B, B + R, D) tensor: fine for training
    batches, not for evaluation sets.
    """
    _check_encodings(z, mu, logvar)
    if z.shape != mu.shape:
        raise ValueError(f"z must pair one sample with each batch encoding: {tuple(mu.shape)}, got {tuple(z.shape)}")
    if memory is not None:
        memory_mu, memory_logvar = memory
        if memory_mu.dim() != 2 or memory_mu.shape[1] != mu.shape[1] or memory_logvar.shape != memory_mu.shape:
            raise ValueError(f"the memory must be (R, {mu.shape[1]}) encodings; got {tuple(memory_mu.shape)}")
        mu = torch.cat([mu, memory_mu.to(mu.dtype)])
        logvar = torch.cat([logvar, memory_logvar.to(logvar.dtype)])
    memory_size = mu.shape[0] - z.shape[0]
    log_w = _minibatch_log_weights(z.shape[0], int(dataset_size), sampling, z.dtype, z.device, memory_size)
    log_q_pairs = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # [i, k, j]
    log_qz = torch.logsumexp(log_w + log_q_pairs.sum(dim=2), dim=1)
    log_qz_dims = torch.logsumexp(log_w.unsqueeze(2) + log_q_pairs, dim=1)
    return log_qz, log_qz_dims


class EncodingMemory(torch.nn.Module):
    """The (mu, logvar) of the last ``size`` training encodings, detached and oldest first: the
    extra components of sampling="memory". Buffers, so a checkpoint keeps them and a resumed run
    estimates log q(z) from the same components as the uninterrupted one."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mu", torch.zeros(0, 0))
        self.register_buffer("logvar", torch.zeros(0, 0))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.mu, self.logvar) if self.mu.shape[0] else None

    def push(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """Keep a batch's encodings, dropping the oldest beyond ``size``."""
        mu, logvar = mu.detach().float(), logvar.detach().float()
        if self.mu.shape[0]:
            mu, logvar = torch.cat([self.mu, mu]), torch.cat([self.logvar, logvar])
        self.mu, self.logvar = mu[-self.size :].clone(), logvar[-self.size :].clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffers grow until full: take the saved ones' shapes before they are copied in.
        for name in ("mu", "logvar"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def minibatch_information_terms(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, log_qz: torch.Tensor, log_qz_dims: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The decomposition on one minibatch, each term a differentiable scalar, from the batch's
    encodings and samples and their estimated log densities (:func:`minibatch_log_density`):
    kl_marginal_mb = KL_hat[q(z)||p(z)], mutual_info_mb, total_correlation_mb, dimwise_kl_mb.

    kl_marginal_mb = total_correlation_mb + dimwise_kl_mb exactly, and
    kl_marginal_mb = mean_i [log q(z_i|x_i) - log p(z_i)] - mutual_info_mb exactly (identity (*)
    with a one-sample conditional KL).
    """
    log_pz_dims = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
    log_qz_given_x = gaussian_log_density(z, mu, logvar).sum(dim=1)
    return {
        "kl_marginal_mb": (log_qz - log_pz_dims.sum(dim=1)).mean(),
        "mutual_info_mb": (log_qz_given_x - log_qz).mean(),
        "total_correlation_mb": (log_qz - log_qz_dims.sum(dim=1)).mean(),
        "dimwise_kl_mb": (log_qz_dims - log_pz_dims).sum(dim=1).mean(),
    }
