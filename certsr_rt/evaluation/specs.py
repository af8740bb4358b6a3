"""Which models an evaluation compares: ``--models`` specs and their parsing.

Syntax (one spec per comma-separated item)::

    SOURCE[@OPTION[:OPTION...]]      OPTION = sigma=FLOAT | sigma=default | n=INT | label=TEXT

``SOURCE`` is a registered model name (``realesrgan-x4plus``), a checkpoint path, or ``bicubic`` (the
interpolation baseline). Without options the plain generator is evaluated. ``sigma`` (and optionally ``n``,
default 21) selects median randomized smoothing with that noise level; ``sigma=default`` takes the model's
recommended sigma; ``n`` alone also means the recommended sigma. Examples::

    realesrgan-x4plus
    realesrgan-x4plus@sigma=0.03:n=21
    runs/mrs/checkpoint.pth@sigma=0.06:label=CertSR
    bicubic

Paths may not contain commas; a path containing ``@`` works as long as what follows its last ``@`` is not a
list of options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from certsr_rt.errors import InputError

__all__ = ["BICUBIC", "DEFAULT_SAMPLES", "ModelEntry", "parse_model_specs"]

BICUBIC = "bicubic"
"""Source name of the bicubic interpolation baseline."""

DEFAULT_SAMPLES = 21
"""Number of noisy copies of a smoothed entry when the spec gives a sigma but no ``n``."""

_OPTIONS = re.compile(r"^(?:(?:sigma|n|label)=[^:]*)(?::(?:sigma|n|label)=[^:]*)*$")


@dataclass(frozen=True)
class ModelEntry:
    """One row of the results table: a base generator, plain or median-smoothed.

    Attributes:
        source: registered name, checkpoint path, or ``bicubic``.
        sigma: smoothing noise level; ``None`` for the plain generator, and also while
            ``use_default_sigma`` waits for the model's recommended sigma (filled in by :meth:`with_sigma`
            once the model is loaded).
        samples: number of noisy copies n (1 for the plain generator).
        label: the name shown in tables.
        use_default_sigma: the spec asked for the model's recommended sigma (``sigma`` is filled in later).
    """

    source: str
    sigma: float | None = None
    samples: int = 1
    label: str = ""
    use_default_sigma: bool = False

    @property
    def smoothed(self) -> bool:
        """Whether this entry runs median randomized smoothing."""
        return self.use_default_sigma or (self.sigma is not None and self.sigma > 0)

    @property
    def key(self) -> tuple[str, float | None, int]:
        """Identity of the computation (two entries with the same key give the same numbers)."""
        return (self.source, self.sigma if self.smoothed else None, self.samples if self.smoothed else 1)

    def with_sigma(self, sigma: float) -> ModelEntry:
        """This entry with the recommended sigma filled in (and the label completed)."""
        label = self.label or default_label(self.source, sigma, self.samples)
        return ModelEntry(self.source, sigma, self.samples, label, use_default_sigma=False)


def default_label(source: str, sigma: float | None, samples: int) -> str:
    """``name`` for a plain entry, ``name MRS σ=0.03 n=21`` for a smoothed one (a path's name is its stem)."""
    path = Path(source)
    name = path.stem if path.suffix.lower() in (".pth", ".pt", ".safetensors") else source
    if sigma is None or sigma == 0:
        return name
    return f"{name} MRS σ={sigma:g} n={samples}"


def _parse_one(item: str) -> ModelEntry:
    source, options = item, ""
    if "@" in item:
        head, tail = item.rsplit("@", 1)
        if _OPTIONS.match(tail):
            source, options = head, tail
        elif re.match(r"^\w+=", tail):
            raise InputError(
                f"model spec {item!r}: options after '@' must be sigma=FLOAT|default, n=INT or label=TEXT "
                f"separated by ':', got {tail!r}"
            )
    source = source.strip()
    if not source:
        raise InputError(f"model spec {item!r} has no model name or path before '@'")
    sigma: float | None = None
    samples: int | None = None
    label = ""
    use_default = False
    for option in filter(None, options.split(":")):
        key, value = option.split("=", 1)
        if key == "sigma":
            if value == "default":
                use_default = True
                continue
            try:
                sigma = float(value)
            except ValueError:
                raise InputError(
                    f"model spec {item!r}: sigma must be a number or 'default', got {value!r}"
                ) from None
            if not 0.0 <= sigma <= 1.0:
                raise InputError(f"model spec {item!r}: sigma must be in [0, 1], got {sigma}")
        elif key == "n":
            try:
                samples = int(value)
            except ValueError:
                raise InputError(f"model spec {item!r}: n must be an integer, got {value!r}") from None
            if samples < 1:
                raise InputError(f"model spec {item!r}: n must be >= 1, got {samples}")
        else:
            label = value.strip()
    if source == BICUBIC and (sigma or use_default or samples not in (None, 1)):
        raise InputError(f"model spec {item!r}: the bicubic baseline takes no smoothing options")
    if samples is not None and sigma is None and not use_default:
        use_default = True  # n alone: smoothing at the model's recommended sigma
    if sigma == 0:
        sigma, samples = None, 1  # sigma 0 is the plain generator, whatever n says
    smoothed = use_default or sigma is not None
    n = (samples or DEFAULT_SAMPLES) if smoothed else 1
    if not label and not use_default:
        label = default_label(source, sigma, n)
    return ModelEntry(source, sigma, n, label, use_default_sigma=use_default)


def parse_model_specs(text: str) -> list[ModelEntry]:
    """Parse a ``--models`` value (see the module docstring for the syntax).

    Args:
        text: comma-separated specs.

    Returns:
        The entries, in order.

    Raises:
        InputError: an empty list, a malformed option, or two entries with the same label.
    """
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise InputError(f"--models needs at least one model name or checkpoint, got {text!r}")
    entries = [_parse_one(item) for item in items]
    labels = [e.label for e in entries if e.label]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InputError(f"two --models entries have the same label {duplicates[0]!r}; add label=... to one")
    return entries
