"""What a run tells the person waiting for it: progress through every phase, and when it ends.

Training steps have Lightning's progress bar (callbacks.StepProgressBar) on a terminal.
This module covers the rest, on a terminal and off one (nohup, SLURM, a pipe):

- :class:`SuiteProgress`, a metric suite (the periodic and final ones, `vaelab eval`):
  on a terminal a bar over the suite's metrics, naming the one running and the images
  encoded so far; off one a line every ``every_s`` seconds while it runs (a metric such
  as BetaVAE can take a minute and reports nothing itself).
- :class:`Heartbeat`, any other evaluation during training (information, pictures):
  off a terminal, a line every ``every_s`` seconds while it lasts.
- The ETA of a whole training run (the steps left at the measured rate plus every
  evaluation still scheduled, each timed from its last run) is callbacks.RunProgress:
  beside the progress bar on a terminal, off one a line every ``every_s`` seconds with
  the step, the rate and that ETA.

Lines go through the ``vaelab`` logger, so they carry Hydra's timestamps and reach the
run's log file; at the default 30 s a log gains a few lines a minute at most.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("vaelab")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 12 min``: how long, to the precision a person reads."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def on_terminal() -> bool:
    return sys.stderr.isatty()


class Heartbeat:
    """A phase of a run that can take a while without a training step (an evaluation):
    off a terminal, a line every ``every_s`` seconds while it lasts (``every_s=None``:
    silent). A context manager; a background thread writes the lines."""

    def __init__(self, title: str, every_s: float | None = 30.0, terminal: bool = False) -> None:
        self.title = title
        self.every_s = every_s
        self.terminal = terminal
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self):
        self._started = time.monotonic()
        period = self.tick_period()
        if period is not None:
            self._ticker = threading.Thread(target=self._tick, args=(period,), name="vaelab-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def tick_period(self) -> float | None:
        return None if self.terminal else self.every_s

    def status(self) -> str:
        return f"running for {duration(self.elapsed)}"

    def tick(self) -> None:
        log.info("%s: %s", self.title, self.status())

    def _tick(self, period: float) -> None:
        while not self._stop.wait(period):
            self.tick()


class SuiteProgress(Heartbeat):
    """Progress through one metric suite, around :func:`vaelab.metrics.evaluate`: on a
    terminal a bar over the metrics naming the one running and the images encoded; off
    one the heartbeat's line with the same. Its caller's closing line gives
    :meth:`timings`.

    ``metric_started``/``metric_done`` are called by the suite; ``images_encoded``, when
    set, says how many images the representation has encoded so far
    (metrics.representation.CachedEncoder.num_encoded; a codes file encodes none).
    """

    def __init__(self, title: str, metrics: Sequence[str], every_s: float | None = 30.0, terminal: bool = False,
                 images_encoded: Callable[[], int] | None = None) -> None:  # fmt: skip
        super().__init__(title, every_s, terminal)
        self.metrics = list(metrics)
        self.images_encoded = images_encoded or (lambda: 0)
        self.done: dict[str, float] = {}  # metric -> seconds
        self.running: str | None = None
        self._metric_started = time.monotonic()
        self._bar = None
        self._redirect = None

    def __enter__(self) -> SuiteProgress:
        if self.terminal:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger(), log])  # log lines above the bar
            self._redirect.__enter__()
            self._bar = tqdm(total=len(self.metrics), desc=self.title, unit="metric", leave=False, dynamic_ncols=True)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self._bar is not None:
            self._bar.close()
            self._redirect.__exit__(*exc)

    def timings(self) -> str:
        """``mig 1 s, factor_vae 18 s, …``: each metric's time, for the suite's closing line."""
        return ", ".join(f"{name} {duration(seconds)}" for name, seconds in self.done.items())

    def tick_period(self) -> float | None:
        return 1.0 if self.terminal else self.every_s  # on a terminal: the bar's clock and image count

    def tick(self) -> None:
        if self.terminal:
            self._refresh()
        else:
            super().tick()

    def metric_started(self, name: str) -> None:
        with self._lock:
            self.running, self._metric_started = name, time.monotonic()
        self._refresh()

    def metric_done(self, name: str, seconds: float) -> None:
        with self._lock:
            self.done[name] = seconds
            self.running = None
        if self._bar is not None:
            self._bar.update(1)
        self._refresh()

    def status(self) -> str:
        """``3/10 done, beta_vae running for 42 s, 12,000 images encoded, 1 min 5 s elapsed``."""
        with self._lock:
            running = f", {self.running} running for {duration(time.monotonic() - self._metric_started)}" if self.running else ""
            return (f"{len(self.done)}/{len(self.metrics)} done{running}, {self.images_encoded():,} images encoded, "
                    f"{duration(self.elapsed)} elapsed")  # fmt: skip

    def _refresh(self) -> None:
        if self._bar is not None:
            with self._lock:
                running = self.running or ""
            self._bar.set_postfix_str(f"{running} {self.images_encoded():,} images".strip(), refresh=True)
