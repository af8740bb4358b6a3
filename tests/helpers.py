"""Test helpers shared by several test modules: SRModels around tiny modules built in the test, and a
signal sent to a real process once it has started its work."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import torch

from certsr_rt.models.arch.rrdbnet import RRDBNet
from certsr_rt.models.arch.srvgg import SRVGGNetCompact
from certsr_rt.models.descriptor import SRModel


def make_model(
    module: torch.nn.Module,
    name: str,
    architecture: str,
    hyperparameters: dict[str, Any] | None = None,
    *,
    default_sigma: float | None = 0.03,
    sha256: str = "0" * 64,
    supports_half: bool = True,
) -> SRModel:
    """An SRModel around a module built here (tiny random weights, or real weights loaded by hand)."""
    return SRModel(
        module=module,
        name=name,
        architecture=architecture,
        scale=4,
        in_channels=3,
        out_channels=3,
        hyperparameters=dict(hyperparameters or {}),
        default_sigma=default_sigma,
        sha256=sha256,
        source=f"generated:{name}",
        supports_half=supports_half,
    )


def tiny_rrdbnet(seed: int = 0) -> SRModel:
    torch.manual_seed(seed)
    hp = {"num_block": 1, "num_feat": 8, "num_grow_ch": 4}
    return make_model(RRDBNet(**hp).eval(), "tiny-rrdbnet", "RRDBNet", hp)


def tiny_srvgg(seed: int = 0, default_sigma: float | None = 0.03) -> SRModel:
    torch.manual_seed(seed)
    hp = {"num_feat": 8, "num_conv": 2}
    return make_model(
        SRVGGNetCompact(**hp).eval(), "tiny-srvgg", "SRVGGNetCompact", hp, default_sigma=default_sigma
    )


def signal_after_first_line(
    cmd: list[str], sig: int, *, env: dict[str, str], stream: str = "stdout", delay: float = 0.1
) -> tuple[int, str, str]:
    """Run ``cmd``, wait for its first line on ``stream`` (``stdout`` or ``stderr``), then send ``sig``.

    Returns:
        ``(exit code, that first line, the rest of stderr)``.
    """
    # A test run started in the background (`nohup pytest &`) ignores SIGINT, and a child inherits that;
    # give the child the default disposition so that Python installs its Ctrl-C handler.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        pipe = proc.stdout if stream == "stdout" else proc.stderr
        assert pipe is not None
        first = pipe.readline()
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, first, err


def attack_rrdbnet() -> torch.nn.Module:
    """A bare tiny RRDBNet (1 block, nf 8) in eval mode, fixed weights: the attack tests' victim."""
    from certsr_rt.models.arch.rrdbnet import RRDBNet

    torch.manual_seed(0)
    return RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).eval()


def attack_srvgg() -> torch.nn.Module:
    """A bare tiny compact net whose output follows its input closely (nearest-upsampled input + body)."""
    from certsr_rt.models.arch.srvgg import SRVGGNetCompact

    torch.manual_seed(0)
    return SRVGGNetCompact(num_feat=8, num_conv=2).eval()


def attack_batch(n: int = 2, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """LR inputs with pixels at both edges of [0, 1] (the projection must keep them inside) and HR targets."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    hr = torch.rand(n, 3, 4 * size, 4 * size, generator=gen)
    return x, hr


def write_tiny_vgg16(path: Any) -> Any:
    """A VGG16 ``features`` file: random first-block weights, zeros elsewhere (the training tests' VGG).

    The perceptual loss insists on the full VGG16 layout; the training tests only use ``conv1_2`` (the deeper
    layers are loaded but never run), so the zeros cost nothing but disk.
    """
    from certsr_rt.losses import VGG_CONFIGS

    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    idx, in_ch = 0, 3
    for convs, out_ch in zip(VGG_CONFIGS["vgg16"], (64, 128, 256, 512, 512), strict=True):
        for _ in range(convs):
            shape = (out_ch, in_ch, 3, 3)
            sd[f"features.{idx}.weight"] = (
                (torch.randn(shape, generator=g) * 0.2) if idx < 4 else torch.zeros(shape)
            )
            sd[f"features.{idx}.bias"] = torch.zeros(out_ch)
            idx, in_ch = idx + 2, out_ch
        idx += 1  # the max-pool
    torch.save(sd, path)
    return path
