"""Known-answer tests of the information estimators (vaelab/information.py).

The reference model is a linear-Gaussian encoder on Gaussian data: x ~ N(0, Sigma_x),
q(z|x) = N(A x, S) with S diagonal, so q(z) = N(0, C) with C = A Sigma_x A^T + S and

    I(X;Z)            = 1/2 log det C / det S
    KL[q(z)||p(z)]    = 1/2 (tr C - D - log det C)
    TC                = 1/2 (sum_j log C_jj - log det C)
    sum_j KL[q(z_j)||p(z_j)] = 1/2 sum_j (C_jj - 1 - log C_jj)
    E KL[q(z|x)||p(z)] = 1/2 (tr(A Sigma_x A^T) + tr S - log det S - D).

The evaluation set's x are whitened and recoloured so their second moment is exactly Sigma_x:
then the data-sampling error of the second moments is gone and what is left to compare is
the estimator's own Monte-Carlo error (reported as *_stderr) and its small finite-N bias.
"""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.information import (
    EncodingMemory,
    aggregate_posterior_log_density,
    gaussian_log_density,
    information_decomposition,
    kl_conditional,
    minibatch_information_terms,
    minibatch_log_density,
)


def minibatch_terms(z, mu, logvar, dataset_size, sampling="mss", memory=None):
    """The minibatch decomposition as the objectives compute it (MinibatchEstimate)."""
    log_qz, log_qz_dims = minibatch_log_density(z, mu, logvar, dataset_size, sampling, memory)
    return minibatch_information_terms(z, mu, logvar, log_qz, log_qz_dims)


def kl_marginal_minibatch(z, mu, logvar, dataset_size, sampling="mss", memory=None):
    """KL_hat[q(z)||p(z)] on a minibatch: the KL term of InfoMax native's loss."""
    return minibatch_terms(z, mu, logvar, dataset_size, sampling, memory)["kl_marginal_mb"]

F64 = torch.float64
SIGMA_X_CHOLESKY = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 0.7]], dtype=F64)
MIXING_CORRELATED = torch.tensor([[1.0, 0.6, 0.0], [0.0, 0.8, -0.5], [0.3, 0.0, 0.9]], dtype=F64)
NOISE_VAR = torch.tensor([0.5, 0.4, 0.6], dtype=F64)
EVAL_N = 4000


def whitened_gaussian(n: int, cholesky: torch.Tensor, seed: int) -> torch.Tensor:
    """n points whose empirical mean is 0 and empirical second moment is exactly L L^T."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cholesky.shape[0], generator=g, dtype=F64)
    x = x - x.mean(dim=0)
    w = torch.linalg.cholesky(x.T @ x / n)
    x = torch.linalg.solve_triangular(w, x.T, upper=False).T
    return x @ cholesky.T


def linear_gaussian_encodings(mixing, sigma_x_cholesky, noise_var, n=EVAL_N, seed=0):
    x = whitened_gaussian(n, sigma_x_cholesky, seed)
    mu = x @ mixing.T
    logvar = noise_var.log().expand(n, -1).clone()
    return mu, logvar


def linear_gaussian_closed_form(mixing, sigma_x_cholesky, noise_var) -> dict[str, float]:
    sigma_x = sigma_x_cholesky @ sigma_x_cholesky.T
    signal = mixing @ sigma_x @ mixing.T
    cov = signal + torch.diag(noise_var)
    d = cov.shape[0]
    logdet, logdet_noise = torch.logdet(cov), noise_var.log().sum()
    diag = cov.diagonal()
    return {
        "mutual_info": 0.5 * (logdet - logdet_noise).item(),
        "kl_marginal": 0.5 * (cov.trace() - d - logdet).item(),
        "total_correlation": 0.5 * (diag.log().sum() - logdet).item(),
        "dimwise_kl": 0.5 * (diag - 1 - diag.log()).sum().item(),
        "kl_conditional": 0.5 * (signal.trace() + noise_var.sum() - logdet_noise - d).item(),
    }


def brute_force_log_density(z, mu, logvar):
    """The (M, N, D) formula the chunked estimator must reproduce."""
    pairs = gaussian_log_density(z[:, None, :], mu[None], logvar[None])
    log_n = math.log(mu.shape[0])
    return torch.logsumexp(pairs.sum(dim=2), dim=1) - log_n, torch.logsumexp(pairs, dim=1) - log_n


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Nothing here depends on the thread count, and on a small shared machine two OpenMP threads
    # contending with other processes can make the same estimate 10-50x slower at random
    # (benchmarks/information_speed.py measures speed); one thread keeps this file's runtime steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def correlated_set():
    mu, logvar = linear_gaussian_encodings(MIXING_CORRELATED, SIGMA_X_CHOLESKY, NOISE_VAR)
    result = information_decomposition(mu, logvar, torch.Generator().manual_seed(1))
    return mu, logvar, result, linear_gaussian_closed_form(MIXING_CORRELATED, SIGMA_X_CHOLESKY, NOISE_VAR)


# ----------------------------------------------------------------------------- exact mixture


def test_mixture_of_identical_encodings_is_that_gaussian():
    # q(z) = 1/N sum_n N(m, v) = N(m, v) exactly, whatever N and the chunking.
    m = torch.tensor([0.3, -1.2, 2.0], dtype=F64)
    lv = torch.tensor([-0.5, 0.2, -3.0], dtype=F64)
    n = 37
    mu, logvar = m.expand(n, -1).clone(), lv.expand(n, -1).clone()
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    log_qz, log_qz_dims = aggregate_posterior_log_density(z, mu, logvar, 8, component_chunk_size=5)
    expected_dims = gaussian_log_density(z, m, lv)
    torch.testing.assert_close(log_qz_dims, expected_dims, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_qz, expected_dims.sum(dim=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_size, component_chunk_size", [(120, 300), (None, None), (16, 2048), (7, 13), (1, 1000)])
def test_chunking_matches_brute_force(chunk_size, component_chunk_size):
    # (120, 300) is one block: the unchunked computation; (None, None) the automatic choice
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(300, 4, generator=g, dtype=F64) * 2
    logvar = torch.randn(300, 4, generator=g, dtype=F64) - 3
    z = mu[:120] + torch.randn(120, 4, generator=g, dtype=F64) * (0.5 * logvar[:120]).exp()
    expected_joint, expected_dims = brute_force_log_density(z, mu, logvar)
    log_qz, log_qz_dims = aggregate_posterior_log_density(
        z, mu, logvar, chunk_size, component_chunk_size=component_chunk_size
    )
    torch.testing.assert_close(log_qz, expected_joint, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_qz_dims, expected_dims, rtol=0, atol=1e-10)


def test_float32_path_agrees_with_float64():
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(500, 5, generator=g, dtype=F64) * 1.5
    logvar = torch.randn(500, 5, generator=g, dtype=F64) * 0.5 - 2
    z = mu + torch.randn(500, 5, generator=g, dtype=F64) * (0.5 * logvar).exp()
    j64, d64 = aggregate_posterior_log_density(z, mu, logvar)
    j32, d32 = aggregate_posterior_log_density(z, mu, logvar, dtype=torch.float32)
    assert j32.dtype == torch.float32
    torch.testing.assert_close(j32.double(), j64, rtol=0, atol=1e-4)
    torch.testing.assert_close(d32.double(), d64, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_query_far_from_every_component_in_some_dim(dtype):
    # Each component is 100 sd away from z in one dim: every joint term is ~exp(-5000), far
    # below the underflow of exp in either dtype, so only a correctly shifted log-sum-exp is finite.
    mu = torch.tensor([[0.0, 100.0], [100.0, 0.0]], dtype=F64)
    logvar = torch.zeros(2, 2, dtype=F64)
    z = torch.zeros(1, 2, dtype=F64)
    log_qz, log_qz_dims = aggregate_posterior_log_density(z, mu, logvar, dtype=dtype)
    near, far = -0.5 * math.log(2 * math.pi), -0.5 * math.log(2 * math.pi) - 5000.0
    # both components give near + far; q(z_j) = 1/2 (exp(near) + exp(far)) per dim
    assert math.isfinite(log_qz.item())
    assert log_qz.item() == pytest.approx(near + far, rel=1e-6)
    expected_dims = torch.full((1, 2), near - math.log(2), dtype=F64)
    torch.testing.assert_close(log_qz_dims.double(), expected_dims, rtol=0, atol=1e-5)


def test_bad_shapes_are_rejected():
    mu, logvar = torch.zeros(5, 3), torch.zeros(5, 3)
    with pytest.raises(ValueError):
        aggregate_posterior_log_density(torch.zeros(4, 2), mu, logvar)
    with pytest.raises(ValueError):
        aggregate_posterior_log_density(torch.zeros(4, 3), mu, torch.zeros(5, 2))
    with pytest.raises(ValueError):
        information_decomposition(mu, logvar, z=torch.zeros(4, 3))


# ----------------------------------------------------------------------------- decomposition


@pytest.mark.parametrize("name", ["mutual_info", "kl_marginal", "total_correlation", "dimwise_kl"])
def test_linear_gaussian_matches_closed_form(correlated_set, name):
    _, _, result, truth = correlated_set
    assert result["mutual_info_cap"] == pytest.approx(math.log(EVAL_N))
    assert truth["mutual_info"] < 0.2 * result["mutual_info_cap"]  # the log N cap does not bite
    # 4 MC standard errors plus 0.01 nats for the finite-N bias of the empirical mixture
    tolerance = 4 * result[f"{name}_stderr"] + 0.01
    assert 0 < result[f"{name}_stderr"] < 0.05
    assert abs(result[name] - truth[name]) < tolerance, (name, result[name], truth[name], tolerance)


def test_linear_gaussian_kl_conditional_and_per_dim(correlated_set):
    mu, logvar, result, truth = correlated_set
    assert result["kl_conditional"] == pytest.approx(truth["kl_conditional"], abs=1e-9)
    per_dim = sum(result[f"kl_dim_{j}"] for j in range(3))
    assert per_dim == pytest.approx(result["kl_conditional"], abs=1e-9)
    assert kl_conditional(mu, logvar).item() == pytest.approx(truth["kl_conditional"], abs=1e-9)


def test_identity_and_tc_gaps_within_monte_carlo_error(correlated_set):
    _, _, result, _ = correlated_set
    assert 0 < result["identity_gap_stderr"] < 0.05
    assert abs(result["identity_gap"]) < 4 * result["identity_gap_stderr"]
    assert abs(result["tc_gap"]) < 1e-9


def test_gaps_on_heteroscedastic_non_gaussian_set():
    # a mixture-of-clusters code with per-example variances: no closed form, the identities still hold
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(6, 4, generator=g, dtype=F64) * 2
    mu = centres[torch.randint(0, 6, (3000,), generator=g)] + 0.3 * torch.randn(3000, 4, generator=g, dtype=F64)
    logvar = torch.rand(3000, 4, generator=g, dtype=F64) * 2 - 3
    result = information_decomposition(mu, logvar, torch.Generator().manual_seed(6))
    assert abs(result["identity_gap"]) < 4 * result["identity_gap_stderr"]
    assert abs(result["tc_gap"]) < 1e-9
    assert result["total_correlation"] > 0.1  # clusters make the latents dependent


def test_independent_latents_have_no_total_correlation():
    mixing = torch.diag(torch.tensor([1.2, 0.7, 1.5], dtype=F64))
    identity = torch.eye(3, dtype=F64)
    mu, logvar = linear_gaussian_encodings(mixing, identity, NOISE_VAR, seed=2)
    result = information_decomposition(mu, logvar, torch.Generator().manual_seed(7))
    truth = linear_gaussian_closed_form(mixing, identity, NOISE_VAR)
    assert truth["total_correlation"] == pytest.approx(0.0, abs=1e-12)
    assert abs(result["total_correlation"]) < 4 * result["total_correlation_stderr"] + 0.01
    assert abs(result["mutual_info"] - truth["mutual_info"]) < 4 * result["mutual_info_stderr"] + 0.01


def test_correlated_latents_have_clear_total_correlation(correlated_set):
    _, _, result, truth = correlated_set
    assert truth["total_correlation"] > 0.2
    assert result["total_correlation"] > 10 * result["total_correlation_stderr"]


def test_mutual_info_saturates_at_log_n_for_separated_posteriors():
    # true I(X;Z) is ~ 1/2 * 3 * 20 = 30 nats, but an empirical set of N codes can show at most log N
    g = torch.Generator().manual_seed(8)
    n = 500
    mu = torch.randn(n, 3, generator=g, dtype=F64)
    logvar = torch.full((n, 3), -20.0, dtype=F64)
    result = information_decomposition(mu, logvar, torch.Generator().manual_seed(9))
    assert result["mutual_info"] <= math.log(n) + 1e-9
    assert result["mutual_info"] == pytest.approx(math.log(n), abs=1e-3)


def test_collapsed_dimension_shows_zero_kl():
    g = torch.Generator().manual_seed(10)
    mu = torch.randn(400, 3, generator=g, dtype=F64)
    logvar = torch.full((400, 3), -1.0, dtype=F64)
    mu[:, 1] = 0.0
    logvar[:, 1] = 0.0  # dim 1 is the prior for every x
    result = information_decomposition(mu, logvar, torch.Generator().manual_seed(11))
    assert result["kl_dim_1"] == 0.0
    assert result["kl_dim_0"] > 0.5 and result["kl_dim_2"] > 0.5


def test_deterministic_given_generator_and_float32_inputs():
    g = torch.Generator().manual_seed(12)
    mu = torch.randn(300, 3, generator=g)
    logvar = torch.randn(300, 3, generator=g) * 0.3 - 1
    first = information_decomposition(mu, logvar, torch.Generator().manual_seed(13))
    again = information_decomposition(mu, logvar, torch.Generator().manual_seed(13))
    other = information_decomposition(mu, logvar, torch.Generator().manual_seed(14))
    assert first == again
    assert first["mutual_info"] != other["mutual_info"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values())


def test_standalone_estimators_agree_with_decomposition():
    g = torch.Generator().manual_seed(15)
    mu = torch.randn(400, 3, generator=g, dtype=F64)
    logvar = torch.randn(400, 3, generator=g, dtype=F64) * 0.3 - 1
    result = information_decomposition(mu, logvar, torch.Generator().manual_seed(16))
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(16), dtype=F64)
    z = mu + (0.5 * logvar).exp() * eps  # the decomposition's own sample
    given = information_decomposition(mu, logvar, z=z)  # the same sample, given
    for name in ("kl_marginal", "mutual_info", "total_correlation", "dimwise_kl"):
        assert given[name] == pytest.approx(result[name], abs=1e-10), name


# ----------------------------------------------------------------------------- minibatch


def _batch_average_of_q_hat(sampling, position):
    """E over batches of q_hat(z) and q_hat(z_j) for z ~ q(z|x_i), enumerating every batch with
    x_i at `position`, next to the exact q(z) and q(z_j) of the whole (small) dataset."""
    import itertools

    g = torch.Generator().manual_seed(17)
    n, batch = 9, 4
    mu = torch.randn(n, 2, generator=g, dtype=F64)
    logvar = torch.randn(n, 2, generator=g, dtype=F64) * 0.3 - 0.5
    i = 0
    z_i = mu[i] + torch.randn(2, generator=g, dtype=F64) * 0.8
    exact_joint, exact_dims = (t[0].exp() for t in aggregate_posterior_log_density(z_i[None], mu, logvar))
    others = [k for k in range(n) if k != i]
    joint, dims = [], []
    for chosen in itertools.permutations(others, batch - 1):
        order = list(chosen)
        order.insert(position, i)
        z = mu[order].clone()
        z[position] = z_i
        log_qz, log_qz_dims = minibatch_log_density(z, mu[order], logvar[order], n, sampling)
        joint.append(log_qz[position].exp())
        dims.append(log_qz_dims[position].exp())
    return torch.stack(joint).mean(), torch.stack(dims).mean(dim=0), exact_joint, exact_dims


@pytest.mark.parametrize("position", [0, 3])
def test_mss_is_unbiased_for_q_of_z(position):
    joint, dims, exact_joint, exact_dims = _batch_average_of_q_hat("mss", position)
    assert joint.item() == pytest.approx(exact_joint.item(), rel=1e-10)
    torch.testing.assert_close(dims, exact_dims, rtol=1e-10, atol=0)


def test_mws_overweights_the_sample_own_encoding():
    joint, dims, exact_joint, exact_dims = _batch_average_of_q_hat("mws", 0)
    assert joint > 1.05 * exact_joint  # self weight 1/B instead of 1/N
    assert (dims > exact_dims).all()


@pytest.mark.parametrize("sampling", ["mws", "mss"])
def test_minibatch_kl_converges_to_evaluation_set_value(sampling):
    n = 1024
    mu, logvar = linear_gaussian_encodings(MIXING_CORRELATED, SIGMA_X_CHOLESKY, NOISE_VAR, n=n, seed=18)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(19), dtype=F64)
    target = information_decomposition(mu, logvar, z=z)["kl_marginal"]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(20))

    def rms_error(batch_size):
        batches = perm.view(-1, batch_size)[:32]
        errors = [kl_marginal_minibatch(z[b], mu[b], logvar[b], n, sampling).item() - target for b in batches]
        return math.sqrt(sum(e * e for e in errors) / len(errors))

    small, medium, full = rms_error(16), rms_error(128), rms_error(n)
    assert small > 0.05
    assert medium < 0.5 * small
    assert full < 0.02 * small
    if sampling == "mws":  # the whole set as one batch is the exact mixture, per dim too
        assert full < 1e-9
        terms = minibatch_terms(z, mu, logvar, n, sampling)
        full = information_decomposition(mu, logvar, z=z)
        assert terms["dimwise_kl_mb"].item() == pytest.approx(full["dimwise_kl"], abs=1e-9)
        assert terms["total_correlation_mb"].item() == pytest.approx(full["total_correlation"], abs=1e-9)


def test_minibatch_terms_are_consistent_and_differentiable():
    g = torch.Generator().manual_seed(21)
    mu = torch.randn(64, 4, generator=g, dtype=F64).requires_grad_()
    logvar = (torch.randn(64, 4, generator=g, dtype=F64) * 0.2 - 1).requires_grad_()
    z = mu + (0.5 * logvar).exp() * torch.randn(64, 4, generator=g, dtype=F64)
    for sampling in ("mws", "mss"):
        terms = minibatch_terms(z, mu, logvar, 10_000, sampling)
        assert set(terms) == {"kl_marginal_mb", "mutual_info_mb", "total_correlation_mb", "dimwise_kl_mb"}
        kl_mb = kl_marginal_minibatch(z, mu, logvar, 10_000, sampling)
        assert kl_mb.item() == pytest.approx(terms["kl_marginal_mb"].item(), abs=1e-12)
        split = terms["total_correlation_mb"] + terms["dimwise_kl_mb"]
        assert split.item() == pytest.approx(kl_mb.item(), abs=1e-10)
        log_p = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        one_sample_kl_cond = (gaussian_log_density(z, mu, logvar) - log_p).sum(1).mean()
        assert (one_sample_kl_cond - terms["mutual_info_mb"]).item() == pytest.approx(kl_mb.item(), abs=1e-10)
        if sampling == "mws":  # q_hat(z_i) >= q(z_i|x_i) / B caps the minibatch MI at log B
            assert terms["mutual_info_mb"].item() <= math.log(64) + 1e-9
        grad_mu, grad_logvar = torch.autograd.grad(kl_mb, (mu, logvar), retain_graph=True)
        assert torch.isfinite(grad_mu).all() and torch.isfinite(grad_logvar).all()
        assert grad_mu.abs().sum() > 0


def test_minibatch_gradcheck():
    g = torch.Generator().manual_seed(22)
    mu = torch.randn(5, 2, generator=g, dtype=F64).requires_grad_()
    logvar = (torch.randn(5, 2, generator=g, dtype=F64) * 0.2).requires_grad_()
    eps = torch.randn(5, 2, generator=g, dtype=F64)
    for sampling in ("mws", "mss"):
        torch.autograd.gradcheck(
            lambda m, lv: kl_marginal_minibatch(m + (0.5 * lv).exp() * eps, m, lv, 50, sampling), (mu, logvar)
        )


def test_memory_sampling_with_every_encoding_once_is_the_exact_mixture():
    """Batch and memory holding the whole dataset once: own weight 1/N and (N-1)/(N(N-1)) = 1/N for
    every other, so q_hat is the aggregate posterior itself, joint and per dim."""
    g = torch.Generator().manual_seed(23)
    n = 9
    mu = torch.randn(n, 2, generator=g, dtype=F64)
    logvar = torch.randn(n, 2, generator=g, dtype=F64) * 0.3 - 0.5
    z = mu + (0.5 * logvar).exp() * torch.randn(n, 2, generator=g, dtype=F64)
    exact_joint, exact_dims = aggregate_posterior_log_density(z, mu, logvar)
    batch = [2, 5, 7]
    rest = [k for k in range(n) if k not in batch]
    log_qz, log_qz_dims = minibatch_log_density(z[batch], mu[batch], logvar[batch], n, "memory", memory=(mu[rest], logvar[rest]))
    torch.testing.assert_close(log_qz, exact_joint[batch], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_qz_dims, exact_dims[batch], rtol=1e-12, atol=1e-12)


def test_a_memory_brings_a_small_batch_near_the_evaluation_set_value():
    """The point of sampling=memory: at batch 16, 240 remembered encodings cut the error of
    KL_hat[q(z)||p(z)] against the exact mixture at the same 16 samples (here 0.27 -> 0.04 nats rms)."""
    n = 1024
    mu, logvar = linear_gaussian_encodings(MIXING_CORRELATED, SIGMA_X_CHOLESKY, NOISE_VAR, n=n, seed=18)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(19), dtype=F64)
    exact = aggregate_posterior_log_density(z, mu, logvar)[0] - gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(20))
    alone, remembered = [], []
    for k, b in enumerate(perm.view(-1, 16)[:32]):
        rest = perm[~torch.isin(perm, b)]
        rest = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(k))[:240]]
        target = exact[b].mean().item()
        alone.append(kl_marginal_minibatch(z[b], mu[b], logvar[b], n, "mss").item() - target)
        remembered.append(kl_marginal_minibatch(z[b], mu[b], logvar[b], n, "memory", memory=(mu[rest], logvar[rest])).item() - target)
    rms_alone, rms_remembered = (math.sqrt(sum(e * e for e in errors) / len(errors)) for errors in (alone, remembered))
    assert rms_alone > 0.2 and rms_remembered < 0.2 * rms_alone


def test_memory_sampling_is_differentiable_in_the_batch_alone():
    g = torch.Generator().manual_seed(24)
    mu = torch.randn(5, 2, generator=g, dtype=F64).requires_grad_()
    logvar = (torch.randn(5, 2, generator=g, dtype=F64) * 0.2).requires_grad_()
    eps = torch.randn(5, 2, generator=g, dtype=F64)
    memory = EncodingMemory(size=7)
    memory.push(torch.randn(4, 2, generator=g, dtype=F64).requires_grad_(), torch.zeros(4, 2, dtype=F64))
    assert not memory.mu.requires_grad and memory.mu.dtype == torch.float32  # kept detached, in float32
    remembered = tuple(t.double() for t in memory.contents())
    torch.autograd.gradcheck(
        lambda m, lv: kl_marginal_minibatch(m + (0.5 * lv).exp() * eps, m, lv, 50, "memory", memory=remembered), (mu, logvar)
    )


def test_the_memory_keeps_the_last_encodings_oldest_first_and_loads_any_fill():
    memory = EncodingMemory(size=5)
    assert memory.contents() is None
    for start in (0, 3, 6):
        block = torch.arange(start, start + 3, dtype=torch.float32)[:, None].repeat(1, 2)
        memory.push(block, -block)
    assert memory.mu[:, 0].tolist() == [4, 5, 6, 7, 8] and memory.logvar[:, 1].tolist() == [-4, -5, -6, -7, -8]
    restored = EncodingMemory(size=5)  # empty: the saved one's shape is taken on load
    restored.load_state_dict(memory.state_dict())
    assert torch.equal(restored.mu, memory.mu) and torch.equal(restored.logvar, memory.logvar)


def test_objectives_fill_their_memory_in_training_only():
    from vaelab.models.vae import VAEOutput
    from vaelab.objectives.betatcvae import BetaTCVAE
    from vaelab.objectives.infomax import InfoMax

    g = torch.Generator().manual_seed(25)
    mu, logvar = torch.randn(8, 3, generator=g), torch.zeros(8, 3)
    out = VAEOutput(mu=mu, logvar=logvar, z=mu + torch.randn(8, 3, generator=g), decoded=None,
                    reconstruction=torch.ones(8), kl_conditional=torch.ones(8, 3))  # fmt: skip
    for objective in (BetaTCVAE(beta=4, sampling="memory", memory_size=12, dataset_size=100),
                      InfoMax(lam=0.5, estimator="native", sampling="memory", memory_size=12, dataset_size=100)):  # fmt: skip
        first = objective(out, step=0)
        assert objective.memory.mu.shape == (8, 3)
        second = objective(out, step=1)  # the same batch, now also in memory: a different estimate
        assert objective.memory.mu.shape == (12, 3) and second["loss"] != first["loss"]
        objective.eval()
        objective(out, step=2)
        assert torch.equal(objective.memory.mu[-4:], mu[-4:])  # validation batches never enter it
        assert objective.memory.mu.shape == (12, 3)
    assert InfoMax(lam=0.5, sampling="memory").memory is None  # derived estimates nothing on the batch


def test_minibatch_rejects_bad_arguments():
    z = torch.zeros(8, 2)
    with pytest.raises(ValueError):
        minibatch_log_density(z, z, z, 4, "mss")  # dataset smaller than the batch
    with pytest.raises(ValueError):
        minibatch_log_density(z, z, z, 100, "iwae")
    with pytest.raises(ValueError):
        minibatch_log_density(z[:1], z[:1], z[:1], 100, "mss")
    with pytest.raises(ValueError, match="needs sampling='memory'"):
        minibatch_log_density(z, z, z, 100, "mss", memory=(z, z))
    with pytest.raises(ValueError, match="the memory must be"):
        minibatch_log_density(z, z, z, 100, "memory", memory=(torch.zeros(3, 5), torch.zeros(3, 5)))
