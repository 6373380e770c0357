"""Where a run computes: device names resolved in one place, for `vaelab train` and `vaelab eval`.

Names: ``auto`` (the first CUDA GPU, else Apple's MPS, else the CPU), ``cpu``, ``cuda`` (the
first GPU), ``cuda:N``, ``mps``; training also takes Lightning's ``gpu`` for ``cuda``. A name
that is none of these, or a device this machine does not have, is one line naming the key.
torch is imported when a function runs: light commands that import this module stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaelab.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: Any, key: str = "device") -> torch.device:
    """The torch device that ``key=name`` selects, checked to exist here."""
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise UserError(f"{key}=mps: this machine has no MPS device (Apple silicon with macOS 12.3 or later)")
        return torch.device("mps")
    kind, colon, index = text.partition(":")
    if kind in ("cuda", "gpu") and (not colon or index.isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"{key}={name}: torch sees no CUDA GPU here (torch {torch.__version__})")
        number = int(index) if colon else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if number >= count:
            raise UserError(f"{key}={name}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
        return torch.device("cuda", number)
    raise UserError(f"{key}={name!r}: expected one of {DEVICE_NAMES}")


def lightning_placement(trainer_cfg) -> tuple[str, Any]:
    """(accelerator, devices) for Lightning's Trainer from ``trainer.accelerator`` and
    ``trainer.devices``: ``cuda:N`` becomes accelerator ``cuda`` on device index N; the other
    names pass as Lightning knows them. Checks the name (and that the device exists) first."""
    accelerator = str(trainer_cfg.get("accelerator", "auto")).strip().lower()
    devices = trainer_cfg.get("devices", "auto")
    device = resolve_device(accelerator, "trainer.accelerator")
    if ":" not in accelerator:
        return ("cuda" if accelerator == "gpu" else accelerator), devices
    if str(devices) not in ("1", "auto"):
        raise UserError(
            f"trainer.accelerator={accelerator} names one GPU, trainer.devices={devices} asks for more; "
            "give trainer.accelerator=cuda with trainer.devices=[…] to choose several"
        )
    return "cuda", [device.index]


def training_device(trainer_cfg) -> torch.device:
    """The device a training process computes on (its first device under DDP on GPUs)."""
    accelerator, devices = lightning_placement(trainer_cfg)
    if accelerator in ("cpu", "mps", "auto"):
        return resolve_device(accelerator, "trainer.accelerator")
    if isinstance(devices, (list, tuple)) and devices:
        return resolve_device(f"cuda:{devices[0]}", "trainer.accelerator")
    return resolve_device("cuda", "trainer.accelerator")


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere oneDNN
    emulates it, hundreds of times slower than float32."""
    import torch

    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU of compute capability 8 or
    more (Ampere and later) whose torch build supports it without emulation, or a CPU with
    AVX-512 BF16 or AMX (:func:`native_bf16_cpu`); never MPS."""
    import torch

    if device.type == "cuda":
        try:
            supported = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.4 has no emulation to exclude
            supported = torch.cuda.is_bf16_supported()
        return bool(supported) and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return native_bf16_cpu()
    return False


def resolve_training_precision(precision, device: torch.device) -> str:
    """``trainer.precision=auto``: Lightning's ``bf16-mixed`` where bfloat16 is computed natively
    on ``device`` (:func:`native_bf16`), ``32-true`` everywhere else, so an emulated bfloat16
    path is never chosen. Any other value is Lightning's own."""
    if str(precision) != "auto":
        return precision
    return "bf16-mixed" if native_bf16(device) else "32-true"


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_compile(setting, device: torch.device, mode: str = "default") -> bool:
    """``trainer.compile``: true or false as given; ``auto``: compiled where it was measured to
    train faster than the eager step and to compile in under 30 s (docs/performance.md,
    "Compiled step"). ``mode``: ``trainer.compile_mode``, one of torch.compile's."""
    if not (isinstance(setting, bool) or setting == "auto"):
        raise UserError(f"trainer.compile={setting!r}: expected auto, true or false")
    if mode not in COMPILE_MODES:
        raise UserError(f"trainer.compile_mode={mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    if setting != "auto":
        return bool(setting)
    return device.type in COMPILED_BY_DEFAULT


# Where trainer.compile=auto compiles: filled from measurements only (docs/performance.md).
COMPILED_BY_DEFAULT: tuple[str, ...] = ()
