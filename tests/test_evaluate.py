"""``certsr-rt evaluate``: model specs, image pairing, the evaluation loop, the report and the sweep."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from typer.testing import CliRunner

from certsr_rt.errors import InputError
from certsr_rt.evaluation import (
    DEFAULT_CONDITIONS,
    PSNR_CAP_DB,
    ModelEntry,
    downscale_bicubic,
    evaluate,
    load_generators,
    load_image_pairs,
    parse_conditions,
    parse_model_specs,
    read_report,
    render_table,
    write_report,
    write_sweep,
)
from certsr_rt.evaluation import runner as runner_module
from certsr_rt.evaluation.data import ImagePair, min_hr_size
from certsr_rt.io.pairs import pair_lr_files
from certsr_rt.losses import SRLoss, vgg_layer_names
from certsr_rt.metrics import LPIPSMetric

ALL_CONDITIONS = ["clean", "noisy", "blurry", "jpeg", "fgsm", "bim", "pgd", "cw"]


def write_png(path: Path, array: np.ndarray) -> None:
    bgr = array[:, :, ::-1] if array.ndim == 3 else array
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))


@pytest.fixture
def hr_dir(tmp_path: Path) -> Path:
    """Three smooth 66 x 64 HR images (66 is not a multiple of 4: mod-crop to 64), one grayscale."""
    folder = tmp_path / "HR"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        small = rng.integers(0, 256, size=(9, 8, 3), dtype=np.uint8)
        image = cv2.resize(small, (64, 66), interpolation=cv2.INTER_CUBIC)
        write_png(folder / f"img_{i:03d}.png", image[:, :, 0] if i == 2 else image)
    return folder


@pytest.fixture(scope="module")
def lpips_metric() -> LPIPSMetric:
    return LPIPSMetric()


# ------------------------------------------------------------------------------------------ model specs
def test_parse_model_specs() -> None:
    entries = parse_model_specs(
        "realesrgan-x4plus, realesrgan-x4plus@sigma=0.03:n=11, ckpt/run@1.pth@sigma=0.06:label=CertSR, "
        "tiny-srvgg@n=5, tiny-rrdbnet@sigma=0, bicubic"
    )
    assert entries[0] == ModelEntry("realesrgan-x4plus", None, 1, "realesrgan-x4plus")
    assert entries[1] == ModelEntry("realesrgan-x4plus", 0.03, 11, "realesrgan-x4plus MRS σ=0.03 n=11")
    assert (entries[2].source, entries[2].sigma, entries[2].samples, entries[2].label) == (
        "ckpt/run@1.pth",
        0.06,
        21,
        "CertSR",
    )
    assert entries[3].use_default_sigma and entries[3].samples == 5 and entries[3].smoothed
    assert not entries[4].smoothed and entries[4].samples == 1
    assert entries[5].source == "bicubic"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "at least one"),
        ("m@sigma=abc", "sigma must be a number"),
        ("m@sigma=2", r"in \[0, 1\]"),
        ("m@n=0", "n must be >= 1"),
        ("m@foo=1", "options after '@'"),
        ("bicubic@sigma=0.1", "bicubic"),
        ("m,m", "same label"),
    ],
)
def test_parse_model_specs_errors(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_model_specs(text)


def test_parse_conditions() -> None:
    assert parse_conditions("clean, PGD,clean") == ["clean", "pgd"]
    assert list(DEFAULT_CONDITIONS) == ["clean", "noisy", "blurry", "fgsm", "bim", "pgd", "cw"]
    with pytest.raises(InputError, match="unknown condition 'rain'"):
        parse_conditions("clean,rain")


# ----------------------------------------------------------------------------------------------- images
def test_load_pairs_bicubic_modcrop_gray_limit_crop(hr_dir: Path) -> None:
    pairs = load_image_pairs(hr_dir)
    assert [p.name for p in pairs] == ["img_000", "img_001", "img_002"]
    for p in pairs:
        assert p.hr.shape == (1, 3, 64, 64) and p.lr.shape == (1, 3, 16, 16)
        torch.testing.assert_close(p.lr, downscale_bicubic(p.hr, 4))
    gray = pairs[2].hr
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    cropped = load_image_pairs(hr_dir, limit=1, crop=8)
    assert len(cropped) == 1 and cropped[0].lr.shape == (1, 3, 8, 8) and cropped[0].hr.shape == (1, 3, 32, 32)
    torch.testing.assert_close(cropped[0].hr, pairs[0].hr[:, :, 16:48, 16:48])


def test_load_pairs_with_lr_folder(tmp_path: Path, hr_dir: Path) -> None:
    lr_dir = tmp_path / "LR"
    lr_dir.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):  # DIV2K naming: 0801.png <-> 0801x4.png
        write_png(lr_dir / f"img_{i:03d}x4.png", rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8))
    pairs = load_image_pairs(hr_dir, lr_dir)
    assert [p.lr.shape for p in pairs] == [(1, 3, 16, 16)] * 3
    write_png(lr_dir / "img_000x4.png", np.zeros((15, 16, 3), np.uint8))
    with pytest.raises(InputError, match="expected HR = 4 x LR"):
        load_image_pairs(hr_dir, lr_dir)
    write_png(lr_dir / "img_000x4.png", np.zeros((16, 16, 3), np.uint8))
    (lr_dir / "img_001x4.png").unlink()
    with pytest.raises(InputError, match=r"no LR image in .* for 1 of 3 HR images .*: img_001\.png$"):
        load_image_pairs(hr_dir, lr_dir)
    with pytest.raises(InputError, match="not a directory"):
        load_image_pairs(tmp_path / "nowhere")


def test_images_too_small_to_measure_are_refused_when_loaded(tmp_path: Path, hr_dir: Path) -> None:
    # PSNR/SSIM shave 4 px per border, SSIM needs 11 x 11, LPIPS-alex 31 x 31: 32 x 32 after the mod-crop.
    assert min_hr_size(4) == 32 and min_hr_size(2) == 32 and min_hr_size(8) == 32
    rng = np.random.default_rng(2)
    write_png(hr_dir / "tiny.png", rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    write_png(hr_dir / "thin.png", rng.integers(0, 256, size=(64, 35, 3), dtype=np.uint8))  # 35 -> 32: fine
    write_png(hr_dir / "short.png", rng.integers(0, 256, size=(31, 64, 3), dtype=np.uint8))  # 31 -> 28
    with pytest.raises(InputError) as info:
        load_image_pairs(hr_dir)
    message = str(info.value)
    assert message.startswith("2 of 6 evaluation images cannot be used: ")
    assert "short.png: HR image is 31 x 64, expected at least 32 x 32 at scale 4" in message
    assert "tiny.png: HR image is 8 x 8, expected at least 32 x 32 at scale 4" in message
    assert "crop_border" not in message
    with pytest.raises(InputError, match=r"crop must be >= 8 LR pixels at scale 4 .*, got 7"):
        load_image_pairs(hr_dir, crop=7)
    small = ImagePair("small", torch.zeros(1, 3, 7, 7), torch.zeros(1, 3, 28, 28))
    with pytest.raises(InputError, match=r"small: HR is 28 x 28, expected at least 32 x 32"):
        evaluate(
            parse_model_specs("bicubic"),
            [small],
            ["clean"],
            generators=load_generators(parse_model_specs("bicubic"), "cpu"),
            lpips_metric=object(),  # type: ignore[arg-type]  # refused before any metric runs
        )


def test_pair_lr_files_understands_benchmark_names_and_names_every_orphan() -> None:
    hr = [Path(f"{stem}.png") for stem in ("0801", "baby", "bird", "head", "woman")]
    lr = [Path(n) for n in ("0801x4.png", "baby_LR.png", "bird_LRx4.png", "head.png", "head_LR.png")]
    assert [p.name for p in pair_lr_files(hr[:4], lr, "LR")] == [
        "0801x4.png",
        "baby_LR.png",
        "bird_LRx4.png",
        "head.png",  # the exact stem wins over a suffixed one
    ]
    with pytest.raises(InputError, match=r"no LR image in LR for 1 of 5 HR images .*: woman\.png$"):
        pair_lr_files(hr, lr, "LR")
    many = [Path(f"{i}.png") for i in range(8)]
    with pytest.raises(
        InputError, match=r"for 8 of 8 HR images .*: 0\.png, 1\.png, 2\.png, 3\.png, 4\.png and 3 more"
    ):
        pair_lr_files(many, lr, "LR")


# ------------------------------------------------------------------------------------------- evaluation
SPECS = "tiny-srvgg,tiny-srvgg@sigma=0.05:n=3,tiny-rrdbnet,bicubic"


def run_tiny(hr_dir: Path, lpips_metric: LPIPSMetric, conditions=ALL_CONDITIONS, **kwargs):  # noqa: ANN001, ANN201
    entries = parse_model_specs(SPECS)
    generators = load_generators(entries, "cpu")
    pairs = load_image_pairs(hr_dir, limit=2)
    return evaluate(
        entries,
        pairs,
        conditions,
        generators=generators,
        attack_loss=SRLoss(None),
        lpips_metric=lpips_metric,
        **kwargs,
    )


def test_evaluate_fills_every_cell_and_writes_the_report(
    tmp_path: Path, hr_dir: Path, lpips_metric: LPIPSMetric
) -> None:
    calls = []
    result = run_tiny(hr_dir, lpips_metric, progress=lambda done, total, what: calls.append((done, total)))
    assert [e.label for e in result.entries] == [
        "tiny-srvgg",
        "tiny-srvgg MRS σ=0.05 n=3",
        "tiny-rrdbnet",
        "bicubic",
    ]
    total = 2 * 4 * len(ALL_CONDITIONS)
    assert calls[-1] == (total, total) and len(calls) == total
    for entry in result.entries:
        for condition in ALL_CONDITIONS:
            cell = result.cell(entry, condition)
            assert cell.images == 2
            assert math.isfinite(cell.psnr) and 0 < cell.ssim <= 1 and 0 <= cell.lpips < 1.5
    bicubic = result.entries[3]
    for attack in ("fgsm", "bim", "pgd"):
        assert result.cell(bicubic, attack).psnr < result.cell(bicubic, "clean").psnr - 0.5

    written = write_report(result, tmp_path / "out")
    assert {p.name for p in written} == {"results.md", "results.csv", "per_image.csv", "results.json"}
    table = render_table(result)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert len(rows) == 4 and all(row.count(" / ") == 2 * len(ALL_CONDITIONS) for row in rows)
    assert "n/a" not in table
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert table in markdown and "fgsm, bim, pgd and cw are transfer attacks" in markdown
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 4 * len(ALL_CONDITIONS)
    assert all(float(row["psnr_y_db"]) > 0 and row["images"] == "2" for row in summary)
    with open(tmp_path / "out" / "per_image.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2 * 4 * len(ALL_CONDITIONS)
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(document["summary"]) == 4 * len(ALL_CONDITIONS)
    assert document["settings"]["conditions"]["pgd"] == "PGD eps=10/255, 10 steps of 2/255, random start"
    assert "Y channel" in document["settings"]["metrics"]["psnr"]
    assert document["models"][1]["smoothing"] == {"sigma": 0.05, "samples": 3}


def test_attacks_are_crafted_once_per_base_generator(
    monkeypatch: pytest.MonkeyPatch, hr_dir: Path, lpips_metric: LPIPSMetric
) -> None:
    crafted = []
    original = runner_module.run_attack

    def counting(config, model, x, hr, loss_fn, *, generator=None):  # noqa: ANN001, ANN202
        crafted.append((config.method, getattr(model, "name", "")))
        return original(config, model, x, hr, loss_fn, generator=generator)

    monkeypatch.setattr(runner_module, "run_attack", counting)
    run_tiny(hr_dir, lpips_metric, conditions=["clean", "fgsm"])
    # 2 images x 3 base generators (tiny-srvgg serves both its plain and its MRS entry).
    assert sorted(crafted) == sorted([("fgsm", n) for n in ("tiny-srvgg", "tiny-rrdbnet", "bicubic")] * 2)


def test_adaptive_attacks_aim_at_each_smoothed_entry_and_are_pgd_on_plain_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hr_dir: Path, lpips_metric: LPIPSMetric
) -> None:
    targets = []
    original = runner_module.run_attack

    def recording(config, model, x, hr, loss_fn, **kwargs):  # noqa: ANN001, ANN003, ANN202
        targets.append((config.method, kwargs.get("target")))
        return original(config, model, x, hr, loss_fn, **kwargs)

    monkeypatch.setattr(runner_module, "run_attack", recording)
    specs = "tiny-srvgg,tiny-srvgg@sigma=0.05:n=3,tiny-srvgg@sigma=0.1:n=5,bicubic"
    entries = parse_model_specs(specs)
    result = evaluate(
        entries,
        load_image_pairs(hr_dir, limit=1, crop=8),
        ["pgd", "pgd-eot", "pgd-median"],
        generators=load_generators(entries, "cpu"),
        attack_loss=SRLoss(None),
        attacks={k: v.replace(steps=2) for k, v in runner_module.EVAL_ATTACKS.items()},
        lpips_metric=lpips_metric,
        seed=4,
        attack_chunk=2,
    )
    # Transfer pgd once per generator (plain entries and bicubic reuse it for pgd-eot / pgd-median); each
    # smoothed entry is attacked through its own sigma and n, with the evaluation's seed and image key.
    adaptive = sorted((m, t.sigma, t.samples, t.seed, t.noise_key) for m, t in targets if t is not None)
    assert adaptive == sorted(
        (m, s, n, 4, 0) for m in ("pgd-eot", "pgd-median") for s, n in ((0.05, 3), (0.1, 5))
    )
    assert sorted(m for m, t in targets if t is None) == ["pgd", "pgd"]
    plain, bicubic = result.entries[0], result.entries[3]
    for entry in (plain, bicubic):
        for condition in ("pgd-eot", "pgd-median"):
            assert result.cell(entry, condition) == result.cell(entry, "pgd")
    write_report(result, tmp_path / "out")
    markdown = (tmp_path / "out" / "results.md").read_text()
    for sentence in (
        "fgsm, bim, pgd and cw are transfer attacks",
        "pgd-eot attacks each MRS entry itself",
        "pgd-median attacks each MRS entry through its deployed n-sample median",
    ):
        assert sentence in markdown


def test_pgd_median_keeps_the_worse_of_its_own_result_and_the_transferred_pgd_per_metric(
    monkeypatch: pytest.MonkeyPatch, hr_dir: Path, lpips_metric: LPIPSMetric
) -> None:
    """An idle median-gradient attack (it returns the clean LR) still scores at least as badly as pgd.

    The seed-knowing attacker also tries the transferred pgd input, per image and metric: the cell is the
    per-metric worst of the entry's clean score (what the idle attack gives) and its pgd score.
    """
    original = runner_module.run_attack

    def idle_adaptive(config, model, x, hr, loss_fn, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if kwargs.get("target") is not None:
            return x.clone()
        return original(config, model, x, hr, loss_fn, **kwargs)

    monkeypatch.setattr(runner_module, "run_attack", idle_adaptive)
    entries = parse_model_specs("tiny-srvgg@sigma=0.05:n=3")
    result = evaluate(
        entries,
        load_image_pairs(hr_dir, limit=2, crop=8),
        ["clean", "pgd", "pgd-median", "pgd-eot"],
        generators=load_generators(entries, "cpu"),
        attack_loss=SRLoss(None),
        attacks={k: v.replace(steps=2) for k, v in runner_module.EVAL_ATTACKS.items()},
        lpips_metric=lpips_metric,
        seed=3,
    )
    rows = {(m.image, m.condition): m for m in result.measurements[entries[0].key]}
    images = sorted({image for image, _ in rows})
    for image in images:
        clean, pgd, median = rows[image, "clean"], rows[image, "pgd"], rows[image, "pgd-median"]
        assert median.psnr == min(clean.psnr, pgd.psnr)
        assert median.ssim == min(clean.ssim, pgd.ssim)
        assert median.lpips == max(clean.lpips, pgd.lpips)
        # pgd-eot's attacker does not know the seed and cannot pick by the deployed output: its own result.
        eot = rows[image, "pgd-eot"]
        assert (eot.psnr, eot.ssim, eot.lpips) == (clean.psnr, clean.ssim, clean.lpips)
    # The idle attack is weaker than pgd here, so the cell is pgd's: the transfer candidate is what counts.
    assert result.cell(entries[0], "pgd-median") == result.cell(entries[0], "pgd")


def test_an_adaptive_attack_out_of_memory_is_one_line_naming_attack_chunk(
    monkeypatch: pytest.MonkeyPatch, hr_dir: Path, lpips_metric: LPIPSMetric
) -> None:
    original = runner_module.run_attack

    def short_of_memory(config, model, x, hr, loss_fn, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if kwargs.get("target") is not None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore text")
        return original(config, model, x, hr, loss_fn, **kwargs)

    monkeypatch.setattr(runner_module, "run_attack", short_of_memory)
    with pytest.raises(
        InputError, match=r"^pgd-median against tiny-srvgg MRS .* out of memory \(CUDA out"
    ) as e:
        run_tiny(hr_dir, lpips_metric, conditions=["pgd-median"])
    assert "--attack-chunk 4" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="a smaller --attack-chunk"):
        run_tiny(hr_dir, lpips_metric, conditions=["pgd-eot"], attack_chunk=2)

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("some other failure")

    monkeypatch.setattr(runner_module, "run_attack", broken)
    with pytest.raises(RuntimeError, match="some other failure"):  # not disguised as a memory problem
        run_tiny(hr_dir, lpips_metric, conditions=["pgd-median"])


def _matlab_bicubic_matrix(n: int, scale: int) -> np.ndarray:
    """MATLAB ``imresize(..., 'bicubic')`` along one axis as a matrix (its ``contributions``, upscaling)."""

    def cubic(t: np.ndarray) -> np.ndarray:  # Keys, a = -0.5
        a = np.abs(t)
        near = (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
        return near + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))

    u = np.arange(1, n * scale + 1) / scale + 0.5 * (1 - 1 / scale)
    taps = np.floor(u - 2)[:, None] + np.arange(6)[None, :]
    weights = cubic(u[:, None] - taps)
    weights /= weights.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(n), np.arange(n)[::-1]])  # out-of-range taps: symmetric padding
    matrix = np.zeros((n * scale, n))
    for i, (row, w) in enumerate(zip(taps.astype(int) - 1, weights, strict=True)):
        np.add.at(matrix[i], mirror[row % (2 * n)], w)
    return matrix


def test_bicubic_baseline_equals_matlab_imresize_to_the_border() -> None:
    image = np.random.default_rng(0).random((3, 9, 13))
    expected = np.einsum("ih,chw,jw->cij", _matlab_bicubic_matrix(9, 4), image, _matlab_bicubic_matrix(13, 4))
    ours = runner_module.Bicubic(4)(torch.from_numpy(image)[None].float())[0].double().numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)  # borders included
    # PyTorch's plain bicubic (a = -0.75), the baseline before, is far off.
    old = F.interpolate(torch.from_numpy(image)[None], scale_factor=4, mode="bicubic")[0].numpy()
    assert np.abs(old - expected).max() > 0.02


@pytest.mark.slow
def test_bicubic_baseline_is_matlab_bicubic_on_set5(assets: Path, lpips_metric: LPIPSMetric) -> None:
    """The published bicubic x4 on Set5 (MATLAB imresize, LR_x4 -> HR): 28.42 dB PSNR-Y, border 4."""
    entries = parse_model_specs("bicubic")
    set5 = assets / "data" / "Set5"
    result = evaluate(
        entries,
        load_image_pairs(set5 / "HR", set5 / "LR_x4"),
        ["clean"],
        generators=load_generators(entries, "cpu"),
        lpips_metric=lpips_metric,
    )
    cell = result.cell(result.entries[0], "clean")
    assert cell.images == 5
    assert cell.psnr == pytest.approx(28.42, abs=0.02)


def test_evaluate_is_reproducible(hr_dir: Path, lpips_metric: LPIPSMetric) -> None:
    a = run_tiny(hr_dir, lpips_metric, conditions=["noisy", "pgd"], seed=3)
    b = run_tiny(hr_dir, lpips_metric, conditions=["noisy", "pgd"], seed=3)
    assert a.measurements == b.measurements


def test_evaluate_errors(hr_dir: Path, lpips_metric: LPIPSMetric) -> None:
    entries = parse_model_specs("tiny-srvgg")
    generators = load_generators(entries, "cpu")
    pairs = load_image_pairs(hr_dir, limit=1)
    with pytest.raises(InputError, match="attack loss"):
        evaluate(entries, pairs, ["fgsm"], generators=generators, lpips_metric=lpips_metric)
    default = parse_model_specs("tiny-srvgg@sigma=default")
    generators_no_sigma = {"tiny-srvgg": _without_sigma(generators["tiny-srvgg"])}
    with pytest.raises(InputError, match="carries no recommended sigma"):
        evaluate(default, pairs, ["clean"], generators=generators_no_sigma, lpips_metric=lpips_metric)
    with pytest.raises(InputError, match="sigma sweep needs at least one generator"):
        evaluate(
            parse_model_specs("bicubic"),
            pairs,
            ["clean"],
            generators=load_generators(parse_model_specs("bicubic"), "cpu"),
            sweep_sigmas=[0.0, 0.03],
            lpips_metric=lpips_metric,
        )
    with pytest.raises(InputError, match="no loaded model"):
        evaluate(
            parse_model_specs("bicubic"), pairs, ["clean"], generators=generators, lpips_metric=lpips_metric
        )


def _without_sigma(model):  # noqa: ANN001, ANN202
    import dataclasses

    return dataclasses.replace(model, default_sigma=None)


def test_sigma_sweep_writes_plot_and_table(tmp_path: Path, hr_dir: Path, lpips_metric: LPIPSMetric) -> None:
    result = run_tiny(
        hr_dir, lpips_metric, conditions=["clean", "noisy"], sweep_sigmas=[0.0, 0.05], sweep_samples=3
    )
    # The sweep's sigma-0.05 n=3 run is the table's MRS entry: computed once, shared.
    assert len(result.measurements) == 4 + 1  # 4 table rows + tiny-rrdbnet at 0.05
    written = write_sweep(result, tmp_path / "sweep")
    assert {p.name for p in written} == {"sigma_sweep.md", "sigma_sweep.csv", "sigma_sweep.png"}
    assert (tmp_path / "sweep" / "sigma_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "sweep" / "sigma_sweep.md").read_text()
    assert "## tiny-srvgg" in markdown and "## tiny-rrdbnet" in markdown and "bicubic" not in markdown
    with open(tmp_path / "sweep" / "sigma_sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2  # 2 generators x 2 sigmas x 2 conditions
    assert all(math.isfinite(float(r["lpips_alex"])) for r in rows)
    assert write_sweep(run_tiny(hr_dir, lpips_metric, conditions=["clean"]), tmp_path / "none") == []


# ------------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli() -> typer.Typer:
    from certsr_rt.cli.app import guarded
    from certsr_rt.cli.evaluate import evaluate_command

    app = typer.Typer()
    app.command("evaluate")(guarded(evaluate_command))  # as the real app registers it

    @app.callback()
    def _root() -> None:
        """Test app."""

    return app


def test_cli_writes_table_with_every_cell(tmp_path: Path, hr_dir: Path, cli: typer.Typer) -> None:
    # A narrow random VGG16 features file stands in for the ImageNet one: same code path, milliseconds.
    gen = torch.Generator().manual_seed(0)
    state, in_ch = {}, 3
    for i, name in enumerate(vgg_layer_names("vgg16")):
        if name.startswith("conv"):
            state[f"features.{i}.weight"] = torch.randn(4, in_ch, 3, 3, generator=gen) * 0.3
            state[f"features.{i}.bias"] = torch.zeros(4)
            in_ch = 4
    vgg = tmp_path / "vgg.pth"
    torch.save(state, vgg)
    out = tmp_path / "out"
    args = [
        "evaluate",
        "--models",
        "tiny-srvgg,tiny-srvgg@sigma=0.05:n=3",
        "--hr",
        str(hr_dir),
        "--conditions",
        "clean,noisy,blurry,fgsm,bim,pgd,cw",
        "--limit",
        "2",
        "--crop",
        "12",
        "--perceptual-weights",
        str(vgg),
        "--attack-steps",
        "2",
        "--sigma-sweep",
        "0,0.05",
        "--sweep-samples",
        "3",
        "--device",
        "cpu",
        "--no-progress",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in ("results.md", "results.csv", "per_image.csv", "results.json", "sigma_sweep.png"):
        assert (out / name).is_file(), name
    document = json.loads((out / "results.json").read_text())
    assert len(document["summary"]) == 2 * 7
    assert all(cell["psnr"] is not None and cell["lpips"] is not None for cell in document["summary"])
    assert "vgg16" in document["settings"]["attack_loss"]
    assert document["settings"]["conditions"]["bim"].startswith("BIM eps=10/255, 2 steps")
    assert "--crop 12" in document["settings"]["command"]


def test_cli_reports_bad_options_as_certsr_errors(tmp_path: Path, hr_dir: Path, cli: typer.Typer) -> None:
    result = CliRunner().invoke(
        cli, ["evaluate", "-m", "tiny-srvgg", "--hr", str(hr_dir), "-c", "clean,fog", "-o", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "error: unknown condition 'fog'" in result.output
    result = CliRunner().invoke(
        cli, ["evaluate", "-m", "tiny-srvgg@sigma=x", "--hr", str(hr_dir), "-o", str(tmp_path)]
    )
    assert result.exit_code == 1 and "sigma must be a number" in result.output
    result = CliRunner().invoke(cli, ["evaluate", "-m", "tiny-srvgg", "--hr", str(hr_dir)])
    assert result.exit_code == 2  # usage error: -o is required


def test_cli_refuses_a_too_small_image_before_evaluating(
    tmp_path: Path, hr_dir: Path, cli: typer.Typer
) -> None:
    write_png(hr_dir / "tiny.png", np.full((8, 8, 3), 99, np.uint8))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["evaluate", "-m", "tiny-srvgg", "--hr", str(hr_dir), "-c", "clean", "--no-progress", "--strict"]
        + ["-o", str(out)],
    )
    assert result.exit_code == 1
    assert result.output.startswith(
        "error: 1 of 4 evaluation images cannot be used: tiny.png: HR image is 8 x 8"
    )
    assert "expected at least 32 x 32" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_skips_an_unusable_image_with_one_line_and_goes_on(
    tmp_path: Path, hr_dir: Path, cli: typer.Typer
) -> None:
    (hr_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    args = [
        "evaluate",
        "-m",
        "tiny-srvgg",
        "--hr",
        str(hr_dir),
        "-c",
        "clean",
        "--no-progress",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output  # as upscale: the run goes on, the exit code says one failed
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot read {hr_dir / 'broken.png'}: ")
    assert errors[0].endswith("(skipped; --strict stops here)")
    assert "1 of 4 images were skipped" in result.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["images"] == ["img_000", "img_001", "img_002"]
    assert len(document["settings"]["skipped_images"]) == 1


def test_cli_refuses_a_file_as_output_before_evaluating(
    tmp_path: Path, hr_dir: Path, cli: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This used to evaluate everything and then die in write_report with a FileExistsError traceback.
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the evaluation started")

    monkeypatch.setattr("certsr_rt.evaluation.load_generators", must_not_run)
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for output, message in [
        (afile, f"error: -o/--output must be a folder for the report files, got {afile} (an existing file)"),
        (afile / "sub", f"error: -o/--output: cannot create the folder {afile / 'sub'}: {afile} is a file"),
    ]:
        result = CliRunner().invoke(
            cli, ["evaluate", "-m", "tiny-srvgg", "--hr", str(hr_dir), "-c", "clean", "-o", str(output)]
        )
        assert result.exit_code == 1, result.output
        assert result.output.startswith(message) and len(result.output.strip().splitlines()) == 1
    assert afile.read_text() == "keep me"


def test_write_report_refuses_a_file_as_folder(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    empty = runner_module.EvaluationResult(entries=[], sweep=[], conditions=[], images=[])
    with pytest.raises(InputError, match=r"report folder .*afile is an existing file, expected a folder"):
        write_report(empty, afile)


def test_identical_images_get_the_stated_psnr_cap_everywhere(
    tmp_path: Path, hr_dir: Path, lpips_metric: LPIPSMetric
) -> None:
    # Bicubic reproduces a flat image exactly: MSE 0. This used to be inf in results.csv, null in
    # results.json and n/a in results.md, with an infinite mean.
    write_png(hr_dir / "flat.png", np.full((32, 32, 3), 77, np.uint8))
    entries = parse_model_specs("bicubic")
    pairs = [p for p in load_image_pairs(hr_dir) if p.name in ("flat", "img_000")]
    result = evaluate(
        entries, pairs, ["clean"], generators=load_generators(entries, "cpu"), lpips_metric=lpips_metric
    )
    flat, other = (m.psnr for m in result.measurements[entries[0].key])
    assert flat == PSNR_CAP_DB == 100.0 and math.isfinite(other) and other < PSNR_CAP_DB
    mean = (flat + other) / 2
    assert result.cell(entries[0], "clean").psnr == pytest.approx(mean)
    write_report(result, tmp_path / "out")
    with open(tmp_path / "out" / "per_image.csv", newline="") as f:
        assert [r["psnr_y_db"] for r in csv.DictReader(f)][0] == "100.0000"
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["psnr_y_db"]) == pytest.approx(mean, abs=1e-4)
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["per_image"][0]["psnr"] == 100.0
    assert document["summary"][0]["psnr"] == pytest.approx(mean)
    assert "capped at 100 dB per image" in document["settings"]["metrics"]["psnr"]
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert f"| bicubic | {mean:.2f} / " in markdown
    assert "PSNR is capped at 100 dB per image" in markdown
    assert "1 per-image PSNR value reached the 100 dB cap" in markdown
    assert "n/a" not in markdown


def test_split_runs_merge_into_the_table_of_one_run(
    tmp_path: Path, hr_dir: Path, lpips_metric: LPIPSMetric
) -> None:
    """Models x conditions split over three runs, merged by scripts/merge_evaluations.py, equal one run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "merge_evaluations", Path(__file__).resolve().parents[1] / "scripts" / "merge_evaluations.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # type: ignore[union-attr]

    def run(specs: str, conditions: list[str], out: str):  # noqa: ANN202
        entries = parse_model_specs(specs)
        result = evaluate(
            entries,
            load_image_pairs(hr_dir, limit=2, crop=8),
            conditions,
            generators=load_generators(entries, "cpu"),
            attack_loss=SRLoss(None),
            attacks={k: v.replace(steps=2) for k, v in runner_module.EVAL_ATTACKS.items()},
            lpips_metric=lpips_metric,
            seed=1,
        )
        result.settings["command"] = f"run {out}"
        write_report(result, tmp_path / out)
        return result

    whole = run(
        "tiny-srvgg,tiny-srvgg@sigma=0.05:n=3,bicubic", ["clean", "noisy", "pgd", "pgd-median"], "whole"
    )
    run("tiny-srvgg,tiny-srvgg@sigma=0.05:n=3", ["clean", "noisy"], "a")
    run("tiny-srvgg,tiny-srvgg@sigma=0.05:n=3", ["pgd", "pgd-median"], "b")
    run("bicubic", ["pgd-median", "clean", "noisy", "pgd"], "c")
    assert script.main(["-o", str(tmp_path / "merged"), *(str(tmp_path / x) for x in "abc")]) == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    one = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert merged["conditions"] == one["conditions"] and merged["images"] == one["images"]
    assert sorted(merged["summary"], key=str) == sorted(one["summary"], key=str)
    assert sorted(merged["per_image"], key=str) == sorted(one["per_image"], key=str)
    assert merged["settings"]["command"] == ["run a", "run b", "run c"]
    assert render_table(whole) in (tmp_path / "merged" / "results.md").read_text()
    # a row measured in two runs is refused unless one run's copy is dropped
    run("bicubic", ["clean", "noisy"], "c2")
    dropped = ["--drop", f"{tmp_path / 'c2'}=bicubic"]
    parts = [str(tmp_path / x) for x in ("a", "b", "c2", "c")]
    assert script.main(["-o", str(tmp_path / "m2"), *dropped, *parts]) == 0
    assert render_table(whole) in (tmp_path / "m2" / "results.md").read_text()
    bad_drop = ["--drop", f"{tmp_path / 'a'}=nope"]
    assert script.main(["-o", str(tmp_path / "m3"), *bad_drop, str(tmp_path / "a")]) == 1
    assert not (tmp_path / "m3").exists()

    # A run under another seed is not the same protocol: one error line, nothing written.
    entries = parse_model_specs("bicubic")
    other = evaluate(
        entries,
        load_image_pairs(hr_dir, limit=2, crop=8),
        ["clean"],
        generators=load_generators(entries, "cpu"),
        lpips_metric=lpips_metric,
        seed=2,
    )
    write_report(other, tmp_path / "d")
    assert script.main(["-o", str(tmp_path / "bad"), str(tmp_path / "a"), str(tmp_path / "d")]) == 1
    assert not (tmp_path / "bad").exists()
    with pytest.raises(InputError, match="cannot read an evaluation report"):
        read_report(tmp_path / "nothing-here")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "results.json").write_text('{"models": []}')
    with pytest.raises(InputError, match="not an evaluation report"):
        read_report(tmp_path / "e")


def test_cli_progress_without_a_terminal_is_plain_lines_ending_complete(
    tmp_path: Path, hr_dir: Path, cli: typer.Typer
) -> None:
    args = ["evaluate", "-m", "bicubic", "--hr", str(hr_dir), "-c", "clean,noisy", "--limit", "2"]
    result = CliRunner().invoke(cli, [*args, "--crop", "12", "--device", "cpu", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if " · bicubic · " in line]
    # a line for the first cell (nothing was shown yet), then at most one per 30 s, and the last cell
    assert 1 <= len(lines) <= 2 and "\r" not in result.stderr and "\x1b[" not in result.stderr
    assert lines[-1].startswith("img_001 · bicubic · noisy  4/4 (100%)  elapsed ")
    assert "ETA 0:00" in lines[-1]
