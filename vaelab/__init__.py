"""vaelab: an experiment runner for disentangled representation learning."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("vaelab")  # pyproject.toml's, the one place it is written
except PackageNotFoundError:  # a checkout on PYTHONPATH that was never installed
    __version__ = "0+unknown"

# The config groups vaelab ships (conf/): Hydra composes runs from them, and their ``_target_``s
# are the parts a checkpoint may name (vaelab/checkpoint.py).
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
