"""certsr-rt: robust 4x super-resolution with median randomized smoothing (CertSR)."""

__version__ = "0.1.0"
