"""vaelab: an experiment runner for disentangled representation learning."""

from pathlib import Path

# The config groups vaelab ships (conf/): Hydra composes runs from them, and their ``_target_``s
# are the parts a checkpoint may name (vaelab/checkpoint.py).
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
