"""Turn a trained checkpoint into a bundled weights file: the layout and precision of the shipped models.

The bundled Real-ESRGAN files are ``torch.save({"params_ema": state_dict})`` with fp16 convolution weights
and fp32 everything else (biases, PReLU slopes); the loader casts to fp32 and checks the file's sha256
against ``certsr_rt/models/weights/SHA256SUMS``. This script writes a checkpoint (``certsr-rt train``'s,
or any the loader reads) in that form and prints the sha256 line to add to ``SHA256SUMS``.

Usage:
    python scripts/bundle_weights.py runs/x/net_g_latest.pth certsr_rt/models/weights/certsr_compact_x4.pth
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch


def bundle(src: Path, dst: Path) -> str:
    """Write ``src``'s generator (EMA weights preferred) to ``dst``; return the file's sha256."""
    from certsr_rt.models import load_model

    model = load_model(src)  # the loader's own reading: params_ema first, any supported layout
    state = {
        k: (v.half() if v.dim() == 4 else v.float()).contiguous()
        for k, v in model.module.state_dict().items()
    }
    tmp = dst.with_name(f".{dst.name}.tmp")
    torch.save({"params_ema": state}, tmp)
    tmp.replace(dst)
    return hashlib.sha256(dst.read_bytes()).hexdigest()


def main() -> None:
    """Command line: ``bundle_weights.py CHECKPOINT OUTPUT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        sys.exit(f"error: checkpoint not found: {args.checkpoint}")
    digest = bundle(args.checkpoint, args.output)
    print(f"{digest}  {args.output.name}")


if __name__ == "__main__":
    main()
