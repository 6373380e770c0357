"""The objectives' knobs: the numbers that set an objective, each a top-level config key.

``vaelab train objective=infomax lambda=3`` and ``-m beta=1,2,4`` read naturally because each
knob is a key of its own (vaelab/config_source.py puts the chosen objective's knobs at the top
of the config). vaelab's own objectives declare theirs here, and each class reads its entry
(``knobs = OBJECTIVE_KNOBS["betavae"]``): so the config is composed, and a mistyped or
out-of-range knob refused (vaelab/validation.py), before torch is imported, which takes longer
than all the rest of a refused command. An objective from another package declares its knobs
on its class (docs/extending.md); asking for them imports it.

Only the standard library and vaelab.errors here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaelab.errors import check_real

# Top-level keys that set any objective's weight on a scale two or more objectives share:
#   beta_effective: the β of the equivalent β-VAE (β; 1/(1+λ) for InfoMax, either estimator);
#   kl_weight: the weight the loss puts on its own KL term relative to reconstruction
#   (β; 1/(1+λ) for InfoMax derived; 1/λ on KL[q(z)||p(z)] for InfoMax native).
# An objective without such a weight (β-TCVAE, ...) refuses them: its knobs are its own.
SHARED_AXES = ("beta_effective", "kl_weight")


@dataclass(frozen=True)
class Knob:
    """A number that sets an objective, read from the top-level config key ``name`` (sweepable:
    ``vaelab train -m objective=betatcvae beta=2,6,10``). None there means ``default``."""

    name: str  # the top-level config key
    default: float
    above: float  # valid values are > above
    meaning: str  # one line: what it weighs
    argument: str = ""  # the constructor argument and attribute ("" = name)

    @property
    def attribute(self) -> str:
        return self.argument or self.name

    def check(self, value: Any) -> float:
        """``value`` as a float (None: the default), or a one-line UserError naming the key."""
        return self.default if value is None else check_real(self.name, value, above=self.above)


_BETA = (Knob("beta", 1.0, 0.0, "weight of E KL[q(z|x)||p(z)]"),)
# lambda <= -1 has no β-VAE counterpart (beta = 1/(1+lambda) would be infinite or negative).
_LAMBDA = (Knob("lambda", 0.0, -1.0, "weight of I(X;Z) against KL[q(z)||p(z)]", argument="lam"),)

# The knobs of vaelab's objectives by name, the first the one sweeps and `vaelab compare` plot
# against. The weakly-supervised ones (objectives/weak.py) are β-VAE or InfoMax on pairs.
OBJECTIVE_KNOBS: dict[str, tuple[Knob, ...]] = {
    "betavae": _BETA,
    "infomax": _LAMBDA,
    "betatcvae": (Knob("beta", 1.0, 0.0, "weight of the total correlation TC[q(z)]"),),
    "factorvae": (Knob("gamma", 10.0, 0.0, "weight of the discriminator's estimate of TC[q(z)]"),),
    "dipvae": (Knob("lambda_od", 10.0, 0.0, "weight of the off-diagonal covariance penalty (lambda_d follows)"),),
    "annealedvae": (
        Knob("c_max", 25.0, 0.0, "the capacity (nats of E KL[q(z|x)||p(z)]) reached after c_steps"),
        Knob("gamma", 1000.0, 0.0, "weight of |E KL[q(z|x)||p(z)] - C|"),
    ),
    **{name: _BETA for name in ("adagvae", "adamlvae", "gvae", "mlvae")},
    "adainfomax": _LAMBDA,
}


def knobs_of(objective: str) -> tuple[Knob, ...]:
    """The knobs of the objective registered as ``objective``: vaelab's own from the table above
    (nothing imported), any other from its class (importing the module that defines it)."""
    if objective in OBJECTIVE_KNOBS:
        return OBJECTIVE_KNOBS[objective]
    from vaelab.registry import OBJECTIVES

    return OBJECTIVES.get(objective).knobs
