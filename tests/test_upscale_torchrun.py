"""``torchrun --nproc_per_node 2 -m certsr_rt.cli.app upscale``: two real processes on CPU (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from certsr_rt.cli.app import app
from certsr_rt.cli.sharding import Shard
from certsr_rt.io.images import write_image
from certsr_rt.train.distributed import DistInfo

OPTIONS = ["--model", "tiny-srvgg", "--device", "cpu", "--samples", "3", "--backend", "torch", "--seed", "11"]


def test_a_shard_takes_every_world_size_th_item() -> None:
    items = list(range(7))
    parts = [Shard(DistInfo(rank=r, world_size=3)).mine(items) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items
    single = Shard()
    assert single.mine(items) == items and single.broadcast(5) == 5 and single.sum(2) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on Windows is not supported here")
def test_torchrun_splits_the_inputs_and_writes_each_once_as_one_process_would(tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "c", "d", "e"):
        write_image(images / f"{name}.png", rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    # Sorted a, b, c, d, e: the broken file is second, so rank 1 (inputs 1 and 3) owns it.
    (images / "b.png").write_bytes(b"not a png")

    single = tmp_path / "single"
    result = CliRunner().invoke(app, ["upscale", str(images), "-o", f"{single}/", *OPTIONS])
    assert result.exit_code == 1, result.output

    sharded = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "certsr_rt.cli.app", "upscale", str(images), "-o", f"{sharded}/", *OPTIONS]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    err = proc.stderr
    assert proc.returncode != 0, err  # rank 1 failed on b.png: the run failed
    assert "certsr_rt/" not in err, err  # no traceback through our code (torchrun prints its own report)
    (error,) = [line for line in err.splitlines() if line.startswith("error: ")]  # once, by its owner
    assert "b.png" in error
    assert err.count("1 of 5 inputs failed") == 1, err  # rank 0's summary over both ranks
    assert err.count("2 processes wrote 4 of 5 inputs") == 1, err
    lines = err.splitlines()
    assert [line.startswith("sigma ") for line in lines].count(True) == 1, err  # notes from rank 0 only
    assert not any(line.startswith(("2/2", "1/2")) for line in lines), err  # rank 1 shows no progress
    names = sorted(p.name for p in sharded.iterdir())
    assert names == sorted(p.name for p in single.iterdir()) == [f"{n}_x4.png" for n in "acde"]
    for name in names:
        assert (sharded / name).read_bytes() == (single / name).read_bytes(), name
