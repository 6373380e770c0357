"""Runs under damage: two runs in one directory, a full disk, damaged files, too little memory.

Each case is one line on stderr and a non-zero exit, and nothing already written is lost.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import call_vaelab

# Seconds, not minutes: a small model, no evaluations, one thread (no contention with
# whatever else the machine runs).
TINY = (
    "model=mlp", "model.hidden=[32]", "trainer.max_steps=5", "trainer.val_check_interval=5",
    "checkpoint.every_n_steps=5", "data.batch_size=16", "data.val_size=64", "metrics=none",
    "metrics@periodic_metrics=none", "periodic_metrics.every_n_steps=null", "information.num_samples=0",
    "images.num_images=0", "logger=none", "num_threads=1",
)  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vaelab: error:")]


def stderr_tail(result) -> str:
    return result.stderr[-3000:]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def hold_lock(directory: Path) -> int:
    """Lock ``directory`` as a running vaelab process does (flock on .vaelab.lock naming the pid)."""
    descriptor = os.open(directory / ".vaelab.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def fake_run_dir(run_dir: Path) -> None:
    """The files a run has written part-way (their content does not matter here)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights at step 20")
    (run_dir / "metrics.json").write_text('{"status": "running", "final": {}, "history": []}')
    (run_dir / "train.log").write_text("[vaelab][INFO] - training ...\n")


def test_a_second_run_in_a_directory_in_use_is_refused_and_leaves_it_untouched(tmp_path, monkeypatch, capfd):
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    run_dir = tmp_path / "run"
    fake_run_dir(run_dir)
    descriptor = hold_lock(run_dir)  # the first run, still going
    try:
        before = snapshot(run_dir)
        for args in ((), ("resume=auto",)):
            second = call_vaelab("train", *TINY, *args, f"hydra.run.dir={run_dir}", **cli)
            assert second.returncode == 2
            assert error_lines(second.stderr) == [
                f"vaelab: error: {run_dir} is in use by another vaelab run (pid {os.getpid()}); "
                "give this run its own hydra.run.dir"
            ], second.stderr
            assert "Traceback" not in second.stderr
            assert snapshot(run_dir) == before  # not one byte of the running run's files changed
        # resume=PATH continues in the checkpoint's directory: refused there too.
        elsewhere = call_vaelab(
            "train", *TINY, f"resume={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'other'}", **cli
        )  # fmt: skip
        assert elsewhere.returncode == 2
        (line,) = error_lines(elsewhere.stderr)
        assert f"{run_dir} is in use by another vaelab run (pid {os.getpid()}); wait for it to end before resume=" in line
        assert snapshot(run_dir) == before
    finally:
        os.close(descriptor)


def test_a_sweep_into_the_directory_of_a_running_sweep_is_refused(tmp_path, monkeypatch, capfd):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    descriptor = hold_lock(sweep_dir)
    try:
        second = call_vaelab(
            "train", "-m", *TINY, "beta=1,2", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd
        )  # fmt: skip
    finally:
        os.close(descriptor)
    assert second.returncode == 2
    assert error_lines(second.stderr) == [
        f"vaelab: error: {sweep_dir} is in use by another vaelab sweep (pid {os.getpid()}); "
        "give this sweep its own hydra.sweep.dir"
    ], second.stderr
    assert [path.name for path in sweep_dir.iterdir()] == [".vaelab.lock"]  # no job started


def test_the_lock_of_a_killed_run_does_not_block_the_next(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r}); "
         f"from vaelab.rundir import acquire; acquire({str(run_dir)!r}); print('held', flush=True); "
         "import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run_dir / ".vaelab.lock").read_text().split() == [str(holder.pid)]  # the dead run's lock file stays
    run = call_vaelab("train", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def no_space_on(path: Path):
    """A ``write`` for write_atomically that writes part of a file and then hits a full disk."""

    def write(file):
        file.write(b"the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return write


class FillingFile:
    """A file opened for appending whose next write, once ``full()`` says so, writes part of
    its bytes and then hits a full disk (as the kernel does: a short write, then ENOSPC)."""

    def __init__(self, file, full) -> None:
        self.file, self.full = file, full

    def write(self, data: bytes) -> int:
        if self.full():
            self.file.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", self.file.name)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


@pytest.mark.parametrize("victim", ["checkpoint", "metrics.json", "metrics_history.jsonl", "picture"])
def test_a_full_disk_stops_the_run_resumable_with_one_line(tmp_path, monkeypatch, capfd, victim):
    """The disk fills up while the run saves its second checkpoint, or rewrites metrics.json or
    appends to its history after its first checkpoint, or saves its pictures: the files written
    before stay whole, the run says which file and where to resume from, and resume=auto
    finishes it."""
    import torch

    from vaelab import checkpoint, images, runfiles

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    if victim == "metrics_history.jsonl":
        real_open = open
        monkeypatch.setattr(
            runfiles, "open", lambda *args, **kwargs: FillingFile(real_open(*args, **kwargs), last.is_file), raising=False
        )  # fmt: skip
    else:
        module = {"checkpoint": checkpoint, "metrics.json": runfiles, "picture": images}[victim]
        real_write = module.write_atomically

        def filling_disk(path, write, **kwargs):
            path = Path(path)
            full = {
                "checkpoint": path == last and last.is_file(),
                "metrics.json": path.name == "metrics.json" and last.is_file(),
                "picture": path.suffix == ".png",
            }[victim]
            return real_write(path, no_space_on(path) if full else write, **kwargs)

        monkeypatch.setattr(module, "write_atomically", filling_disk)
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    run = ("train", *TINY, "trainer.max_steps=10", "images.num_images=2", f"hydra.run.dir={run_dir}")
    stopped = call_vaelab(*run, **cli)
    assert stopped.returncode == 75, stderr_tail(stopped)
    failed_file = {"checkpoint": last, "picture": run_dir / "images"}.get(victim, run_dir / victim)
    assert error_lines(stopped.stderr) == [
        f"vaelab: error: no space left on device while writing {failed_file}"
        + ("/reconstructions_step10.png" if victim == "picture" else "")
        + f"; the last complete checkpoint is {last} (step 5): free space and run again with resume=auto"
    ], stderr_tail(stopped)
    assert "Traceback" not in stopped.stderr
    assert torch.load(last, weights_only=False)["global_step"] == 5  # the previous checkpoint, whole
    metrics = json.loads((run_dir / "metrics.json").read_text())  # the last complete version
    # Resumable: "interrupted", or "running" when the disk did not even let it say so.
    assert metrics["status"] == ("running" if victim == "metrics.json" else "interrupted")
    # The history holds whole lines only (a partial one is cut off again): every line reads.
    history = (run_dir / "metrics_history.jsonl").read_bytes()
    assert history.endswith(b"\n") and all(json.loads(line) for line in history.splitlines())
    assert not list(run_dir.rglob("*.tmp"))  # no partial file is left taking space
    if victim == "picture":
        assert not list((run_dir / "images").glob("*_step10.png"))
        return

    if victim == "metrics_history.jsonl":  # space freed
        monkeypatch.delattr(runfiles, "open")
    else:
        monkeypatch.setattr(module, "write_atomically", real_write)
    resumed = call_vaelab(*run, "resume=auto", **cli)
    assert resumed.returncode == 0, stderr_tail(resumed)
    assert torch.load(last, weights_only=False)["global_step"] == 10
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "success"


def test_a_damaged_history_or_checkpoint_is_one_line_and_left_as_it_is(tmp_path, monkeypatch, capfd):
    """Resuming (resume=auto) or scoring (eval ckpt=) a run whose metrics_history.jsonl lost
    bytes inside a line (a bad copy) or whose checkpoint was cut at half its size: one line
    naming the file, exit 2, nothing rewritten (the user may still restore the file). A cut
    metrics.json is no loss: it is the history's summary, and the resumed run writes it anew."""
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    first = call_vaelab("train", *TINY, f"hydra.run.dir={run_dir}", **cli)
    assert first.returncode == 0, stderr_tail(first)
    resume = ("train", *TINY, "trainer.max_steps=8", "resume=auto", f"hydra.run.dir={run_dir}")

    history = run_dir / "metrics_history.jsonl"
    whole = history.read_bytes()
    first_line, rest = whole.split(b"\n", 1)
    history.write_bytes(first_line[: len(first_line) // 2] + b"\n" + rest)
    kept = ("checkpoints/last.ckpt", "metrics.json", "metrics_history.jsonl")  # Hydra rewrites .hydra/ and the log
    before = {name: data for name, data in snapshot(run_dir).items() if name in kept}
    damaged_history = call_vaelab(*resume, **cli)
    assert damaged_history.returncode == 2
    (line,) = error_lines(damaged_history.stderr)
    assert line.startswith(f"vaelab: error: {history} is damaged (line 1: ") and line.endswith(
        "); restore it, or move it aside to resume without the figures logged so far"
    ), line
    assert "Traceback" not in damaged_history.stderr
    assert {name: data for name, data in snapshot(run_dir).items() if name in kept} == before
    history.write_bytes(whole)

    whole_checkpoint = last.read_bytes()
    last.write_bytes(whole_checkpoint[: len(whole_checkpoint) // 2])
    cut = last.read_bytes()
    elsewhere = ("train", *TINY, f"resume={last}", f"hydra.run.dir={tmp_path / 'elsewhere'}")
    for key, args in (("resume", resume), ("resume", elsewhere), ("ckpt", ("eval", f"ckpt={last}", "logger=none"))):
        result = call_vaelab(*args, **cli)
        assert result.returncode == 2, stderr_tail(result)
        (line,) = error_lines(result.stderr)
        assert line.startswith(f"vaelab: error: {key}={last}: not a readable checkpoint, or truncated ("), line
        assert "Traceback" not in result.stderr
        assert last.read_bytes() == cut and history.read_bytes() == whole

    last.write_bytes(whole_checkpoint)
    metrics = run_dir / "metrics.json"
    metrics.write_bytes(metrics.read_bytes()[:20])
    resumed = call_vaelab(*resume, **cli)
    assert resumed.returncode == 0, stderr_tail(resumed)
    assert json.loads(metrics.read_text())["status"] == "success"


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_allocating(tmp_path, monkeypatch, capfd):
    from vaelab import rundir, system

    monkeypatch.setattr(system, "memory_bytes", lambda: 23 * 2**30)
    # Refused by the config check before Hydra makes a run directory, not made and then cleared.
    monkeypatch.setattr(rundir, "remove_unused", lambda directory: False)
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    for override, line in (
        ("data.batch_size=100000000",
         "data.batch_size=100000000: one batch of 64x64x1 float32 images needs 1.5 TiB; this machine has 23 GiB"),
        ("data.val_size=10000000",
         "data.val_size=10000000: the validation set of 64x64x1 float32 images needs 153 GiB; this machine has 23 GiB"),
    ):  # fmt: skip
        result = call_vaelab("train", *TINY, "trainer.accelerator=cpu", override, **cli)
        assert result.returncode == 2, stderr_tail(result)
        assert error_lines(result.stderr) == [f"vaelab: error: {line}"] and "Traceback" not in result.stderr
        assert not (tmp_path / "outputs").exists()
    # The real size of the dataset's images (3 channels here), against the real machine.
    monkeypatch.undo()
    result = call_vaelab("train", *TINY, "dataset=color_dsprites", "data.batch_size=10000000000", **cli)
    assert result.returncode == 2, stderr_tail(result)
    (line,) = error_lines(result.stderr)
    assert line.startswith("vaelab: error: data.batch_size=10000000000: one batch of 64x64x3 float32 images needs 447 TiB;")


@pytest.mark.parametrize(
    "overrides, line",
    [
        (("model.latent_dim=100000", "metrics=mig"),
         "model.latent_dim=100000: the metrics' code table (a float64 code for each of the dataset's 737,280 images) "
         "needs 549 GiB; this machine has 23 GiB"),
        (("model.latent_dim=100000", "information.num_samples=10000"),
         "model.latent_dim=100000: the information estimate on information.num_samples=10000 encodings needs 39 GiB; "
         "this machine has 23 GiB"),
        (("model.latent_dim=20000000",),
         "model.latent_dim=20000000: the model (1,960,266,304 parameters, with their gradients and Adam's two moments) "
         "needs 29 GiB; this machine has 23 GiB"),
    ],
)
def test_a_model_or_evaluation_that_cannot_fit_in_memory_is_refused_before_training(tmp_path, monkeypatch, capfd, overrides, line):
    """Sizes that follow from the config (the model's parameters, counted without allocating them;
    the metrics' codes of every image of the grid; the information estimate's encodings) are
    checked like the batch: one line, in seconds, nothing trained, instead of a kill by the kernel."""
    from vaelab import system

    monkeypatch.setattr(system, "memory_bytes", lambda: 23 * 2**30)
    result = call_vaelab("train", *TINY, "trainer.accelerator=cpu", *overrides, **{"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd})
    assert result.returncode == 2, stderr_tail(result)
    assert error_lines(result.stderr) == [f"vaelab: error: {line}"] and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))


def test_the_parts_are_checked_once_before_a_run_and_in_each_job_of_a_sweep(tmp_path, monkeypatch, capfd):
    """A single run's parts are built once by the check (before its directory exists) and once to
    train; a sweep's jobs each check their own (their swept values are theirs): a job whose batch
    cannot fit is refused in one line, and the others run."""
    from vaelab import system
    from vaelab.data.dsprites import ProceduralDSprites

    built = []
    build = ProceduralDSprites.__init__

    def counted(self, *args, **kwargs):
        built.append(1)
        build(self, *args, **kwargs)

    monkeypatch.setattr(ProceduralDSprites, "__init__", counted)
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab("train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}", **cli)
    assert result.returncode == 0, stderr_tail(result)
    assert len(built) == 2  # the check's, the run's

    monkeypatch.setattr(system, "memory_bytes", lambda: 23 * 2**30)
    sweep = call_vaelab("train", "-m", *TINY, "trainer.max_steps=2", "data.batch_size=100000000,16",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}", **cli)  # fmt: skip
    assert sweep.returncode == 2, stderr_tail(sweep)
    assert set(error_lines(sweep.stderr)) == {  # when the job fails, and again when the sweep ends
        "vaelab: error: data.batch_size=100000000: one batch of 64x64x1 float32 images needs 1.5 TiB; this machine has 23 GiB"
    }
    (trained,) = (tmp_path / "sweep").glob("*/checkpoints")  # the other job's
    assert "data.batch_size=16" in trained.parent.name


def test_more_threads_than_cores_are_clamped_with_one_warning(tmp_path, monkeypatch, capfd):
    """num_threads=999 on a machine of a few cores: 999 OpenMP threads would wait on each other at
    every step (3 steps took over 300 s on 2 cores); the run uses the cores it has, and says so."""
    from vaelab.system import available_cores

    cores = available_cores()
    run = tmp_path / "run"
    result = call_vaelab("train", *TINY, "trainer.max_steps=2", "num_threads=999", f"hydra.run.dir={run}", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, stderr_tail(result)
    warnings = [line for line in result.stderr.splitlines() if "num_threads=999" in line]
    assert len(warnings) == 1 and warnings[0].endswith(f"num_threads=999: this process may use {cores} cores; using {cores} threads")
    assert json.loads((run / "metrics.json").read_text())["status"] == "success"


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_run_directory_that_cannot_be_written_is_a_one_line_error(tmp_path, monkeypatch, capfd, command):
    import torch

    from tests.test_security import checkpoint_dict

    run = "/proc/vaelab-run"  # cannot be created, even by root
    torch.save(checkpoint_dict(), tmp_path / "x.ckpt")  # a readable checkpoint: the checks pass, and the directory is next
    result = call_vaelab(command, f"hydra.run.dir={run}", "ckpt=x.ckpt" if command == "eval" else "logger=none", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2, stderr_tail(result)
    assert error_lines(result.stderr) == [
        f"vaelab: error: {run}: cannot write the run directory (No such file or directory); give this run a writable hydra.run.dir"
    ]
    assert result.stderr.count("\n") == 1


def test_on_a_gpu_the_batch_must_fit_in_the_smaller_of_its_memory_and_the_ram(monkeypatch):
    """Training on a GPU: the batch is rendered in RAM and then copied to the GPU, so the
    smaller of the two is what it must fit in, and the message says which one that was."""
    from types import SimpleNamespace

    import torch

    from vaelab import system
    from vaelab.device import resolve_device
    from vaelab.errors import UserError

    monkeypatch.setattr(system, "memory_bytes", lambda: 64 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=8 * 2**30, name="Small GPU")
    )
    gpu = resolve_device("cuda")
    image = (3, 64, 64)  # 48 KiB a float32 image
    system.check_fits_in_memory("data.batch_size", 100_000, image, "one batch", gpu)  # 4.6 GiB: fits
    with pytest.raises(UserError) as error:
        system.check_fits_in_memory("data.batch_size", 200_000, image, "one batch", resolve_device("auto"))
    assert str(error.value) == (
        "data.batch_size=200000: one batch of 64x64x3 float32 images needs 9.2 GiB; the GPU (Small GPU) has 8.0 GiB"
    )
    # On the CPU the GPU's size does not matter; the RAM's does.
    system.check_fits_in_memory("data.batch_size", 200_000, image, "one batch", "cpu")
    # A GPU larger than the RAM: the RAM is the limit.
    monkeypatch.setattr(system, "memory_bytes", lambda: 4 * 2**30)
    with pytest.raises(UserError, match="needs 4.6 GiB; this machine has 4.0 GiB$"):
        system.check_fits_in_memory("data.batch_size", 100_000, image, "one batch", gpu)
