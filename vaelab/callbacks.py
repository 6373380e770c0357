"""Lightning callbacks: metrics and information quantities during and after training; the progress bar."""

from __future__ import annotations

import copy
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, TQDMProgressBar

from vaelab.errors import INTERRUPTED_EXIT_CODES
from vaelab.loggers import run_loggers
from vaelab.progress import Heartbeat, SuiteProgress, duration


log = logging.getLogger("vaelab")


def log_to_loggers(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    """Send figures computed outside training_step to every logger (W&B and metrics.json)."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


class PeriodicEvaluation(pl.Callback, ABC):
    """Calls :meth:`evaluate` every ``every_n_steps`` and once at the end of training.

    Only on rank 0, never twice at one step, and not at all when :attr:`enabled` is false.
    ``at_end=False``: not at the end of training; ``skip_last_step`` (set by a subclass): nor
    at the last step when it falls on the schedule (another evaluation owns it).
    Subclasses implement :meth:`evaluate`; the step is ``trainer.global_step``.
    """

    skip_last_step = False
    title = "evaluation"  # how progress lines name it

    def __init__(self, every_n_steps: int | None, at_end: bool = True) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.at_end = at_end
        self.last_evaluated_step: int | None = None
        self.seconds_per_evaluation: float | None = None  # the last one's: the run's ETA counts on it
        self.total_seconds = 0.0
        self.progress: Heartbeat | None = None  # while evaluate() runs

    @property
    def enabled(self) -> bool:
        return True

    @abstractmethod
    def evaluate(self, trainer: pl.Trainer, pl_module) -> None:
        """Compute and log this callback's figures for the model as it is now."""

    def heartbeat(self, trainer: pl.Trainer) -> Heartbeat:
        """What reports this evaluation while it runs (vaelab/progress.py), as the run's
        RunProgress says: a line every ``every_s`` seconds off a terminal."""
        return Heartbeat(f"step {trainer.global_step}: {self.title}", *RunProgress.settings(trainer))

    def _evaluate_once(self, trainer: pl.Trainer, pl_module) -> None:
        # A run stopped by a non-finite step evaluates nothing after it (every rank checks: the
        # check is the same on each, so they stop together).
        if hasattr(pl_module, "check_non_finite"):
            pl_module.check_non_finite()
        if self.enabled and trainer.is_global_zero and trainer.global_step != self.last_evaluated_step:
            started = time.perf_counter()
            with self.heartbeat(trainer) as self.progress:
                self.evaluate(trainer, pl_module)
            self.last_evaluated_step = trainer.global_step
            self.seconds_per_evaluation = time.perf_counter() - started
            self.total_seconds += self.seconds_per_evaluation

    def upcoming_evaluations(self, step: int, max_steps: int) -> int:
        """How many times this callback will still evaluate after ``step`` (the end of
        training counts while it has not evaluated there): for the run's ETA."""
        if not self.enabled:
            return 0
        steps = set()
        if self.every_n_steps:
            last = max_steps - 1 if self.skip_last_step else max_steps
            steps.update(range((step // self.every_n_steps + 1) * self.every_n_steps, last + 1, self.every_n_steps))
        steps = {later for later in steps if later > step}
        if self.at_end and self.last_evaluated_step != max_steps:
            steps.add(max_steps)
        return len(steps)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.skip_last_step and step >= trainer.max_steps:
            return
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self._evaluate_once(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.at_end:
            self._evaluate_once(trainer, pl_module)


class DisentanglementEvaluation(PeriodicEvaluation):
    """Runs a metric suite every ``every_n_steps`` and/or once at the end of training.

    Training uses two: ``periodic_metrics`` (default: the fast preset) during training
    and ``metrics`` (default: the full suite) at the end; both log ``metrics/…``.

    The representation is the encoder mean. Within one evaluation each needed image
    is encoded once (:class:`~vaelab.metrics.representation.CachedEncoder`); the
    metrics' random streams depend only on ``seed``, so successive evaluations
    score the model on the same points.
    """

    def __init__(
        self,
        suite: Mapping[str, Mapping[str, Any]],
        every_n_steps: int | None = None,
        seed: int = 0,
        encode_batch_size: int = 1024,
        encode_precision: str = "auto",
        at_end: bool = True,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.suite = {name: dict(hparams or {}) for name, hparams in suite.items()}
        self.title = "final metrics" if at_end and not every_n_steps else "metrics"
        self.seed = seed
        self.encode_batch_size = encode_batch_size
        self.encode_precision = encode_precision

    @property
    def enabled(self) -> bool:
        return bool(self.suite)

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        # A suite run during training leaves the last step to the one run at the end (the
        # `metrics` preset: by default the full suite, which scores that step anyway).
        self.skip_last_step = not self.at_end and any(
            isinstance(other, DisentanglementEvaluation) and other.at_end and other.enabled
            for other in trainer.callbacks
        )

    def heartbeat(self, trainer: pl.Trainer) -> SuiteProgress:
        return SuiteProgress(f"step {trainer.global_step}: {self.title}", list(self.suite), *RunProgress.settings(trainer))

    def evaluate(self, trainer: pl.Trainer, pl_module) -> None:
        from vaelab.metrics import evaluate, headline_keys
        from vaelab.metrics._common import NonFiniteCodes
        from vaelab.metrics.representation import encoder_representation
        from vaelab.tables import save_and_log_tables

        dataset = trainer.datamodule.dataset
        started = time.perf_counter()
        represent = encoder_representation(
            pl_module.model, dataset, pl_module.device, batch_size=self.encode_batch_size, precision=self.encode_precision
        )
        self.progress.images_encoded = lambda: represent.num_encoded
        tables = {}
        try:
            scores = evaluate(dataset, represent, self.suite, seed=self.seed, progress=self.progress, tables=tables)
        except NonFiniteCodes:
            log.warning("step %d: the encoder gives NaN/inf codes; metrics skipped", trainer.global_step)
            return
        seconds = time.perf_counter() - started
        step = trainer.global_step
        log_to_loggers(trainer, {**scores, "metrics/seconds": seconds}, step)
        if trainer.is_global_zero:  # DDP: rank 0 writes the run's files
            save_and_log_tables(tables, Path(trainer.default_root_dir), step, trainer.loggers)
        headlines = headline_keys(self.suite)
        headline = ", ".join(f"{k.removeprefix('metrics/')}={v:.3f}" for k, v in scores.items() if k in headlines)
        timings = f": {self.progress.timings()}" if len(self.suite) > 1 else ""
        log.info("step %d: %s (%.1f s%s; %s images encoded)", step, headline, seconds, timings, f"{represent.num_encoded:,}")


class InformationEvaluation(PeriodicEvaluation):
    """The information decomposition of docs/objectives.md section 3, logged under ``info/…``.

    On a fixed evaluation set of ``num_samples`` images (the same at every evaluation):
    kl_conditional, kl_marginal, mutual_info (at most log N), total_correlation,
    dimwise_kl, the checks identity_gap and tc_gap, and kl_dim_<j> per latent dim.
    """

    title = "information quantities"

    def __init__(self, num_samples: int = 10000, every_n_steps: int | None = None, seed: int = 0) -> None:
        super().__init__(every_n_steps)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            from vaelab.errors import UserError

            raise UserError(f"information.num_samples={num_samples!r}: expected an integer >= 0 (0: off)")
        self.num_samples = num_samples
        self.seed = seed

    @property
    def enabled(self) -> bool:
        return self.num_samples > 0

    def evaluate(self, trainer: pl.Trainer, pl_module) -> None:
        from vaelab.information import information_decomposition

        started = time.perf_counter()
        dataset = trainer.datamodule.dataset
        factors = dataset.sample_factors(self.num_samples, np.random.default_rng([self.seed, 1]))
        # Rendered, encoded and estimated on the module's device; the noise comes from a CPU
        # generator, so every device draws the same z.
        encodings = [
            pl_module.model.posterior(dataset.images_on(factors[i : i + 1024], pl_module.device))
            for i in range(0, len(factors), 1024)
        ]
        mu = torch.cat([m for m, _ in encodings])
        logvar = torch.cat([v for _, v in encodings])
        if mu.device.type == "mps":  # no float64 there
            mu, logvar = mu.cpu(), logvar.cpu()
        info = information_decomposition(mu, logvar, generator=torch.Generator().manual_seed(self.seed))
        figures = {f"info/{key}": value for key, value in info.items()}
        figures["info/seconds"] = time.perf_counter() - started
        log_to_loggers(trainer, figures, trainer.global_step)


class ImageLogging(PeriodicEvaluation):
    """Reconstructions and latent traversals every ``every_n_steps`` and at the end.

    Saved as ``<run dir>/images/{reconstructions,traversals}_step<N>.png`` and
    ``traversal_animation_step<N>.gif`` and logged to W&B as images. The inputs are
    fixed validation images, so pictures compare across
    steps and runs. Traversal rows are ordered by each dim's KL on those images.
    """

    title = "pictures"

    def __init__(self, run_dir, every_n_steps: int | None = None, num_images: int = 8, steps: int = 9,
                 extent: float = 2.5) -> None:  # fmt: skip
        super().__init__(every_n_steps)
        self.directory = Path(run_dir) / "images"
        self.num_images = num_images
        self.steps = steps
        self.extent = extent

    @property
    def enabled(self) -> bool:
        return self.num_images > 0

    def evaluate(self, trainer: pl.Trainer, pl_module) -> None:
        from vaelab.images import model_pictures, save_and_log

        images = trainer.datamodule.val_images[: self.num_images]
        images = images.to(device=pl_module.device, dtype=pl_module.dtype)
        pictures = model_pictures(pl_module.model, images, self.steps, self.extent)
        save_and_log(pictures, self.directory, trainer.global_step, trainer.loggers)


class PeriodicCheckpoint(Checkpoint):
    """``last.ckpt`` every ``every_n_steps`` steps and at the end of training.

    The state is taken where Lightning expects it (the end of the step's batch) but the
    file is written when the next step begins: by then that step's train/ figures, its
    validation and its evaluations have all reached the loggers. A run killed right
    after the file appears and resumed from it therefore logs exactly what the
    uninterrupted run logs, with no hole (Lightning skips the validation it believes
    already done on resume; its figures are already in metrics.json).

    Each file written goes to the loggers that keep checkpoints (W&B's model artifact,
    as ``logger.wandb.log_model`` says): Lightning only tells them of its own ModelCheckpoint's.
    """

    def __init__(self, path, every_n_steps: int) -> None:
        super().__init__()
        self.path = path
        self.every_n_steps = every_n_steps
        self._pending: dict | None = None
        self._saved_at: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        self._saved_at = trainer.global_step  # a resumed run starts from a saved step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step != self._saved_at:
            # A copy: nothing changes the weights before the write, but nothing need be trusted to.
            self._pending = copy.deepcopy(trainer._checkpoint_connector.dump_checkpoint(weights_only=False))
            self._saved_at = trainer.global_step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._write_pending(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._write_pending(trainer, final=True)
        if trainer.global_step != self._saved_at:
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_at = trainer.global_step
        self._announce(trainer, trainer.global_step, final=True)

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        self._pending = None  # the figures of that step may be incomplete: keep the previous file

    def _write_pending(self, trainer: pl.Trainer, final: bool = False) -> None:
        if self._pending is not None:
            trainer.strategy.save_checkpoint(self._pending, self.path)  # atomic: AtomicCheckpointIO
            trainer.strategy.barrier("PeriodicCheckpoint")
            step, self._pending = self._pending["global_step"], None
            if not final:  # the final file is announced once, by on_train_end
                self._announce(trainer, step, final=False)

    def _announce(self, trainer: pl.Trainer, step: int, final: bool) -> None:
        for logger in run_loggers(trainer.loggers):
            logger.log_checkpoint(self.path, step, final=final)


class InterruptCheckpoint(pl.Callback):
    """Ctrl-C (SIGINT) or SIGTERM: write ``last.ckpt`` before Lightning stops the run.

    Lightning finishes the current step on SIGTERM and aborts it on Ctrl-C; either way the
    weights and optimiser are those of the last completed step, and the training stream is
    indexed by step, so ``resume=auto`` continues exactly. ``train`` then exits with 130
    (SIGINT) or 143 (SIGTERM), the shell's codes for those signals: the run is ``interrupted``
    (:class:`~vaelab.errors.RunStatus`).
    """

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path
        self.interrupted_by: str | None = None

    @property
    def exit_code(self) -> int | None:
        return INTERRUPTED_EXIT_CODES.get(self.interrupted_by)

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted_by = "SIGINT"
        elif type(exception).__name__ == "SIGTERMException":
            self.interrupted_by = "SIGTERM"
        else:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        log.warning(
            "%s at step %d: saved %s; continue with resume=auto", self.interrupted_by, trainer.global_step, self.path
        )


class StepProgressBar(TQDMProgressBar):
    """Training is one endless epoch over the stream: count steps against ``max_steps``."""

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else super().total_train_batches

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.initial = trainer.global_step  # a resumed run starts part-way
        self.train_progress_bar.set_description("train")

    def get_metrics(self, trainer: pl.Trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: noise on the bar
        if getattr(pl_module, "progress_loss", None) is not None:  # updated at logging steps (VAEModule)
            metrics["loss"] = f"{pl_module.progress_loss:.4g}"
        run = RunProgress.of(trainer)  # the bar's own ETA counts steps only
        if run is not None and run.eta is not None:
            metrics["run ETA"] = run.eta
        return metrics


class RunProgress(pl.Callback):
    """The run's progress settings and its ETA: the steps left at the measured rate plus
    the evaluations still scheduled, each timed from its last run. On a terminal
    (``terminal=True``: the step bar is shown) the bar shows the ETA (``run ETA``); off
    one a line every ``every_s`` seconds gives the step, the rate and the ETA, so a SLURM
    or nohup log shows where a run is. Evaluations read ``every_s`` and ``terminal`` here
    for their own progress (PeriodicEvaluation.heartbeat).

    The rate leaves out the time spent in evaluations, which the ETA counts on its own.
    """

    def __init__(self, every_s: float = 30.0, terminal: bool = False) -> None:
        super().__init__()
        self.every_s = every_s
        self.terminal = terminal
        self.eta: str | None = None
        self._since: tuple[float, int, float] | None = None  # (clock, step, evaluation seconds) at the first step
        self._last_line = 0.0

    @staticmethod
    def of(trainer: pl.Trainer) -> RunProgress | None:
        return next((callback for callback in trainer.callbacks if isinstance(callback, RunProgress)), None)

    @staticmethod
    def settings(trainer: pl.Trainer) -> tuple[float | None, bool]:
        """(every_s, terminal) for an evaluation's own progress; (None, False), silent, in a
        trainer without a RunProgress (a program's own callbacks outside `vaelab train`)."""
        run = RunProgress.of(trainer)
        return (run.every_s, run.terminal) if run is not None else (None, False)

    @staticmethod
    def evaluations(trainer: pl.Trainer) -> list[PeriodicEvaluation]:
        return [callback for callback in trainer.callbacks if isinstance(callback, PeriodicEvaluation)]

    def remaining(self, trainer: pl.Trainer, seconds_per_step: float) -> str:
        """The ETA as text: ``3 min 20 s``, or ``… + final metrics`` while an evaluation still
        to come has never run (the final suite, until the end) and so has no time yet."""
        step, max_steps = trainer.global_step, trainer.max_steps
        seconds, untimed = max(0, max_steps - step) * seconds_per_step, False
        for evaluation in self.evaluations(trainer):
            count = evaluation.upcoming_evaluations(step, max_steps)
            if count and evaluation.seconds_per_evaluation is None:
                untimed = True
            elif count:
                seconds += count * evaluation.seconds_per_evaluation
        return duration(seconds) + (" + final metrics" if untimed else "")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        now, step = time.monotonic(), trainer.global_step
        evaluating = sum(evaluation.total_seconds for evaluation in self.evaluations(trainer))
        if self._since is None:  # the first step pays for warm-up: measure from its end
            self._since, self._last_line = (now, step, evaluating), now
            return
        since, since_step, since_evaluating = self._since
        training_seconds = now - since - (evaluating - since_evaluating)
        if step <= since_step or training_seconds <= 0:
            return
        seconds_per_step = training_seconds / (step - since_step)
        self.eta = self.remaining(trainer, seconds_per_step)
        if not self.terminal and now - self._last_line >= self.every_s:
            log.info("step %d/%d (%.0f%%), %.1f steps/s, ETA %s", step, trainer.max_steps,
                     100 * step / trainer.max_steps, 1 / seconds_per_step, self.eta)  # fmt: skip
            self._last_line = now
