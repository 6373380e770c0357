"""The encoding path of the metrics (vaelab.metrics.representation.MeanEncoder).

fp32 must give the codes of ``model.encode`` bit for bit (the codes the model computes
in training); ``encode_precision=bf16`` must keep every score
of the full suite within 0.005 of fp32 on a trained model (docs/metrics.md,
"Encoding"). That check trains a model and scores the whole suite twice, minutes on
2 cores, so it runs with VAELAB_SLOW_TESTS=1 or with VAELAB_TEST_CKPT=<a vaelab
checkpoint of the conv model on dSprites> (then it takes its weights instead of training).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import run_vaelab
from vaelab.data.dsprites import ProceduralDSprites
from vaelab.errors import UserError
from vaelab.metrics import evaluate
from vaelab.metrics.representation import CachedEncoder, MeanEncoder, encoder_representation
from vaelab.models.conv import ConvReLU, ConvVAE

REPO = pathlib.Path(__file__).resolve().parents[1]
SLOW = os.environ.get("VAELAB_SLOW_TESTS") == "1"
CKPT = os.environ.get("VAELAB_TEST_CKPT")

# bf16 against fp32, per score: absolute for scores in [0, 1]; the two unnormalised
# Gaussian scores (nats, and squared code units) relative to their value.
BF16_TOLERANCE = 0.005
BF16_RELATIVE = {
    "metrics/unsupervised_gaussian_total_correlation": 0.002,
    "metrics/unsupervised_gaussian_wasserstein_correlation": 0.002,
}


@pytest.fixture(scope="module")
def dsprites():
    return ProceduralDSprites()


@pytest.fixture(scope="module")
def model(dsprites):
    torch.manual_seed(0)
    return ConvVAE(dsprites.image_shape, dsprites.binary)


def _images(dsprites, n=300, seed=0):
    index = np.random.default_rng(seed).choice(len(dsprites), n, replace=False)
    return dsprites.images_at(index)


@pytest.mark.parametrize("channels_last", [True, False])
def test_fp32_codes_are_bitwise_those_of_model_encode(dsprites, model, channels_last):
    if not channels_last:
        torch.manual_seed(0)
        model = ConvVAE(dsprites.image_shape, dsprites.binary, channels_last=False)
    images = _images(dsprites)
    model.eval()
    with torch.no_grad():
        expected = model.encode(images)[0].numpy()
    model.train()  # as during training: the encoder works on its own eval-mode copy
    encoder = MeanEncoder(model, "cpu", "fp32")
    codes = encoder(images)
    # every conv + ReLU of the copy runs fused (one oneDNN call), and that changes no bit
    assert sum(isinstance(m, ConvReLU) for m in encoder.model.modules()) == 4
    assert codes.dtype == np.float32
    np.testing.assert_array_equal(codes, expected)
    assert model.training
    # the caller's model untouched: still training, and in its own memory layout
    assert all(p.requires_grad for p in model.parameters())
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(p.is_contiguous(memory_format=layout) for p in model.parameters() if p.dim() == 4)


def test_bf16_codes_are_close_and_not_rounded_to_bf16(dsprites, model):
    images = _images(dsprites, seed=1)
    fp32 = MeanEncoder(model, "cpu", "fp32")(images)
    bf16 = MeanEncoder(model, "cpu", "bf16")(images)
    assert bf16.dtype == np.float32
    # the convolutions in bf16 (8-bit mantissa): codes move by well under 1% of their size
    # (of their size, not of their spread: an untrained encoder's codes are a bias plus
    # variations 100x smaller, and those bf16 does not resolve; a trained one's spread is ~1)
    assert np.abs(bf16 - fp32).max() < 0.01 * np.abs(fp32).max()
    # the linear layers run in float32, so the codes are not bf16 values (ties for DCI, MIG)
    as_bf16 = torch.from_numpy(bf16).to(torch.bfloat16).float().numpy()
    assert (as_bf16 != bf16).mean() > 0.9


def test_unknown_encode_precision_is_a_user_error(model):
    with pytest.raises(UserError, match="encode_precision"):
        MeanEncoder(model, "cpu", "fp16")


def test_encoder_representation_scores_equal_the_plain_encoder(dsprites, model):
    model.eval()

    @torch.no_grad()
    def plain(images):  # vaelab's encoding before MeanEncoder
        return model.encode(images)[0].double().numpy()

    suite = {"mig": dict(num_train=1500), "factor_vae": dict(num_train=30, num_eval=20, num_variance_estimate=1000)}
    represent = encoder_representation(model, dsprites, "cpu", batch_size=500)
    fast = evaluate(dsprites, represent, suite, seed=0)
    assert fast == evaluate(dsprites, CachedEncoder(dsprites, plain, 500), suite, seed=0)
    assert 0 < represent.num_encoded <= 1500 + 50 * 64 + 1000
    assert represent.encode_seconds > 0


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    if CKPT:
        return pathlib.Path(CKPT)
    if not SLOW:
        pytest.skip("trains a model and scores the full suite twice (minutes): set VAELAB_SLOW_TESTS=1 or VAELAB_TEST_CKPT")
    cwd = tmp_path_factory.mktemp("bf16_train")
    result = run_vaelab(
        "train", "trainer.max_steps=1500", "metrics=none", "metrics@periodic_metrics=none", "logger=none",
        "information.num_samples=0", "images.num_images=0", cwd=cwd, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return next(cwd.glob("outputs/**/checkpoints/last.ckpt"))


def test_bf16_full_suite_within_tolerance_of_fp32(trained_checkpoint):
    from vaelab.checkpoint import load_checkpoint
    from vaelab.module import dataset_and_model_from_checkpoint
    from vaelab.system import native_bf16_cpu, tune_glibc_malloc

    if not native_bf16_cpu():
        pytest.skip("bfloat16 is emulated on this CPU (hundreds of times slower than fp32)")
    tune_glibc_malloc()  # as `vaelab eval` does: without it the encoder's buffers are re-faulted every batch
    dataset, model = dataset_and_model_from_checkpoint(load_checkpoint(trained_checkpoint))
    suite = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "metrics" / "full.yaml"))["suite"]
    scores = {
        precision: evaluate(dataset, encoder_representation(model, dataset, "cpu", precision=precision), suite, seed=0)
        for precision in ("fp32", "bf16")
    }
    for key, fp32 in scores["fp32"].items():
        bf16 = scores["bf16"][key]
        if key in BF16_RELATIVE:
            assert abs(bf16 - fp32) <= BF16_RELATIVE[key] * abs(fp32), f"{key}: bf16 {bf16:.5f} vs fp32 {fp32:.5f}"
        else:
            assert abs(bf16 - fp32) <= BF16_TOLERANCE, f"{key}: bf16 {bf16:.5f} vs fp32 {fp32:.5f}"


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    from vaelab.metrics import representation

    for native in (True, False):
        monkeypatch.setattr(representation, "native_bf16_cpu", lambda native=native: native)
        assert representation.resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
        assert representation.resolve_precision("auto", torch.device("cuda")) == "fp32"
        assert representation.resolve_precision("fp32", torch.device("cpu")) == "fp32"
