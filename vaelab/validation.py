"""One pass over a composed config, before anything is built or written.

``vaelab train`` and ``vaelab eval`` check here what their config alone can tell: the step
counts, the objective's knobs, the keys that set its weight, keys added with ``+`` that
nothing would read, the metric suites, the time-to-disentangle thresholds, the optimised
metric, the files named. :class:`ValidationCallback` (first in ``hydra.callbacks``) runs the
pass when a run or sweep starts, before Hydra creates the run directory and before torch is
imported, so a mistyped command costs a fraction of a second and leaves nothing behind. Each
job of a sweep, and ``train()`` called from a program, runs it itself (:func:`check_job`).

Then, for a run (:func:`check_parts`), what only the parts can tell: the device named exists,
the optimiser takes its arguments, the dataset file reads, the objective builds with its
data (pairs for a weakly-supervised one), and the run fits in memory at all (a batch, the
validation set, the model with Adam's moments counted on torch's meta device, the metrics'
code table). That stage imports torch, so it runs only once the config passed; it too runs
before Hydra creates the run directory, or in each job of a sweep. A checkpoint named
(``resume=``, ``eval ckpt=``) is read here as it will be, weights only, and refused if its
config names parts vaelab does not ship (a resumed run's directory still in use is said
first); what needs its contents built (a resume matching its run, eval's stored settings) is
checked where they are.

At module level only the standard library, Hydra and vaelab's torch-free modules: the
second stage imports what it builds inside its functions.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vaelab.errors import Refused, UserError, check_int, check_real
from vaelab.knobs import SHARED_AXES, Knob, knobs_of

# Nodes whose keys are names the user chooses (a metric, a callback, a logger): a key added
# there is read by whatever checks that node's entries (a metric suite: vaelab.metrics.check_suite).
NAMED_ENTRIES = ("time_to_disentangle", "metrics.suite", "periodic_metrics.suite", "callbacks", "logger")


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` if one is close (difflib's ratio >= 0.75: a letter or two
    off, not a word that merely shares some), else None."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.75)
    return close[0] if close else None


def closest_key(command: str, overrides: Sequence[str], key: str, value: str) -> str | None:
    """For ``key=value``, a key the config of ``command`` lacks: the closest key it has at the same
    place (``objective`` for ``objectiv``, ``trainer.max_steps`` for ``trainer.max_stpes``), from
    the config composed without that override; at the top, config groups count too."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vaelab import CONFIG_DIR

    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(command, overrides=others, return_hydra_config=True)
    except Exception:  # another override is wrong too: no advice rather than a wrong one
        return None
    finally:
        GlobalHydra.instance().clear()
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return None
    candidates = [str(k) for k in node if k != "hydra"]
    if not parent:
        candidates += list(cfg.hydra.runtime.choices)  # the groups: objective, dataset, ...
    close = did_you_mean(leaf, candidates)
    return None if close is None else f"{parent}.{close}" if parent else close


def foreign_knob_message(key: str, value: str, chosen: str) -> str | None:
    """The one line for ``key=value`` where ``key`` is a knob of some registered objective but not
    of ``chosen``; None when no objective has a knob ``key`` (vaelab's own are looked up
    without importing them)."""
    from vaelab.registry import OBJECTIVES

    users = sorted(name for name in OBJECTIVES.names() if key in {knob.name for knob in knobs_of(name)})
    if not users or chosen in users:
        return None
    own = [knob.name for knob in knobs_of(chosen)]
    return (
        f"{key}={value} is not used by objective={chosen}, whose knob{'s are' if len(own) > 1 else ' is'} "
        f"{', '.join(own)}; drop {key}=... or choose an objective that uses it ({', '.join(users)})"
    )


def weight_setting(cfg: DictConfig, knobs: Sequence[Knob]) -> str | None:
    """The shared axis (``beta_effective`` or ``kl_weight``) that sets the objective's weight, if one
    does; refused when it is not > 0, or when two keys set the weight (an axis and a knob, or both
    axes)."""
    axes = [axis for axis in SHARED_AXES if cfg.get(axis) is not None]
    setters = axes + [knob.name for knob in knobs if cfg.get(knob.name) is not None]
    if axes and len(setters) > 1:
        given = " and ".join(f"{key}={cfg.get(key)}" for key in setters)
        raise UserError(f"{given} {'both' if len(setters) == 2 else 'all'} set the objective's weight; set one of them")
    if not axes:
        return None
    check_real(axes[0], cfg.get(axes[0]), above=0.0)
    return axes[0]


def check_knobs(cfg: DictConfig, objective: str) -> None:
    """The chosen objective's knobs: each in its range (or unset), at most one key setting its weight."""
    knobs = knobs_of(objective)
    for knob in knobs:
        knob.check(cfg.get(knob.name))
    weight_setting(cfg, knobs)


def check_schedule(cfg: DictConfig) -> None:
    """The step counts a run is scheduled by: integers in range, or one line naming the key."""
    check_int("seed", cfg.seed, minimum=0)
    check_int("trainer.max_steps", cfg.trainer.max_steps, minimum=1)
    check_int("trainer.val_check_interval", cfg.trainer.val_check_interval, minimum=1)
    check_int("trainer.log_every_n_steps", cfg.trainer.log_every_n_steps, minimum=1)
    check_int("checkpoint.every_n_steps", cfg.checkpoint.every_n_steps, minimum=1)
    for group in ("periodic_metrics", "information", "images"):
        check_int(f"{group}.every_n_steps", cfg[group].every_n_steps, minimum=1, optional=True)
    check_int("data.batch_size", cfg.data.batch_size, minimum=1)
    check_int("data.val_size", cfg.data.val_size, minimum=1)
    check_real("progress.every_s", cfg.progress.every_s, above=0.0)
    if cfg.get("num_threads", "auto") not in ("auto", None):
        check_int("num_threads", cfg.num_threads, minimum=1)


def check_metric_suites(cfg: DictConfig, *, periodic: bool = True) -> None:
    """The final suite, and the periodic one if it runs: metric names, hyperparameter names and
    the values a metric can check without data."""
    from vaelab import metrics

    suites = [cfg.metrics.suite]
    if periodic and cfg.periodic_metrics.get("every_n_steps") is not None:
        suites.append(cfg.periodic_metrics.suite)
    for suite in suites:
        if suite:
            metrics.check_suite(OmegaConf.to_container(suite, resolve=True))


def added_keys(overrides: Iterable[str], groups: Collection[str] = ()) -> dict[str, str]:
    """The keys a command line adds with a single ``+`` (``+data.x=1``), by key: its value as typed.
    A config group appended (``+baseline=factorvae``, ``+hydra/launcher=…``, one of ``groups``,
    the run's chosen groups) and ``++`` (add or override: the user vouches for it) are not keys
    that nothing may read."""
    added = {}
    for override in _parsed(overrides):
        key = override.key_or_group
        # a swept one (-m +baseline=a,b) is checked by each job, with its own value
        if override.is_add() and not override.is_sweep_override() and override.package is None and "/" not in key and key not in groups:
            added[key] = override.input_line.split("=", 1)[1]
    return added


def _parsed(overrides: Iterable[str]) -> list:
    """The command line's overrides as Hydra parses them (none if one does not parse: Hydra
    reports that itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001
        return []


def chosen_groups(cfg: DictConfig) -> set[str]:
    """The config groups of the run (Hydra's ``runtime.choices``): from the config's own
    ``hydra`` node (a Hydra callback's config) or Hydra's (inside a job); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if "hydra" in cfg:
        return set(cfg.hydra.runtime.choices)
    return set(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else set()


def _takes(target: str, argument: str) -> bool:
    """Whether the callable ``target`` (a ``_target_``) accepts the keyword ``argument``."""
    import hydra.utils

    try:
        parameters = inspect.signature(hydra.utils.get_object(target)).parameters.values()
    except Exception:  # a target that cannot be looked at: its own build reports it
        return True
    return any(p.kind is p.VAR_KEYWORD or (p.name == argument and p.kind is not p.VAR_POSITIONAL) for p in parameters)


def check_added_keys(cfg: DictConfig, overrides: Iterable[str], objective: str | None) -> None:
    """Refuse ``+key=value`` where nothing would read ``key``: at the top level (whose keys are all
    there already), or in a settings node (``data``, ``images``, …) that lacks it; a node built
    from a ``_target_`` reads what its target accepts, and a node of named entries
    (:data:`NAMED_ENTRIES`) checks its own."""
    for key, value in added_keys(overrides, chosen_groups(cfg)).items():
        parent, _, leaf = key.rpartition(".")
        if parent.split(".")[0] == "hydra" or parent in NAMED_ENTRIES or parent.rpartition(".")[0] in NAMED_ENTRIES:
            continue
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig):
            continue  # under a list or a value: Hydra has refused it already
        if "_target_" in node:
            if _takes(str(node._target_), leaf):
                continue
            reads = f"{node._target_} takes no argument {leaf}"
        else:
            if objective is not None and not parent:
                message = foreign_knob_message(leaf, value, objective)
                if message is not None:
                    raise UserError(message)
            reads = f"nothing reads {key}"
        siblings = [k for k in node if k != leaf and not str(k).startswith("_")]
        close = did_you_mean(leaf, siblings)
        prefix = f"{parent}." if parent else ""
        advice = f"; did you mean {prefix}{close}={value}?" if close else ""
        raise UserError(f"+{key}={value}: {reads}{advice}")


def check_train(cfg: DictConfig, overrides: Iterable[str] = (), objective: str | None = None) -> None:
    """Everything ``vaelab train``'s config alone can tell is wrong (module docstring).
    ``overrides``: the command line's (for keys added with ``+``); ``objective``: the registered
    name of the chosen objective (whose knobs the config holds), when known."""
    from vaelab.search import check_optimized_metric
    from vaelab.time_to_disentangle import CONFIG_KEY, check_thresholds

    check_added_keys(cfg, overrides, objective)
    check_schedule(cfg)
    if objective is not None:
        check_knobs(cfg, objective)
    thresholds = cfg.get(CONFIG_KEY)
    check_thresholds(OmegaConf.to_container(thresholds, resolve=True) if isinstance(thresholds, DictConfig) else thresholds)
    resume = cfg.get("resume")
    if resume not in (None, "auto") and not Path(str(resume)).is_file():
        raise UserError(f"resume={resume}: no such file (resume=auto continues this run directory)")
    check_optimized_metric(cfg)  # a score the final suite never computes would cost a whole run first
    check_metric_suites(cfg)  # likewise a metric name or setting that cannot run (imports the metrics)


def swept_keys(overrides: Iterable[str]) -> set[str]:
    """The keys a multirun's command line sweeps (``ckpt=a.ckpt,b.ckpt``, ``seed=range(0,5)``):
    a sweep's shared config holds their defaults, each job its own value."""
    return {override.key_or_group for override in _parsed(overrides) if override.is_sweep_override()}


def check_eval(cfg: DictConfig, overrides: Iterable[str] = (), swept: set[str] = frozenset()) -> None:
    """Everything ``vaelab eval``'s config alone can tell is wrong: one source of codes, which
    exists, and a suite that can run (``swept``: keys each job of a sweep sets, not this config)."""
    check_added_keys(cfg, overrides, None)
    given = [key for key in ("ckpt", "artifact", "codes") if cfg.get(key) is not None or key in swept]
    if len(given) != 1:
        raise UserError(
            "give exactly one of ckpt=PATH (a vaelab checkpoint), artifact=NAME:ALIAS (one logged to W&B) or codes=FILE.npz"
        )
    for key in ("ckpt", "codes"):
        path = cfg.get(key)
        if path is not None and not Path(str(path)).expanduser().is_file():
            raise UserError(f"{key}={path}: no such file")
    check_metric_suites(cfg, periodic=False)
    check_real("progress.every_s", cfg.progress.every_s, above=0.0)


def check(cfg: DictConfig, command: str, overrides: Iterable[str] = (), swept: set[str] = frozenset()) -> None:
    """The pass for ``command`` (``train`` or ``eval``, Hydra's job name) on ``cfg``; ``swept``: keys
    a sweep sets job by job (the pass on a sweep's shared config)."""
    from vaelab import config_source

    if command == "eval":
        check_eval(cfg, overrides, swept)
    else:
        check_train(cfg, overrides, config_source.composed.get("objective"))


def check_optimizer(cfg: DictConfig) -> None:
    """``cfg.optimizer``'s factory tried once on a dummy parameter, so that a value it rejects (a
    negative eps, an unknown argument) is one line naming the optimiser, not a traceback from
    inside ``trainer.fit``; ``optimizer.lr`` must be a number > 0."""
    import hydra.utils
    import torch

    from vaelab.errors import first_line

    if "lr" in cfg.optimizer:
        check_real("optimizer.lr", cfg.optimizer.lr, above=0.0)
    factory = hydra.utils.instantiate(cfg.optimizer)
    try:
        factory([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as error:
        target = cfg.optimizer.get("_target_", "optimizer")
        raise UserError(f"optimizer ({target}): {first_line(error)}") from None


def check_run_fits(cfg: DictConfig, dataset, objective) -> None:
    """What the run will hold must fit in memory at all: a training batch and the validation set
    (rendered whole), the model with its gradients and Adam's two moments (counted on the meta
    device: no memory), the metrics' code table over the dataset's grid and the information
    estimates' encodings. Only what clearly cannot fit is refused (activations and temporaries
    are not counted)."""
    import hydra.utils
    import numpy as np
    import torch

    from vaelab.device import training_device
    from vaelab.information import evaluation_set_bytes
    from vaelab.metrics.representation import code_table_bytes
    from vaelab.system import check_bytes_fit, check_fits_in_memory

    device = training_device(cfg.trainer)
    batch_size, val_size = cfg.data.batch_size, cfg.data.val_size
    pairs = 2 if objective.trains_on_pairs else 1  # batch_size counts pairs then
    check_fits_in_memory("data.batch_size", batch_size * pairs, dataset.image_shape, "one batch", device)
    check_fits_in_memory("data.val_size", val_size, dataset.image_shape, "the validation set", device)
    with torch.device("meta"):
        model = hydra.utils.instantiate(cfg.model, image_shape=tuple(dataset.image_shape), binary_data=dataset.binary)
    parameters = sum(p.numel() for p in (*model.parameters(), *objective.parameters()))
    dims = model.latent_dim
    setting = f"model.latent_dim={dims}"
    what = f"the model ({parameters:,} parameters, with their gradients and Adam's two moments)"
    check_bytes_fit(setting, what, 16 * parameters, device)
    if cfg.metrics.suite or (cfg.periodic_metrics.suite and cfg.periodic_metrics.every_n_steps is not None):
        grid = int(np.prod(dataset.factor_sizes, dtype=np.int64))
        what = f"the metrics' code table (a float64 code for each of the dataset's {grid:,} images)"
        check_bytes_fit(setting, what, code_table_bytes(grid, dims), "cpu")
    samples = cfg.information.num_samples
    if isinstance(samples, int) and samples > 0:
        what = f"the information estimate on information.num_samples={samples} encodings"
        check_bytes_fit(setting, what, evaluation_set_bytes(samples, dims), "cpu")


def check_parts(cfg: DictConfig, command: str) -> None:
    """The second stage (module docstring), on a config that passed :func:`check`: for ``train``,
    the ``resume=`` checkpoint read, the parts built as the run will build them (the dataset,
    the objective) or counted without memory (the model), nothing trained or written; for
    ``eval``, the device and the ``ckpt=`` checkpoint read."""
    import hydra.utils

    from vaelab import objectives, rundir
    from vaelab.checkpoint import load_checkpoint, resume_trust, run_dir_of
    from vaelab.data.pairs import pair_sampling
    from vaelab.device import resolve_compile, resolve_device, training_device

    # A checkpoint named is read as it will be (weights only, the parts its config may name).
    # One fetched from W&B (eval artifact=) is checked when it has been, as it is read.
    if command == "eval":
        resolve_device(cfg.device)
        if cfg.get("ckpt") is not None:
            load_checkpoint(cfg.ckpt, trust=bool(cfg.get("trust_checkpoint", False)))
        return
    if cfg.get("resume") not in (None, "auto"):  # auto: this run's own, read under its lock
        resume_from = Path(str(cfg.resume))
        # A run still writing there is what to say first (train takes the lock itself).
        rundir.check_free(run_dir_of(resume_from), hint=rundir.lock_hint(resume_from))
        load_checkpoint(resume_from, key="resume", **resume_trust(cfg))
    device = training_device(cfg.trainer)  # the accelerator exists; cuda:N with one device
    resolve_compile(cfg.trainer.get("compile", "auto"), device, cfg.trainer.get("compile_mode", "default"))
    check_optimizer(cfg)
    dataset = hydra.utils.instantiate(cfg.dataset)
    objective = objectives.build(cfg, dataset_size=len(dataset))
    pair_sampling(cfg.data.get("pairs"), dataset.factor_sizes, objective)
    check_run_fits(cfg, dataset, objective)


def check_job(cfg: DictConfig, command: str) -> None:
    """Both stages inside a job (``cfg`` without its ``hydra`` node), with the command line's
    overrides where Hydra ran it: a sweep's job, or ``train()``/eval called from a program. A
    single run's config was checked by :class:`ValidationCallback` already, and is not built
    again (a dataset that loads its pixels into memory would load them once more)."""
    from hydra.core.hydra_config import HydraConfig

    if _checked_by_callback():
        return
    overrides = OmegaConf.to_container(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    check(cfg, command, overrides)
    check_parts(cfg, command)


def _checked_by_callback() -> bool:
    """Whether this job is a single run (not a sweep's job) of a Hydra app whose callbacks hold
    :class:`ValidationCallback`, which checked its config before it started."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return False
    target = f"{ValidationCallback.__module__}.{ValidationCallback.__qualname__}"
    return any(str(node.get("_target_")) == target for node in (HydraConfig.get().callbacks or {}).values())


class ValidationCallback(Callback):
    """Hydra callback, first in ``hydra.callbacks`` (conf/train.yaml, conf/eval.yaml): the pass on
    a run's config, or on a sweep's shared config, before Hydra creates a directory. Hydra turns
    a callback's Exception into a warning, so a refusal leaves as :class:`~vaelab.errors.Refused`,
    which the CLI reports as it reports any UserError."""

    def _check(self, config: DictConfig, sweep: bool = False) -> None:
        from vaelab.rundir import launched_as_worker

        if launched_as_worker():  # rank 0 checked the same config
            return
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        command = str(config.hydra.job.name)
        try:
            check(config, command, overrides, swept_keys(overrides) if sweep else set())
            if not sweep:  # a sweep's shared config is no job's: each job builds its own parts
                check_parts(config, command)
        except Exception as error:  # a UserError, or a value OmegaConf cannot resolve
            raise Refused(error) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The sweep's parameters (beta=1,2,4) are not in this config: each job checks its own.
        self._check(config, sweep=True)
