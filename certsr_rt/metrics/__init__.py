"""Image quality metrics: PSNR and SSIM (BasicSR convention) and LPIPS-alex (offline).

``LPIPSMetric`` imports the optional ``lpips`` package only when constructed.
"""

from certsr_rt.metrics.lpips import LPIPSMetric
from certsr_rt.metrics.psnr_ssim import psnr, ssim

__all__ = ["LPIPSMetric", "psnr", "ssim"]
