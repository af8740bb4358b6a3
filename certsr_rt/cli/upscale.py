"""``certsr-rt upscale``: images (and videos) through one :class:`~certsr_rt.runtime.upscaler.Upscaler`.

The app registers :func:`upscale_command` as ``app.command("upscale")``. Heavy imports (torch, numpy, cv2,
the runtime) happen inside the command so that ``certsr-rt --help`` stays instant.

Behaviour, in the order things happen:

1. Inputs are expanded (files, folders, globs); a missing one is reported and the others go on.
2. An output path is planned for every input (:func:`~certsr_rt.io.images.output_path_for`); an input
   whose output would overwrite an input, or collide with another output, is reported and skipped.
3. The model is loaded and one Upscaler is built for the batch; a vacuous ``--bounds`` request is
   refused here with the smallest ``--samples`` that works.
4. Each input is read, upscaled and written atomically. A bad input gets one ``error:`` line on stderr
   and the batch continues; the exit code is 1 if any input failed.

Ctrl-C stops at once with one line and exit code 130 (SIGTERM: the same, exit code 143); every file
already written is complete and no partial file is left (writes are atomic).
"""

from __future__ import annotations

import logging
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from certsr_rt.errors import CertSRError, InputError, Terminated

if TYPE_CHECKING:
    from certsr_rt.cli.progress import ProgressDisplay
    from certsr_rt.cli.sharding import Shard
    from certsr_rt.runtime.upscaler import Upscaler

__all__ = ["BackendChoice", "DeviceChoice", "PrecisionChoice", "upscale_command"]

_VIDEO_HINT = "video support is not installed: pip install 'certsr-rt[video]'"


class DeviceChoice(str, Enum):
    """Where the model runs."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class BackendChoice(str, Enum):
    """Which inference backend runs the model."""

    torch = "torch"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    auto = "auto"


class PrecisionChoice(str, Enum):
    """Arithmetic precision of the model."""

    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


def _open_unit_interval(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise typer.BadParameter(f"{value:g} is not in the open interval (0, 1).")
    return value


def _width_tolerance(value: str | None) -> float | None:
    """``--radius-map TOL``: a width in [0, 1] image units, written as a number or a fraction ``8/255``."""
    if value is None:
        return None
    text = value.strip()
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            tol = float(top) / float(bottom)
        else:
            tol = float(text)
    except (ValueError, ZeroDivisionError):
        raise typer.BadParameter(f"expected a width like 8/255 or 0.03, got {value!r}") from None
    if not 0.0 < tol < 1.0:
        raise typer.BadParameter(f"expected a width in (0, 1) image units (e.g. 8/255), got {value!r}")
    return tol


def upscale_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT",
            help="Image or video files, folders (their images, not recursive) or glob patterns.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Output file (one input only; its extension picks the format) or folder (ends with /, "
            "exists, or has no extension). Default: NAME_x4.EXT beside each input.",
            show_default=False,
        ),
    ] = None,
    sigma: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Noise std of the smoothing, in [0, 1] image units. Default: the model's recommended sigma.",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            min=1,
            max=100_000,
            help="Noisy copies whose outputs are reduced by the median (1: the plain model).",
        ),
    ] = 21,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=2**31 - 1,
            help="Seed of the noise, to repeat a run exactly. Default: a fresh seed from the OS each run, "
            "printed and recorded in the output's metadata (a public seed voids the certificate: the "
            "smoothed model becomes a fixed function an attacker can differentiate).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            metavar="NAME|PATH",
            help="Registered model name, a .pth/.pt/.safetensors checkpoint, or a file written by "
            "certsr-rt export (.onnx, .engine).",
        ),
    ] = "certsr-compact-x4",  # = models.DEFAULT_MODEL (not imported: --help stays free of torch)
    device: Annotated[
        DeviceChoice, typer.Option(case_sensitive=False, help="Where to run.")
    ] = DeviceChoice.auto,
    tile: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="PX",
            help="Tile size in input pixels (0 = whole image at once); tiles overlap by 16 px (a quarter of "
            "tiles under 64 px, at least the model's floor: 32 for RRDBNet, 8 for the compact model) and are "
            "blended. Tiles under the model's minimum (RRDBNet 96, compact 24) are refused: their output "
            "differs visibly from untiled. Default: 192; on CUDA the whole image when it fits in memory.",
            show_default=False,
        ),
    ] = None,
    bounds: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            metavar="EPS",
            help="Also write certified lower/upper images (NAME_x4_lower/_upper) and print a summary: at "
            "each pixel and channel, with probability >= 1 - alpha over the noise (which must stay "
            "secret: see --seed), they bracket the smoothed model's population median at x + delta (not "
            "the written n-sample image) for every delta of L2 norm below EPS, measured over the whole "
            "input in [0, 1] units.",
            show_default=False,
        ),
    ] = None,
    alpha: Annotated[
        float,
        typer.Option(
            callback=_open_unit_interval,
            help="Failure probability of the certified bounds and radius map, per pixel (where tiles are "
            "blended, alpha/m per tile for m tiles: union bound).",
        ),
    ] = 0.05,
    backend: Annotated[
        BackendChoice | None,
        typer.Option(
            case_sensitive=False,
            help="Inference backend. Default: on CPU onnxruntime when installed (the model is exported "
            "once into the cache; torch if that fails), else torch; onnxruntime for an .onnx --model, "
            "tensorrt for an .engine.",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        PrecisionChoice, typer.Option(case_sensitive=False, help="Model precision (half precisions on CUDA).")
    ] = PrecisionChoice.auto,
    fresh_noise: Annotated[
        bool,
        typer.Option(
            "--fresh-noise",
            help="Videos: draw new noise for every frame. Default: the same noise field for every frame, "
            "so static regions do not flicker.",
        ),
    ] = False,
    radius_map: Annotated[
        str | None,
        typer.Option(
            "--radius-map",
            metavar="TOL",
            help="Also write a certified-radius map: per output pixel, the largest input perturbation "
            "(L2 norm over the whole input, [0, 1] units) for which the certified interval of the "
            "smoothed model's population median is at most TOL wide in every channel (TOL: a width in "
            "[0, 1] units, e.g. 8/255), as NAME_x4_radius.png (16-bit, value = eps x 10000) and "
            "NAME_x4_radius_color.png (colour scale from 0 to the largest certifiable eps), and print its "
            "median and the fraction of pixels certified at --bounds EPS (or at half the largest eps).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no informational lines; errors only.")
    ] = False,
) -> None:
    """Upscale images 4x with median randomized smoothing (and videos, with certsr-rt[video])."""
    from rich.console import Console

    from certsr_rt.cli.sharding import join_shard

    stderr_console = Console(stderr=True, soft_wrap=True, highlight=False)
    # Under torchrun: this rank's share of the inputs and its device; notes and progress from rank 0 only.
    shard, device_name = join_shard(device.value)
    log_handler = _EchoHandler(quiet or not shard.is_main)
    pkg_logger = logging.getLogger("certsr_rt")
    saved_propagate, saved_level = pkg_logger.propagate, pkg_logger.level
    pkg_logger.addHandler(log_handler)
    pkg_logger.propagate = False
    pkg_logger.setLevel(log_handler.level)
    run = _Run(quiet=quiet or not shard.is_main, fresh_noise=fresh_noise, shard=shard)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            run.main(
                inputs,
                output,
                sigma=sigma,
                samples=samples,
                seed=seed,
                model=model,
                device=device_name,
                tile=tile,
                bounds=bounds,
                alpha=alpha,
                backend=None if backend is None else backend.value,
                precision=precision.value,
                console=stderr_console,
                radius_tol=_width_tolerance(radius_map),
            )
            run.conclude()
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        _err(
            f"{'terminated' if terminated else 'interrupted'} after {run.finished} of {run.total} inputs; "
            "files already written are complete and no partial output was left behind"
        )
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        shard.close()
        pkg_logger.removeHandler(log_handler)
        pkg_logger.propagate = saved_propagate
        pkg_logger.setLevel(saved_level)
    if run.exit_code:
        raise typer.Exit(run.exit_code)


# ----------------------------------------------------------------------------------------------- output


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    _err(f"warning: {message}")


class _EchoHandler(logging.Handler):
    """Our library's log records as one line each on stderr: info as is (unless quiet), ``warning: ...``."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(level=logging.WARNING if quiet else logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        _err(f"warning: {message}" if record.levelno >= logging.WARNING else message)


def _input_error_line(exc: CertSRError, source: Path) -> str:
    """``error: ...`` naming the input (our reader's messages already do)."""
    message = str(exc)
    if str(source) not in message:
        message = f"{source}: {message}"
    return f"error: {message}"


def _radius_paths(target: Path) -> tuple[Path, Path]:
    """Where the radius map of ``target`` goes: ``NAME_x4_radius.png`` and ``NAME_x4_radius_color.png``."""
    from certsr_rt.io.images import companion_path

    return (
        companion_path(target, "_radius").with_suffix(".png"),
        companion_path(target, "_radius_color").with_suffix(".png"),
    )


RADIUS_PNG_SCALE = 10_000
"""``NAME_x4_radius.png`` stores ``floor(eps * RADIUS_PNG_SCALE)`` in 16 bits (eps in steps of 1e-4)."""


def _write_radius_map(target: Path, radius: Any, summary: Any, provenance: dict[str, Any]) -> list[Path]:
    """Write the 16-bit radius PNG and its colour-mapped view; returns the paths written."""
    import cv2
    import numpy as np

    from certsr_rt.io.images import write_image

    values = np.asarray(radius, dtype=np.float64)
    # floor: the stored value never claims more than was certified.
    coded = np.clip(np.floor(values * RADIUS_PNG_SCALE), 0, 65535).astype(np.uint16)
    top = summary.max_eps
    record = {
        **provenance,
        "output": "certified radius map",
        "radius_tol": summary.tol,
        "radius_alpha": summary.schedule.alpha,
        "radius_png_scale": RADIUS_PNG_SCALE,
        "radius_max_eps": top,
    }
    scaled = np.clip(np.rint(values / top * 255.0), 0, 255) if top > 0 else np.zeros_like(values)
    colour = cv2.applyColorMap(scaled.astype(np.uint8), cv2.COLORMAP_VIRIDIS)[:, :, ::-1]
    coded_path, colour_path = _radius_paths(target)
    written = [write_image(coded_path, coded, provenance=record)]
    written.append(write_image(colour_path, np.ascontiguousarray(colour), provenance=record))
    return written


# --------------------------------------------------------------------------------------------- progress


_LINE_SECONDS = 30.0
"""Without a terminal, the shortest time between two progress lines."""


class _BatchProgress:
    """The batch's work, across inputs, fed by the Upscaler's ``progress(done, total)`` per tile and chunk.

    Each image counts the Upscaler's work units (tiles x sample chunks); images not read yet are counted
    at the average of those seen so far, so the total (and the ETA) firms up as the batch goes. It is
    drawn on a :class:`~certsr_rt.cli.progress.ProgressDisplay`: the batch bar on a terminal; in a log one
    line per input with its work, then the input's share at most every :data:`_LINE_SECONDS`.
    """

    def __init__(self, display: ProgressDisplay, n_inputs: int) -> None:
        self.display = display
        self.current = ""
        self.remaining = n_inputs
        self.known: list[int] = []
        self.base = 0
        self.units = 1
        self.in_video = False

    def _update(self, completed: float, description: str | None = None) -> None:
        share = min(max(completed - self.base, 0) / self.units, 1.0) if self.units else 0.0
        average = sum(self.known) / len(self.known) if self.known else 1.0
        total = sum(self.known) + average * self.remaining
        self.display.update(
            completed, max(total, completed, 1e-9), description=description, status=f"{share:.0%}"
        )

    def start(
        self,
        index: int,
        n_inputs: int,
        name: str,
        units: int | None,
        video: bool = False,
        *,
        detail: str | None = None,
    ) -> None:
        """A new input begins; ``units`` is its work (None: unknown, counted at the average)."""
        self.current = f"{index}/{n_inputs} {name}"
        if self.display.plain:
            self.display.print(f"{self.current}{f': {detail}' if detail else ''}")
        self.remaining -= 1
        self.base = sum(self.known)
        if units is None:
            units = max(1, round(sum(self.known) / len(self.known))) if self.known else 1
        self.units = units
        self.known.append(units)
        self.in_video = video
        self._update(self.base, f"{index}/{n_inputs} {name}")

    def skip(self) -> None:
        """An input failed before its work was known."""
        self.remaining -= 1
        self._update(sum(self.known))

    def on_tile(self, done: int, total: int) -> None:
        """The Upscaler's callback: ``done`` of ``total`` steps of the current image."""
        if not self.in_video:
            self._update(self.base + self.units * min(done / max(total, 1), 1.0))

    def on_frames(self, done: int, total: int | None) -> None:
        """A video's callback: ``done`` of ``total`` frames (``total`` may be unknown)."""
        if total:
            self._update(self.base + self.units * min(done / total, 1.0))

    def finish(self) -> None:
        """The current input is done (written or failed)."""
        self._update(self.base + self.units)


# ---------------------------------------------------------------------------------------------- the run


class _Run:
    """State of one ``upscale`` invocation (counts survive a Ctrl-C for the final line)."""

    def __init__(self, quiet: bool, fresh_noise: bool = False, shard: Shard | None = None) -> None:
        from certsr_rt.cli.sharding import Shard

        self.quiet = quiet
        self.fresh_noise = fresh_noise
        self.shard = shard if shard is not None else Shard()
        # Listing and planning: every rank of a sharded run sees the same problems; rank 0 reports them.
        self.shared_phase = True
        self.ran_batch = False
        self.total = 0
        self.finished = 0
        self.written = 0
        self.failed = 0
        self.exit_code = 0
        self.started = time.time()

    def info(self, message: str) -> None:
        if not self.quiet:
            _err(message)

    def fail(self, line: str) -> None:
        if self.shared_phase and not self.shard.is_main:
            return  # rank 0 reports (and counts) what every rank sees
        self.failed += 1
        _err(line)

    def conclude(self) -> None:
        """The failure summary and exit code, over all ranks of a sharded run (one process: this one)."""
        failed = self.shard.sum(self.failed)
        written = self.shard.sum(self.written)
        code = self.shard.max(self.exit_code or (1 if self.failed else 0))
        if self.shard.enabled:
            self.info(f"{self.shard.world_size} processes wrote {written} of {self.total} inputs")
        if self.ran_batch and failed and self.total > 1 and self.shard.is_main:
            _err(f"{failed} of {self.total} inputs failed")
        self.shard.sync()
        self.exit_code = code

    def main(
        self,
        patterns: list[str],
        output: str | None,
        *,
        sigma: float | None,
        samples: int,
        seed: int | None,
        model: str,
        device: str,
        tile: int | None,
        bounds: float | None,
        alpha: float,
        backend: str | None,
        precision: str,
        console: Any,
        radius_tol: float | None = None,
    ) -> None:
        from certsr_rt.io.images import expand_inputs, is_own_output, output_is_directory

        # 1. inputs: every pattern on its own, so that one missing file does not stop the others. A folder
        # or glob leaves out this tool's own outputs (NAME_x4*, or carrying its metadata), so that a
        # re-run does not upscale them again; a file named explicitly is always taken.
        files: list[Path] = []
        seen: set[Path] = set()
        own_outputs: list[Path] = []
        for pattern in patterns:
            try:
                explicit = Path(pattern).expanduser().is_file()
                for f in expand_inputs([pattern]):
                    if f.resolve() in seen:
                        continue
                    seen.add(f.resolve())
                    if not explicit and is_own_output(f):
                        own_outputs.append(f)
                    else:
                        files.append(f)
            except CertSRError as exc:
                self.fail(f"error: {exc}")
        if own_outputs:
            self.info(
                f"skipping {len(own_outputs)} file(s) that are certsr-rt outputs (e.g. {own_outputs[0]}); "
                "name a file explicitly to upscale it"
            )
        self.total = len(files) + self.failed
        if not files and not self.failed:
            self.info("nothing to upscale: every input found is a certsr-rt output")
            return
        try:
            output_is_directory(output, len(files))
        except InputError as exc:
            if self.shard.is_main:
                _err(f"error: {exc}")
            self.exit_code = 2
            return

        # 2. outputs: planned, their folders checked writable and cleared of what a killed run left,
        # all before the model is loaded
        plan = self._plan(files, output, bounds is not None, radius_tol is not None)
        plan = self._check_folders(plan)
        if not plan:
            self.exit_code = 1
            return

        # 3. the Upscaler (model errors, option errors and vacuous bounds end the run here). Sharded: rank
        # 0 builds first (a one-time export lands in the cache once) and sends its seed, so every rank
        # smooths with the same noise; the others then build theirs, or stop when rank 0 could not.
        self.shared_phase = False
        plan = self.shard.mine(plan)
        options: dict[str, Any] = dict(
            sigma=sigma,
            samples=samples,
            seed=seed,
            device=device,
            tile=tile,
            bounds=bounds,
            alpha=alpha,
            backend=backend,
            precision=precision,
            radius_tol=radius_tol,
        )
        upscaler = None
        try:
            if self.shard.is_main:
                upscaler = self._build_upscaler(model, **options)
            if self.shard.enabled:
                sent = self.shard.broadcast(-1 if upscaler is None else upscaler.smoothing.seed)
                if not self.shard.is_main and sent >= 0:
                    upscaler = self._build_upscaler(model, **{**options, "seed": sent})
        except CertSRError as exc:
            _err(f"error: {exc}" if self.shard.is_main else f"error: rank {self.shard.rank}: {exc}")
        if upscaler is None:
            self.exit_code = 1
            return
        self.ran_batch = True

        # 4. the batch
        from certsr_rt.cli.progress import ProgressDisplay

        display = ProgressDisplay(
            "starting",
            enabled=not self.quiet,
            console=console,
            line=lambda s: f"  {s.description}: {s.status}",
            line_seconds=_LINE_SECONDS,
            line_at_end=False,  # each input ends with its "wrote ..." line
            count=False,
            transient=True,
        )
        tracker = _BatchProgress(display, len(plan))
        try:
            for index, (source, target) in enumerate(plan, 1):
                try:
                    self._one(
                        index, len(plan), source, target, upscaler, tracker, bounds is not None, radius_tol
                    )
                    self.written += 1
                except CertSRError as exc:
                    self.fail(_input_error_line(exc, source))
                tracker.finish()
                self.finished += 1
        finally:
            display.close()
            upscaler.close()

    def _check_folders(self, plan: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
        """Check the output folders before any compute; clear what a killed earlier run left there.

        Inputs whose output folder cannot be written are dropped, with one line per folder. Hidden
        temporary files of this run's outputs, older than the run, are removed, each with one line.
        """
        from certsr_rt.io.atomic import stale_partial_files
        from certsr_rt.io.images import check_writable

        blocked: dict[Path, str] = {}
        for folder in dict.fromkeys(target.parent for _, target in plan):
            try:
                check_writable(folder)
            except CertSRError as exc:
                blocked[folder] = str(exc)
        kept = []
        for source, target in plan:
            if target.parent in blocked:
                self.failed += 1
                continue
            kept.append((source, target))
            for stale in stale_partial_files(target, older_than=self.started):
                try:
                    stale.unlink()
                except OSError as exc:
                    _err(f"warning: cannot remove {stale}, left by an interrupted run: {exc.strerror or exc}")
                else:
                    self.info(f"removed {stale}, a partial file left by an interrupted run")
        for folder, message in blocked.items():
            n = sum(1 for _, target in plan if target.parent == folder)
            _err(f"error: {message} ({n} input(s) not upscaled)")
        return kept

    def _plan(
        self, files: list[Path], output: str | None, with_bounds: bool, with_radius: bool = False
    ) -> list[tuple[Path, Path]]:
        from certsr_rt.io.images import VIDEO_EXTENSIONS, check_not_input, companion_path, output_path_for

        claimed: dict[Path, Path] = {}
        plan: list[tuple[Path, Path]] = []
        for source in files:
            try:
                target = output_path_for(source, output, len(files), inputs=files)
                written = [target]
                if with_bounds and source.suffix.lower() not in VIDEO_EXTENSIONS:
                    written += [companion_path(target, "_lower"), companion_path(target, "_upper")]
                if with_radius and source.suffix.lower() not in VIDEO_EXTENSIONS:
                    written += list(_radius_paths(target))
                for path in written[1:]:
                    check_not_input(path, files)
                for path in written:
                    other = claimed.get(path.resolve())
                    if other is not None:
                        raise InputError(
                            f"{source}: its output {path} is also the output of {other}; "
                            "give the inputs distinct names or separate runs"
                        )
            except CertSRError as exc:
                self.fail(_input_error_line(exc, source))
                continue
            for path in written:
                claimed[path.resolve()] = source
            plan.append((source, target))
        return plan

    def _build_upscaler(
        self,
        model_name: str,
        *,
        sigma: float | None,
        samples: int,
        seed: int | None,
        device: str,
        tile: int | None,
        bounds: float | None,
        alpha: float,
        backend: str | None,
        precision: str,
        radius_tol: float | None = None,
    ) -> Upscaler:
        from certsr_rt.export.exported import is_exported_path
        from certsr_rt.runtime.backends import default_backend
        from certsr_rt.runtime.upscaler import Upscaler
        from certsr_rt.smoothing.certify import BoundsConfig, RadiusMapConfig
        from certsr_rt.smoothing.config import SmoothingConfig

        if backend is None and not is_exported_path(model_name):
            backend = default_backend(device)  # onnxruntime on CPU when installed, else torch
        smoothing = SmoothingConfig(sigma=sigma, samples=samples, seed=seed)
        # A vacuous --bounds request is refused by the Upscaler with the number of samples it would need.
        bounds_config = None if bounds is None else BoundsConfig(eps=bounds, alpha=alpha)
        upscaler = Upscaler(
            model_name,
            smoothing,
            device=device,
            backend=backend,
            precision=precision,
            tile=tile,
            bounds=bounds_config,
            radius=None if radius_tol is None else RadiusMapConfig(tol=radius_tol, alpha=alpha),
        )
        if upscaler.is_plain:
            self.info("plain model: no smoothing noise (sigma 0 or --samples 1)")
        elif upscaler.sigma_is_model_default:
            where = (
                "model default"
                if upscaler.model.default_sigma is not None
                else "conservative default: the model records none"
            )
            self.info(f"sigma {upscaler.smoothing.sigma:g} ({where}; override with --sigma)")
        if not upscaler.is_plain:
            chosen = upscaler.smoothing.seed
            how = "given"
            if smoothing.seed_drawn:
                how = f"drawn from the OS; repeat this run with --seed {chosen}"
            self.info(f"seed {chosen} ({how}; recorded in the output's metadata)")
        self.info(f"upscaling with {upscaler.describe()}")
        return upscaler

    def _one(
        self,
        index: int,
        n_inputs: int,
        source: Path,
        target: Path,
        upscaler: Upscaler,
        tracker: _BatchProgress,
        with_bounds: bool,
        radius_tol: float | None = None,
    ) -> None:
        from certsr_rt.io.images import (
            VIDEO_EXTENSIONS,
            check_image_size,
            companion_path,
            describe_image,
            read_image,
            write_image,
        )

        if source.suffix.lower() in VIDEO_EXTENSIONS:
            if radius_tol is not None:
                _err(f"warning: {source}: --radius-map applies to images only; no radius map is written")
            self._video(index, n_inputs, source, target, upscaler, tracker, with_bounds)
            return
        try:
            image = read_image(source)
        except CertSRError:
            tracker.skip()
            raise
        height, width = image.shape[:2]
        check_image_size(height, width, upscaler.scale, name=source)
        units, detail = upscaler.describe_work(height, width)
        tracker.start(index, n_inputs, source.name, units, detail=detail)
        result = upscaler.upscale(image, progress=tracker.on_tile)
        provenance = upscaler.provenance()
        write_image(target, result.image, provenance=provenance)
        self.info(f"wrote {target} ({describe_image(result.image)})")
        if with_bounds and result.lower is not None and result.upper is not None:
            for tag, bound in (("_lower", result.lower), ("_upper", result.upper)):
                record = {**provenance, "output": tag[1:] + " bound"}
                path = write_image(companion_path(target, tag), bound, provenance=record)
                self.info(f"wrote {path}")
        if with_bounds and result.summary is not None:
            typer.echo(f"{source}: {result.summary.format()}")
        if result.radius is not None and result.radius_summary is not None:
            for path in _write_radius_map(target, result.radius, result.radius_summary, provenance):
                self.info(f"wrote {path}")
            typer.echo(f"{source}: {result.radius_summary.format()}")

    def _video(
        self,
        index: int,
        n_inputs: int,
        source: Path,
        target: Path,
        upscaler: Upscaler,
        tracker: _BatchProgress,
        with_bounds: bool,
    ) -> None:
        try:
            from certsr_rt.cli.upscale_video import run_video
        except CertSRError:
            tracker.skip()
            raise
        except ImportError as exc:
            tracker.skip()
            if exc.name is None or exc.name == "av" or exc.name.startswith("certsr_rt"):
                raise CertSRError(f"cannot upscale {source}: {_VIDEO_HINT}") from exc
            raise
        if with_bounds:
            _err(f"warning: {source}: --bounds applies to images only; no bound videos are written")
        tracker.start(index, n_inputs, source.name, None, video=True)
        # The video module prints its own "wrote ..." summary (frames, fps, codec, audio) unless quiet.
        run_video(
            source,
            target,
            upscaler,
            fresh_noise=self.fresh_noise,
            progress=tracker.on_frames,
            quiet=self.quiet,
        )
