"""Exceptions raised at the public boundary of certsr_rt.

Every error says what was expected and what came. The CLI turns any :class:`CertSRError` into one line on
stderr and a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "Cancelled",
    "CertSRError",
    "InputError",
    "MissingDependencyError",
    "ModelLoadError",
    "Terminated",
    "VacuousBoundWarning",
]


def first_line(exc: BaseException) -> str:
    """The first line of a foreign exception's message (or its type name), to quote in a one-line error."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class CertSRError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(CertSRError, ValueError):
    """An input (image, video, tensor, option value) is not what was expected."""


class ModelLoadError(CertSRError):
    """A checkpoint or model name could not be turned into a model."""


class BackendError(CertSRError):
    """A runtime backend cannot run the request (wrong device, engine built for another GPU, ...)."""


class MissingDependencyError(CertSRError, ImportError):
    """An optional dependency is not installed.

    Attributes:
        module: the import name that failed.
        extra: the ``certsr-rt[extra]`` that provides it.
    """

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        self.module = module
        self.extra = extra
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"optional dependency '{module}' is not installed{why}; install it with: "
            f"pip install 'certsr-rt[{extra}]'"
        )


class Cancelled(CertSRError):
    """An upscale was stopped by its caller: the ``cancel`` callable it was given returned True."""


class VacuousBoundWarning(UserWarning):
    """Certified bounds were requested but, at this number of samples, one side is vacuous."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, ``docker stop``), raised like Ctrl-C so that the same clean-up runs.

    The CLI installs the handler that raises it; as a ``KeyboardInterrupt`` it passes every handler that
    removes partial output on Ctrl-C. Exit code 143 (128 + 15).
    """
