"""The `vaelab` command: `vaelab train|eval [overrides]`.

Each subcommand is its own ``@hydra.main`` (config_name train / eval), so Hydra's
flags (-m, --cfg, --help, --info, tab completion) work per subcommand. This module
imports only Hydra; torch and Lightning load after dispatch, inside the task.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from vaelab import CONFIG_DIR, config_source
from vaelab.errors import Refused, UserError, one_line, user_error_in

DIRNAME_LIMIT = 120  # characters of the overrides in a sweep job's directory name (filesystems allow 255)


def short_dirname(overrides: str) -> str:
    """A sweep job's directory name from its overrides, at most DIRNAME_LIMIT + 9 characters:
    the overrides, or their first characters plus a hash of all of them (still unique)."""
    if len(overrides) <= DIRNAME_LIMIT:
        return overrides
    import hashlib

    return f"{overrides[:DIRNAME_LIMIT]}+{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"


def pick(index: int, *values):
    """``${vaelab.pick:${level},2,6,10}``: the value at ``index`` (conf/baseline/: a knob's values by level)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(values):
        raise UserError(f"level={index!r}: expected an integer from 0 to {len(values) - 1}")
    return values[index]


OmegaConf.register_new_resolver("vaelab.dirname", short_dirname, replace=True)
OmegaConf.register_new_resolver("vaelab.pick", pick, replace=True)
config_source.install()  # the objectives' knob keys, and parts registered without a yaml

SUBCOMMANDS = {
    "train": "train a VAE with objective=betavae|infomax|betatcvae|factorvae|dipvae|annealedvae (a Hydra app: -m sweeps, --cfg job, --help)",
    "eval": "score a checkpoint or a codes file: vaelab eval ckpt=PATH | codes=FILE.npz",
    "compare": "table, compare.csv and plots over sweep/run directories: vaelab compare DIR [DIR ...]",
}

USAGE = "usage: vaelab {train,eval} [hydra overrides and flags] | vaelab compare DIR [DIR ...]\n\n" + "\n".join(
    f"  {name:<7}{text}" for name, text in SUBCOMMANDS.items()
) + "\n\nexamples:\n  vaelab train objective=infomax lambda=3\n  vaelab train -m beta=1,2,4,8\n  vaelab train --help   (the config groups and their options)\n" + (
    '  eval "$(vaelab -sc install=bash)"   (tab completion; zsh: install=zsh)\n'
)


def _report_user_errors(task):
    """Run ``task``; an error becomes one line on stderr and an exit code (no traceback):
    2 for the user's errors (bad config values, files, paths), 1 for runtime failures.

    HYDRA_FULL_ERROR=1 shows the traceback. In a multirun the error is re-raised so
    Hydra records the failed job and the sweep goes on.
    """

    def wrapped(cfg: DictConfig):
        _quiet_third_party_logging()
        try:
            return task(cfg)
        except Exception as error:
            if _show_tracebacks():
                raise
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            code = _report(error)
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            from vaelab.rundir import remove_unused

            if HydraConfig.initialized():  # refused before it wrote anything: no run left behind
                remove_unused(HydraConfig.get().runtime.output_dir)
            sys.exit(code)

    return wrapped


# Set by main(): whether the user asked for tracebacks (HYDRA_FULL_ERROR=1). main() then
# sets HYDRA_FULL_ERROR=1 itself so that Hydra raises instead of printing its several-line
# report; jobs in other processes (launchers, DDP workers) read the user's choice here.
SHOW_TRACEBACKS_ENV = "VAELAB_SHOW_TRACEBACKS"


def _show_tracebacks() -> bool:
    return os.environ.get(SHOW_TRACEBACKS_ENV, os.environ.get("HYDRA_FULL_ERROR", "0")) == "1"


def _message_and_exit_code(error: BaseException) -> tuple[str, int]:
    """(message, exit code) for an error that reached the top: one line, never a traceback.

    Config composition and override errors are the user's (exit 2); Hydra and OmegaConf
    spread them over several lines with a search path the user never asked about.
    Anything else is a runtime failure (exit 1).
    """
    from hydra.errors import HydraException, InstantiationException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    user_error = user_error_in(error)
    if user_error is not None:
        return str(user_error), user_error.exit_code
    text = str(error)
    remote = _remote_failure(text)
    if remote is not None:
        return remote
    misplaced = _misplaced_logger_setting(text) or _unknown_key(text)
    if misplaced is not None:
        return misplaced, 2
    if isinstance(error, MissingConfigException) and error.options:
        return _unknown_option(text.splitlines()[0], error.options), 2
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        # A config value a class rejected, e.g. trainer.max_steps=abc reaching Lightning.
        cause = error.__cause__
        target = text.split("'")[1] if text.count("'") >= 2 else "a config target"
        return f"{target}: {one_line(cause)}", 2
    parts = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Config search path"):
            break
        if line and not line.startswith(("full_key:", "object_type=", "reference_type=", "See https")):
            parts.append(line.rstrip("."))
    message = "; ".join(parts) or type(error).__name__
    if isinstance(error, OmegaConfBaseException) and getattr(error, "full_key", None):
        message = f"{error.full_key}: {message}"
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        return message, 2
    return f"{type(error).__name__}: {message} (HYDRA_FULL_ERROR=1 shows the traceback)", 1


def _misplaced_logger_setting(text: str) -> str | None:
    """``logger.project=x``: each logger's settings are under its own name (conf/logger/<name>.yaml
    puts them under ``logger.<name>``, so that ``logger=[wandb,csv]`` selects both); say where."""
    import re

    match = re.match(r"Could not override 'logger\.(\w+)'", text)
    if match is None:
        return None
    key = match.group(1)
    owners = [path.stem for path in sorted((Path(CONFIG_DIR) / "logger").glob("*.yaml"))
              if key in (OmegaConf.load(path).get(path.stem) or {})]  # fmt: skip
    if not owners:
        return None
    where = " or ".join(f"logger.{owner}.{key}=…" for owner in owners)
    return f"logger.{key}: each logger's settings are under its name: {where}"


def _unknown_key(text: str) -> str | None:
    """Hydra's "Could not override 'KEY'" (a key the config does not have), said as what it is:

    - another objective's knob (``objective=betavae lambda=3``: the config holds the chosen
      objective's knobs alone): whose knob it is;
    - otherwise a mistyped key (``objectiv=infomax``, ``trainer.max_stpes=3``): the closest key
      the config has there, from the config composed without it (Hydra would advise
      ``+objectiv=``, which adds a key nothing reads)."""
    import re

    match = re.search(r"Could not override '([\w.]+)'.*?use \+\1=(.*)", text, flags=re.DOTALL)
    if match is None:
        return None
    key, value = match.group(1), match.group(2).splitlines()[0].strip()
    from vaelab.validation import closest_key, foreign_knob_message

    chosen = config_source.composed.get("objective")
    foreign = foreign_knob_message(key, value, chosen) if chosen is not None and "." not in key else None
    if foreign is not None or invocation.get("command") is None:
        return foreign
    close = closest_key(invocation["command"], invocation["overrides"], key, value)
    advice = f"did you mean {close}={value}?" if close else f"`vaelab {invocation['command']} --cfg job` lists the keys"
    return f"{key}={value}: no such key; {advice}"


def _unknown_option(first_line: str, options: list[str]) -> str:
    """``objective=infomx``: Hydra's line, the closest option and the options there are."""
    import re

    from vaelab.validation import did_you_mean

    match = re.search(r"Could not find '([\w/]+)/(\w+)'", first_line)
    close = did_you_mean(match.group(2), options) if match else None
    advice = f"; did you mean {match.group(1).replace('/', '.')}={close}?" if close else ""
    return f"{first_line}{advice} (available: {', '.join(options)})"


# The command being run and its overrides (set by main()), for the advice on a key Hydra refused.
invocation: dict[str, object] = {}


def _report(error: BaseException) -> int:
    """Print ``error`` as one ``vaelab: error:`` line on stderr; return its exit code."""
    message, code = _message_and_exit_code(error)
    print(f"vaelab: error: {message}", file=sys.stderr)
    return code


def _remote_failure(text: str) -> tuple[str, int] | None:
    """A job that failed in another process (submitit launchers) arrives as its traceback in
    text: report its final exception line, and where the job's log is."""
    import re

    if "Traceback (most recent call last)" not in text:
        return None
    exception = None
    for line in text.splitlines():
        match = re.match(r"^((?:\w+\.)*\w+): (.+)$", line)
        if match and not line.startswith(("Traceback", "Job ")):
            exception = match
    if exception is None:
        return None
    name, message = exception.groups()
    logs = re.findall(r"^\s*- (\S+\.err)\s*$", text, flags=re.MULTILINE)
    where = f" (job log: {logs[0]})" if logs else ""
    if name.endswith("UserError"):
        return message + where, 2
    return f"{name.rsplit('.', 1)[-1]}: {message}{where}", 1


def _run_reporting_errors(command) -> None:
    """Run ``command`` (a Hydra app, or compare); an error that reaches here is one line, its
    traceback only with HYDRA_FULL_ERROR=1."""
    os.environ.setdefault(SHOW_TRACEBACKS_ENV, "1" if os.environ.get("HYDRA_FULL_ERROR") == "1" else "0")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own errors reach here whole, to be said in one line
    try:
        command()
    except Refused as refused:  # by a Hydra callback, before the run started
        if _show_tracebacks():
            raise refused.error from None
        sys.exit(_report(refused.error))
    except Exception as error:
        if _show_tracebacks():
            raise
        sys.exit(_report(error))


def _quiet_third_party_logging() -> None:
    # Lightning installs its own console handler; Hydra's root handler already prints
    # (and writes the run's log file), so route Lightning's records there once.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    os.environ.setdefault("WANDB_SILENT", "true")
    # A log file on a full disk: the run's own error says so once, not a traceback per record.
    logging.raiseExceptions = False
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()  # an advertisement, not information
    )
    import warnings

    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning vs torch 2.13 internals
    warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")  # on_non_finite=skip


@_report_user_errors
def _train(cfg: DictConfig):
    """The Hydra task of `vaelab train`: the final value of ``optimized_metric`` (None when
    unset) is what a sweeper that optimises (conf/hparams_search/) receives for the job."""
    from vaelab.distributed import is_worker
    from vaelab.search import optimized_value
    from vaelab.train import train

    final = train(cfg)
    return None if is_worker() else optimized_value(cfg, final)  # DDP workers log nothing: rank 0 reports


@_report_user_errors
def _eval(cfg: DictConfig):
    from vaelab.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(cfg)


train_main = hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")(_train)
eval_main = hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base="1.3")(_eval)
MAINS = {"train": train_main, "eval": eval_main}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    from vaelab.distributed import worker_argv

    argv = worker_argv() or argv  # a DDP worker runs its rank 0's job, whatever Lightning passed
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    if argv[0] in ("-V", "--version"):
        from vaelab import __version__

        print(f"vaelab {__version__}")
        return
    from vaelab import completion

    if completion.is_completion_request(argv):  # before dispatch: one script for all subcommands
        try:
            sys.exit(completion.main(argv, MAINS))
        except UserError as error:
            sys.exit(_report(error))
    command = argv[0]
    if command == "compare":  # not a Hydra app: it reads finished runs
        from vaelab.compare import main as compare_main

        _run_reporting_errors(lambda: sys.exit(compare_main(argv[1:])))
    if command not in MAINS:
        sys.exit(_report(UserError(f"unknown command {command!r}; expected one of: {', '.join(SUBCOMMANDS)}")))
    # Hydra reads sys.argv: drop the subcommand (hydra.job.name says which one ran).
    sys.argv = [sys.argv[0], *argv[1:]]
    # The Optuna sweeper imports alembic, which announces each of its plugins at INFO level.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    invocation.update(command=command, overrides=[arg for arg in argv[1:] if not arg.startswith("-")])
    try:
        _run_reporting_errors(MAINS[command])
    finally:
        invocation.clear()  # a program calling main() again starts afresh


if __name__ == "__main__":
    main()
