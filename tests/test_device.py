"""Device names, resolved in one place (vaelab/device.py) for training and evaluation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.conftest import call_vaelab
from vaelab import device
from vaelab.errors import UserError


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA GPUs of compute capability 8.0, as torch.cuda would report it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=80 * 2**30, name="GPU"))


def test_names_resolve_to_the_devices_they_say(two_gpus):
    assert device.resolve_device("auto") == torch.device("cuda", 0)
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert device.resolve_device("cuda") == torch.device("cuda", 0)
    assert device.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert device.resolve_device("gpu") == torch.device("cuda", 0)  # Lightning's name
    assert device.lightning_placement({"accelerator": "cuda:1", "devices": 1}) == ("cuda", [1])
    assert device.lightning_placement({"accelerator": "gpu", "devices": 2}) == ("cuda", 2)
    assert device.lightning_placement({"accelerator": "auto", "devices": 1}) == ("auto", 1)
    assert device.training_device({"accelerator": "cuda:1", "devices": 1}) == torch.device("cuda", 1)
    assert device.training_device({"accelerator": "cuda", "devices": [1, 0]}) == torch.device("cuda", 1)
    with pytest.raises(UserError, match="^trainer.accelerator=cuda:0 names one GPU, trainer.devices=2 asks for more"):
        device.lightning_placement({"accelerator": "cuda:0", "devices": 2})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tpu", "device='tpu': expected one of auto, cpu, cuda, cuda:N, mps"),
        ("cuda:x", "device='cuda:x': expected one of auto, cpu, cuda, cuda:N, mps"),
        ("cuda:2", "device=cuda:2: this machine has 2 CUDA GPUs (cuda:0 to cuda:1)"),
    ],
)
def test_a_name_that_is_no_device_here_is_one_line(two_gpus, name, message):
    with pytest.raises(UserError) as error:
        device.resolve_device(name)
    assert str(error.value) == message


def test_a_gpu_this_machine_lacks_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^device=cuda:0: torch sees no CUDA GPU here"):
        device.resolve_device("cuda:0")
    monkeypatch.setattr(device, "_mps_available", lambda: False)
    assert device.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^device=mps: this machine has no MPS device"):
        device.resolve_device("mps")


@pytest.mark.parametrize(
    ("bf16_supported", "capability", "expected"),
    [(True, (8, 0), "bf16-mixed"), (True, (9, 0), "bf16-mixed"), (True, (7, 5), "32-true"), (False, (8, 6), "32-true")],
)
def test_auto_precision_is_bf16_only_on_a_gpu_that_computes_it_natively(two_gpus, monkeypatch, bf16_supported, capability, expected):
    """Turing (7.5) runs bfloat16 only emulated, whatever torch.cuda.is_bf16_supported() says."""
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return bf16_supported

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(device, "native_bf16_cpu", lambda: False)  # the GPU decides, not the CPU
    assert device.resolve_training_precision("auto", device.resolve_device("cuda")) == expected
    assert calls == [False]  # emulation never counts
    assert device.resolve_training_precision("32-true", device.resolve_device("cuda")) == "32-true"


def test_bad_device_names_through_the_cli_are_one_line(tmp_path, monkeypatch, capfd):
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    codes = tmp_path / "codes.npz"
    codes.write_bytes(b"")  # a file: the config passes its checks, and the device name is next
    cases = [
        (("train", "trainer.accelerator=cuda:one"), "vaelab: error: trainer.accelerator='cuda:one': expected one of auto, cpu, cuda, cuda:N, mps"),
        (("eval", f"codes={codes}", "device=gpu0"), "vaelab: error: device='gpu0': expected one of auto, cpu, cuda, cuda:N, mps"),
        (("train", "trainer.compile=maybe"), "vaelab: error: trainer.compile='maybe': expected auto, true or false"),
    ]
    if not torch.cuda.is_available():
        cases.append((("train", "trainer.accelerator=cuda:1"), "vaelab: error: trainer.accelerator=cuda:1: torch sees no CUDA GPU here"))
    for args, message in cases:
        result = call_vaelab(*args, f"hydra.run.dir={tmp_path / 'run'}", **cli)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
