"""Configuration of median randomized smoothing."""

from __future__ import annotations

import numbers
import secrets
from dataclasses import dataclass, field

from certsr_rt.errors import InputError

SEED_BOUND = 2**31
"""Seeds are integers in ``[0, SEED_BOUND)``."""


def draw_seed() -> int:
    """A fresh noise seed from the operating system's random source (:mod:`secrets`), in [0, 2**31)."""
    return secrets.randbelow(SEED_BOUND)


@dataclass(frozen=True)
class SmoothingConfig:
    """How the smoothed prediction is formed: ``median_i f(x + g_i)``, ``g_i ~ N(0, sigma^2 I)``.

    ``samples == 1`` with ``sigma == 0`` is the plain model.
    """

    sigma: float | None = None
    """Noise standard deviation in [0, 1] image units; ``None`` uses the model's recommended sigma."""

    samples: int = 21
    """Number of noisy copies n whose outputs are reduced by the per-pixel median."""

    seed: int | None = None
    """Seed of the noise field. Same seed, same image, same options -> identical output on any backend.

    ``None`` (the default) draws a fresh seed from the OS (:func:`draw_seed`) when the config is made, so
    after construction ``seed`` is always an int and :attr:`seed_drawn` says whether it was drawn. Why not a
    fixed default: the certificate's probability is over noise the adversary does not know, and with a
    public seed the smoothed model is a deterministic function an attacker can differentiate through
    (``pgd-median``). Pass a seed to repeat a run exactly; every output records the seed it used."""

    chunk_size: int | None = None
    """How many noisy copies go through the network in one batch; ``None`` picks from the input size."""

    seed_drawn: bool = field(default=False, init=False, compare=False)
    """True when ``seed`` was drawn from the OS because none was given."""

    def __post_init__(self) -> None:
        if self.sigma is not None and not (0.0 <= self.sigma <= 1.0):
            raise InputError(f"sigma must be in [0, 1], got {self.sigma}")
        if not (1 <= self.samples <= 100_000):
            raise InputError(f"samples must be between 1 and 100000, got {self.samples}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.seed is None:
            object.__setattr__(self, "seed", draw_seed())
            object.__setattr__(self, "seed_drawn", True)
        elif (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, numbers.Integral)
            or not 0 <= self.seed < SEED_BOUND
        ):
            raise InputError(f"seed must be an integer in [0, 2**31), got {self.seed!r}")
        else:
            object.__setattr__(self, "seed", int(self.seed))

    def resolved(self, default_sigma: float) -> SmoothingConfig:
        """This config with ``sigma`` filled in from ``default_sigma`` when it was left as ``None``."""
        if self.sigma is not None:
            return self
        filled = SmoothingConfig(default_sigma, self.samples, self.seed, self.chunk_size)
        object.__setattr__(filled, "seed_drawn", self.seed_drawn)
        return filled
