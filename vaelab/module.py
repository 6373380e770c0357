"""VAEModule: the LightningModule that trains one VAE with one objective."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch

from vaelab.checkpoint import load_checkpoint, plain
from vaelab.errors import TrainingDiverged, UserError, first_line
from vaelab.models.vae import VAE, VAEOutput
from vaelab.objectives import Objective

VAL_NOISE_SEED = 777  # validation uses the same noise in every run and at every evaluation


def step_noise(seed: int, step: int, like: torch.Tensor) -> torch.Tensor:
    """Standard-normal reparameterisation noise determined by (seed, step) alone.

    Like the data stream, the noise is indexed by the global step so that a resumed
    run continues exactly where the uninterrupted run would have been.
    """
    generator = torch.Generator(device=like.device)
    generator.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1))
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def gather_global_batch(out: VAEOutput) -> VAEOutput:
    """Under DDP: the forward pass of the step's global batch, on every rank, rank 0's slice first.

    Objectives that estimate something on the batch (KL_hat[q(z)||p(z)], TC_hat, DIP-VAE's
    covariance, FactorVAE's shuffle) then see the batch one process of n*B would, and compute
    the same loss on every rank. The gather is differentiable: its backward sums each rank's
    gradient for a slice back onto the rank that holds it, n times the slice's share of the
    loss's gradient, which DDP's average over the n ranks divides back, so n ranks x B
    images train exactly like one process with n*B (the objective's own parameters, which
    see the whole batch on every rank, get the full gradient on each and keep it). The
    decoded images stay local: no objective reads them.
    """
    from torch.distributed.nn.functional import all_gather

    gathered = {name: torch.cat(all_gather(getattr(out, name).contiguous()), dim=0)
                for name in ("mu", "logvar", "z", "reconstruction", "kl_conditional")}  # fmt: skip
    return VAEOutput(decoded=out.decoded, **gathered)


class VAEModule(pl.LightningModule):
    """Logs every objective term under ``train/…`` and ``val/…``. Its constants (``beta_effective``,
    ``kl_weight``, the knobs) are in the run config and metrics.json's "objective", not series."""

    def __init__(
        self,
        model: VAE,
        objective: Objective,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.Adam, lr=5e-4),
        seed: int = 0,
        config: dict[str, Any] | None = None,
        on_non_finite: str = "stop",
        model_inputs: dict[str, Any] | None = None,
        compile_step: bool = False,
        compile_mode: str = "default",
    ) -> None:
        """``model_inputs``: what the model was built from besides ``config.model`` (the dataset's
        ``image_shape`` and ``binary_data``), kept in checkpoints so that
        :meth:`load_from_checkpoint` rebuilds the model without the dataset.
        ``compile_step``: the model's training forward pass (encoder, sampling, decoder and the
        per-example reconstruction and KL terms; its backward with it) through ``torch.compile``
        with ``compile_mode`` (``trainer.compile``, vaelab/device.py)."""
        super().__init__()
        if on_non_finite not in ("stop", "skip"):
            raise UserError(f"on_non_finite={on_non_finite!r}: expected stop or skip")
        self.model = model
        self.objective = objective
        self.optimizer_factory = optimizer
        self.seed = seed
        # The resolved run config travels inside every checkpoint, so `vaelab eval ckpt=…`
        # can rebuild the model and dataset without the run directory.
        self.config = config or {}
        self.model_inputs = model_inputs
        # A NaN/inf loss or gradient either stops the run (the weights never take that update,
        # so they and the last checkpoint stay finite) or skips the step and counts it. The
        # decision is taken on the device (NonFiniteGuard): no step waits for the host.
        self.on_non_finite = on_non_finite
        self.skipped_steps = 0
        self.non_finite_guard: NonFiniteGuard | None = None  # made on the device at the first step
        self.progress_loss: float | None = None  # train/loss at the last logging step, for the progress bar
        self.compile_step = compile_step
        self.compile_mode = compile_mode
        self._compiled: dict[str, Callable] = {}  # made at the first training step that calls them
        self._step_terms: dict[str, torch.Tensor] = {}

    def forward(self, images: torch.Tensor):
        return self.model(images)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images = batch["images"]
        # Under DDP each rank holds one slice of the step's global batch (see TrainingStream):
        # it takes the same slice of the step's noise, so n ranks x B images train exactly
        # like one process with n*B.
        size, rank, world = images.shape[0], self.global_rank, self.trainer.world_size if self._trainer else 1
        noise = step_noise(self.seed, self.global_step, images.new_empty(size * world, self.model.latent_dim))
        out, decided = self._forward(images, noise[rank * size : (rank + 1) * size], batch.get("factors"))
        if world > 1:
            out = gather_global_batch(out)
        terms = self.objective(out, step=self.global_step) | decided
        self._step_terms = terms  # on_before_optimizer_step decides on them with the gradients
        if self._logger_writes_this_step():
            # "step" is Lightning's x-axis key: logging it replaces the "epoch" Lightning would
            # add (always 0 on the one endless epoch of the stream).
            self.log("step", float(self.global_step))
            distributed = world > 1  # logged figures are means over the global batch
            for name, value in terms.items():
                self.log(f"train/{name}", value, sync_dist=distributed)
            # The progress bar reads this host copy at every step: a logged prog_bar tensor would be
            # read back to the host every step by Lightning (a wait for the GPU each time).
            self.progress_loss = float(terms["loss"].detach())
        return terms["loss"]

    def _forward(
        self, images: torch.Tensor, noise: torch.Tensor, factors: torch.Tensor | None
    ) -> tuple[VAEOutput, dict[str, torch.Tensor]]:
        """The model's forward pass; for a weakly-supervised objective (``images``: B pairs as
        2B images) with the pairs' shared latents averaged before sampling, and what the
        objective decided about them (logged beside its terms)."""
        if not self.objective.trains_on_pairs:
            return self._model_call("forward")(images, noise), {}
        mu, logvar, decided = self.objective.pair_posteriors(*self._model_call("encode")(images), factors)
        return self._model_call("from_posterior")(images, mu, logvar, noise), decided

    def _model_call(self, name: str) -> Callable:
        """The model's method ``name``; compiled while training with ``compile_step`` (validation
        and evaluation run eagerly: another mode would be another graph to compile)."""
        if not (self.compile_step and self.model.training):
            return getattr(self.model, name)
        if name not in self._compiled:
            # dynamic=False: every training batch has one shape; a resumed run compiles anew.
            self._compiled[name] = torch.compile(getattr(self.model, name), mode=self.compile_mode, dynamic=False)
        return self._compiled[name]

    def _logger_writes_this_step(self) -> bool:
        """Whether Lightning writes this step's ``train/…`` values (every ``trainer.log_every_n_steps``).

        Lightning drops a step's values on the other steps, yet each ``self.log`` costs its
        Python time all the same, several calls a step (docs/performance.md, "Loop").
        """
        if not self._trainer:
            return True
        return (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The non-finite guard (docs/errors.md): the step's update is applied only if its loss and
        every gradient are finite (after a non-finite step under ``on_non_finite=stop``, no update
        is), decided on the device through the fused optimiser's ``found_inf``. An optimiser
        without it is checked on the host, as before, at the cost of a wait every step."""
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # under Lightning's wrapper
        named = [(name, p) for name, p in self.named_parameters() if p.grad is not None]
        if self.non_finite_guard is None:
            self.non_finite_guard = NonFiniteGuard(self.device, [name for name, _ in named])
        guard = self.non_finite_guard
        apply_update = guard.record_step(self.global_step, self._step_terms, [p.grad for _, p in named])
        self._step_terms = {}
        if takes_found_inf(optimizer):
            stopped = guard.first_step >= 0 if self.on_non_finite == "stop" else torch.zeros_like(apply_update)
            optimizer.found_inf = (~apply_update | stopped).float()  # 1.0: the fused kernel leaves all state as it is
        elif not bool(apply_update):  # host wait: this optimiser cannot skip an update on the device
            self.check_non_finite()
            optimizer.zero_grad(set_to_none=True)  # skip: the step then changes nothing

    def check_non_finite(self) -> None:
        """Raise :class:`TrainingDiverged` if a step was non-finite under ``on_non_finite=stop``;
        update :attr:`skipped_steps` under ``skip``. Waits for the device: called only where the
        run writes something (a logging step, a checkpoint, validation, an evaluation, the end)."""
        guard = self.non_finite_guard
        if guard is None:
            return
        count = int(guard.count)
        if self.on_non_finite == "skip":
            self.skipped_steps = count
        elif count:
            raise TrainingDiverged(
                f"non-finite value at step {int(guard.first_step)} ({guard.describe_first()}); stopped before the "
                "optimiser step, checkpoints/last.ckpt holds the last state saved (on_non_finite=skip skips such steps instead)"
            )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._logger_writes_this_step():
            self.check_non_finite()
            if self.on_non_finite == "skip":
                self.log("train/skipped_steps", float(self.skipped_steps))

    def on_validation_start(self) -> None:
        self.check_non_finite()

    def on_train_end(self) -> None:
        self.check_non_finite()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images, factors = batch[0], None
        if self.objective.trains_on_pairs:  # (P, 2, …) pairs: first observations, then second
            images, factors = (torch.cat([tensor[:, 0], tensor[:, 1]]) for tensor in batch)
        mu_shape = images.new_empty(images.shape[0], self.model.latent_dim)
        out, decided = self._forward(images, step_noise(VAL_NOISE_SEED, batch_idx, mu_shape), factors)
        for name, value in (self.objective(out, step=self.global_step) | decided).items():
            # sync_dist: under DDP each rank sees part of the validation set.
            self.log(f"val/{name}", value, batch_size=images.shape[0], prog_bar=name == "loss", sync_dist=True)
        # Validation after step N's update is logged at step N, beside that step's metrics/,
        # info/ and pictures (Lightning would log it at N-1, its count of batches before N).
        self.log("step", float(self.global_step), batch_size=images.shape[0], sync_dist=True)

    def encode_means(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior means, the representation the metrics score (``self.model.posterior``)."""
        return self.model.posterior(images)[0]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The objective's own trainable parts (FactorVAE's discriminator) step in the same optimiser,
        # in parameter groups with their own settings.
        return self.optimizer_factory([{"params": list(self.model.parameters())}, *self.objective.parameter_groups()])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_non_finite()  # a stopped run saves nothing after its non-finite step
        # Plain containers only: checkpoints are read back weights-only (vaelab/checkpoint.py).
        checkpoint["vaelab_config"] = plain(self.config)
        if self.model_inputs is not None:
            checkpoint[MODEL_INPUTS] = plain(self.model_inputs)

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: str | Path, map_location=None, trust_checkpoint: bool = False, **unused: Any
    ) -> "VAEModule":
        """The module saved in a vaelab checkpoint (``last.ckpt``), in eval mode, on ``map_location``
        (default: the CPU). Needs no Hydra context and no run directory: the model, the objective
        and their settings come from the checkpoint alone, e.g. in a notebook::

            module = VAEModule.load_from_checkpoint("outputs/…/checkpoints/last.ckpt")
            mu = module.encode_means(images)   # images: (N, C, H, W) floats in [0, 1]

        The checkpoint is read weights-only and may name only vaelab's own model, dataset and
        objective; ``trust_checkpoint=True`` lets it name other importable ones (your own
        objective from examples/): their code then runs, so only for checkpoints you trust.

        (Lightning's own version rebuilds from saved hyperparameters, which vaelab keeps in the
        checkpoint's ``vaelab_config`` instead.)"""
        import hydra.utils

        if unused:
            raise TypeError(f"VAEModule.load_from_checkpoint takes no {', '.join(unused)}: the checkpoint holds every setting")
        checkpoint = load_checkpoint(
            checkpoint_path, key="checkpoint_path", trust=trust_checkpoint, trust_option="trust_checkpoint=True"
        )
        config = checkpoint["vaelab_config"]
        module = cls(
            vae_from_checkpoint(checkpoint),
            hydra.utils.instantiate(config["objective"]),
            seed=config.get("seed", 0),
            config=config,
            on_non_finite=config.get("on_non_finite", "stop"),
            model_inputs=checkpoint.get(MODEL_INPUTS),
        )
        module.load_state_dict(checkpoint["state_dict"])  # the objective's own parameters too (FactorVAE)
        if map_location is not None:
            module.to(map_location)
        return module.eval()


MODEL_INPUTS = "vaelab_model_inputs"  # the checkpoint key of VAEModule.model_inputs


def takes_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` skips its update on the device when ``optimizer.found_inf`` is
    1.0, leaving the weights, moments and step counts as they were: torch's fused Adam, AdamW,
    SGD and Adagrad (the flag GradScaler sets); their other implementations refuse it."""
    fused_kinds = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad)
    return isinstance(optimizer, fused_kinds) and bool(optimizer.defaults.get("fused"))


class NonFiniteGuard:
    """The non-finite guard's record, on the training device: how many steps were non-finite,
    and the first one's step, terms and which gradients were finite (for the error line).
    Updated every step with device operations alone; read on the host only by
    :meth:`VAEModule.check_non_finite`."""

    def __init__(self, device: torch.device, parameter_names: list[str]) -> None:
        self.parameter_names = parameter_names
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.term_names: list[str] = []
        self.first_terms: torch.Tensor | None = None
        self.first_gradients_finite = torch.ones(len(parameter_names), dtype=torch.bool, device=device)

    def record_step(self, step: int, terms: dict[str, torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
        """Record step ``step``; returns a device bool: its update may be applied."""
        device = self.count.device
        names = list(terms)
        values = torch.stack([value.detach().float().reshape(()) for value in terms.values()]) if terms else torch.zeros(0, device=device)
        if names != self.term_names:
            self.term_names, self.first_terms = names, torch.zeros_like(values)
        finite = torch.isfinite(values[names.index("loss")]) if "loss" in names else torch.ones((), dtype=torch.bool, device=device)
        gradients_finite = torch.ones(0, dtype=torch.bool, device=device)
        if gradients:
            gradients_finite = torch.isfinite(torch.stack(torch._foreach_norm(gradients)))
            finite = finite & gradients_finite.all()
        first = ~finite & (self.first_step < 0)
        self.first_step = torch.where(first, torch.full_like(self.first_step, step), self.first_step)
        self.first_terms = torch.where(first, values, self.first_terms)
        if len(gradients_finite) == len(self.first_gradients_finite):
            self.first_gradients_finite = torch.where(first, gradients_finite, self.first_gradients_finite)
        self.count += (~finite).long()
        return finite

    def describe_first(self) -> str:
        """``train/loss=nan, …`` (the first non-finite step's non-finite terms), else the
        parameters whose gradients were not finite (three at most)."""
        values = self.first_terms.tolist() if self.first_terms is not None else []
        bad = [f"train/{name}={value}" for name, value in zip(self.term_names, values) if not np.isfinite(value)]
        if bad:
            return ", ".join(bad)
        finite = self.first_gradients_finite.tolist()
        names = [name for name, ok in zip(self.parameter_names, finite) if not ok]
        return ", ".join(f"gradient of {name}=nan" for name in names[:3])


def vae_from_checkpoint(checkpoint: dict[str, Any]) -> VAE:
    """The VAE of a checkpoint (:func:`vaelab.checkpoint.load_checkpoint`) with its weights, in
    eval mode: the one place a model is rebuilt from a checkpoint (``VAEModule.load_from_checkpoint``,
    :func:`dataset_and_model_from_checkpoint`). Its image shape and likelihood are the checkpoint's own record."""
    import hydra.utils

    inputs = checkpoint.get(MODEL_INPUTS)
    if inputs is None:
        raise UserError(f"the checkpoint has no {MODEL_INPUTS}: not one that `vaelab train` wrote")
    model = hydra.utils.instantiate(
        checkpoint["vaelab_config"]["model"], image_shape=tuple(inputs["image_shape"]), binary_data=inputs["binary_data"]
    )
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"checkpoint weights do not fit its model config: {first_line(error)}") from error
    return model.eval()


def dataset_and_model_from_checkpoint(checkpoint: dict[str, Any], dataset_path: str | None = None) -> tuple[Any, VAE]:
    """(dataset, model) of a checkpoint: the dataset rebuilt from its stored config, the model by
    :func:`vae_from_checkpoint` (``vaelab eval``, UDR, notebooks). ``dataset_path``: where the
    dataset file is now, if it moved since training."""
    import hydra.utils
    from omegaconf import OmegaConf

    config = OmegaConf.create(checkpoint["vaelab_config"])
    if dataset_path is not None:
        if "path" not in config.dataset:
            raise UserError(f"dataset_path={dataset_path}: the checkpoint's dataset is not read from a file")
        config.dataset.path = str(Path(dataset_path).resolve())
    return hydra.utils.instantiate(config.dataset), vae_from_checkpoint(checkpoint)
