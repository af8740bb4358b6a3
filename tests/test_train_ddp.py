"""DDP on CPU: 2 gloo processes under torchrun match one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import torch
from helpers import write_tiny_vgg16

from certsr_rt.train import TrainConfig, Trainer

# Runs on each of the two ranks: the gradient of the first step on its half of the global batch (DDP
# averages it), then a short full training run whose checkpoint rank 0 writes.
_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from certsr_rt.train import TrainConfig, Trainer

    runs = json.loads(sys.argv[1])
    out = sys.argv[2]
    for tag, values in runs.items():
        trainer = Trainer(TrainConfig(**values), log=lambda m: None)
        assert trainer.dist.world_size == 2 and trainer.local_batch == values["batch_size"] // 2
        lr, hr = trainer.batch(0)
        logs, _, _ = trainer.generator_backward(lr, hr, 0)
        grads = {n: p.grad.detach().clone() for n, p in trainer.net_g.named_parameters()}
        rank = trainer.dist.rank
        torch.save({"grads": grads, "loss": logs["l_g"]}, os.path.join(out, f"{tag}_grads_rank{rank}.pt"))
        result = Trainer(TrainConfig(**values), log=lambda m: None).run()
        with open(os.path.join(out, f"{tag}_done_rank{rank}.json"), "w") as fh:
            json.dump({"iteration": result.iteration, "file": str(result.generator_file)}, fh)
    trainer.close()
    """
)


def _images(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 44), (36, 48), (48, 40)]):
        img = cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (5, 5), 1.5)
        cv2.imwrite(str(folder / f"{i}.png"), img)
    return folder


def _values(tmp_path: Path, mode: str, hr: Path, vgg: Path, out: str) -> dict[str, object]:
    return {
        "model": "tiny-srvgg",
        "mode": mode,
        "hr_dir": str(hr),
        "hr_crop": 32,
        "batch_size": 4,
        "iterations": 2,
        "lr": 1e-3,
        "pixel_weight": 1.0,
        "perceptual_weights": str(vgg),
        "perceptual_layers": ["conv1_2"],
        "gan_weight": 0.0,  # BatchNorm statistics of the discriminator are per process: not bit-comparable
        "ema_decay": 0.5,
        "device": "cpu",
        "progress": False,
        "output_dir": str(tmp_path / out),
    }


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    hr, vgg = _images(tmp_path / "hr"), write_tiny_vgg16(tmp_path / "vgg.pth")
    modes = ("mrs", "ad-fgsm")  # one torchrun launch for both: process start-up is most of the cost
    runs = {mode: _values(tmp_path, mode, hr, vgg, f"ddp_{mode}") for mode in modes}
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        json.dumps(runs),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for mode in modes:
        values = runs[mode]
        # single process, same global batch
        single = Trainer(
            TrainConfig(**{**values, "output_dir": str(tmp_path / f"one_{mode}")}), log=lambda m: None
        )
        lr, hr_batch = single.batch(0)
        assert lr.shape[0] == 4
        logs, _, _ = single.generator_backward(lr, hr_batch, 0)
        ranks = [torch.load(out / f"{mode}_grads_rank{r}.pt", weights_only=True) for r in (0, 1)]
        for name, p in single.net_g.named_parameters():
            assert p.grad is not None
            torch.testing.assert_close(ranks[0]["grads"][name], ranks[1]["grads"][name], rtol=0, atol=0)
            torch.testing.assert_close(ranks[0]["grads"][name], p.grad, rtol=1e-4, atol=1e-7, msg=name)
        # each rank's loss is the mean over its half: their average is the single-process loss
        assert abs((ranks[0]["loss"] + ranks[1]["loss"]) / 2 - logs["l_g"]) < 1e-5

        # the 2-iteration runs: only rank 0 wrote a checkpoint, and it matches the single-process one
        done = [json.loads((out / f"{mode}_done_rank{r}.json").read_text()) for r in (0, 1)]
        assert done[0]["iteration"] == done[1]["iteration"] == 2
        assert done[1]["file"] == "None"
        ddp_ckpt = torch.load(done[0]["file"], weights_only=True)
        ref = Trainer(
            TrainConfig(**{**values, "output_dir": str(tmp_path / f"ref_{mode}")}), log=lambda m: None
        )
        ref_ckpt = torch.load(ref.run().generator_file, weights_only=True)
        for key in ("params", "params_ema"):
            for name, value in ref_ckpt[key].items():
                torch.testing.assert_close(
                    ddp_ckpt[key][name], value, rtol=1e-4, atol=1e-5, msg=f"{key}.{name}"
                )
