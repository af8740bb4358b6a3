"""The Upscaler: median randomized smoothing over any backend, tiled, for numpy images and torch tensors.

Build it once, call it on many images (a photo batch or the frames of a video)::

    from certsr_rt import Upscaler, SmoothingConfig

    up = Upscaler("realesrgan-x4plus", SmoothingConfig(sigma=0.03, samples=21), device="auto")
    big = up(rgb_uint8_array)          # H x W x 3 uint8 -> 4H x 4W x 3 uint8
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch

from certsr_rt._device import resolve_device
from certsr_rt.errors import BackendError, Cancelled, InputError, first_line
from certsr_rt.models.arch import bytes_per_lr_pixel
from certsr_rt.models.registry import DEFAULT_MODEL
from certsr_rt.runtime.backends.base import Backend
from certsr_rt.runtime.tiling import (
    Tile,
    blend_weights,
    make_tiles,
    max_coverage,
    resolve_overlap,
    tile_limits,
)
from certsr_rt.smoothing.config import SmoothingConfig
from certsr_rt.smoothing.noise import gaussian_field

if TYPE_CHECKING:
    from certsr_rt.export.exported import ExportedModel
    from certsr_rt.models.descriptor import SRModel
    from certsr_rt.smoothing.certify import (
        BoundsConfig,
        BoundsSummary,
        CertifiedRanks,
        RadiusMapConfig,
        RadiusSchedule,
        RadiusSummary,
    )

log = logging.getLogger(__name__)

CONSERVATIVE_SIGMA = 0.01
"""Sigma used for a checkpoint that does not carry a recommended one (see README: choosing sigma)."""

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: backend calls done so far in this call, and in all."""
CancelCheck = Callable[[], bool]
"""``cancel()``: True stops the upscale (:class:`~certsr_rt.errors.Cancelled`); e.g. ``event.is_set``."""

# CPU convolutions lose efficiency once a batch's activations leave the cache: RRDBNet at 64x64 LR costs
# 0.95 s/sample in batches of 1-5 but 1.33 s/sample in one batch of 21 (benchmarks/results/cost_cpu.md).
# 256 MiB keeps RRDBNet batches near 20k LR pixels.
_CPU_BATCH_BUDGET = 256 * 1024**2
# Backend calls per upscale call on a CPU at least (one image, n = 21: 7 calls of 3), so the progress bar
# moves in small steps.
_CPU_PROGRESS_STEPS = 7
_NOISE_CACHE_BYTES = 512 * 1024**2
_DEFAULT_TILE_OVERLAP = 16
_DEFAULT_TILE = 192
# The backend that runs an exported file when none is named.
_DEFAULT_BACKEND = {"onnx": "onnxruntime", "engine": "tensorrt"}
_UNKNOWN = object()  # "not measured yet": the memory available is measured once per call


@dataclass
class UpscaleResult:
    """What :meth:`Upscaler.upscale` returns.

    Attributes:
        image: the smoothed upscaled image, of the same kind as the input.
        lower: per-pixel certified lower bound image (same kind), when bounds were requested.
        upper: per-pixel certified upper bound image (same kind), when bounds were requested.
        summary: per-image summary of the bounds, when bounds were requested.
        radius: per-output-pixel certified radius (float32, ``4H x 4W``; numpy for numpy input, a tensor
            ``N x 4H x 4W`` or ``4H x 4W`` for torch input), when a radius map was requested.
        radius_summary: summary of the radius map (of the last image of a batch).
    """

    image: Any
    lower: Any = None
    upper: Any = None
    summary: BoundsSummary | None = None
    radius: Any = None
    radius_summary: RadiusSummary | None = None


@dataclass(frozen=True)
class _Plan:
    """How one call's images go through the backend, decided once per call (see :meth:`Upscaler._plan`).

    Attributes:
        tiles: the tiles of each image (the images of one call have one size).
        union: the most tiles covering a pixel (the union bound's m).
        chunks: the sample counts of one (tile, image) pair's backend calls, or ``(n,)`` when whole pairs
            are grouped into one call.
        pairs: (tile, image) pairs per backend call, each with all n samples (1 when chunks split a pair).
        images: images smoothed in one pass (their full-size buffers are alive together).
        steps: backend calls of the whole call (the ``progress`` total).
    """

    tiles: list[Tile]
    union: int
    chunks: tuple[int, ...]
    pairs: int
    images: int
    steps: int


class _Steps:
    """The progress counter of one call, and its cancellation check before each backend call."""

    def __init__(self, total: int, progress: ProgressCallback | None, cancel: CancelCheck | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress
        self.cancel = cancel

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"the upscale was cancelled after {self.done} of {self.total} steps")

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _split_samples(n: int, cap: int, hard_cap: int | None) -> tuple[int, ...]:
    """Chunks of at most ``cap`` samples covering ``n``, without a last chunk of 1 where avoidable.

    A CPU convolution on a batch of one rounds differently from the same input in a larger batch; with
    no batch of one (unless ``cap`` or the hard cap is 1) an image gives the same bits whether it is
    upscaled alone or with others. ``hard_cap`` (``chunk_size``, the backend's ``max_batch``) is never
    exceeded; the soft ``cap`` (a memory or progress budget) may be by one sample.
    """
    sizes = [cap] * (n // cap) + ([n % cap] if n % cap else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        if cap >= 3:
            sizes[-2:] = [cap - 1, 2]
        elif hard_cap is None or hard_cap >= 3:
            sizes[-2:] = [sizes[-2] + 1]
    return tuple(sizes)


def _available_memory(device: torch.device) -> int | None:
    """Bytes that can be allocated now on ``device`` (CUDA: free + cached by torch), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def _is_allocation_failure(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text


class Upscaler:
    """Median-smoothed super-resolution: ``median_i f(x + g_i)``, ``g_i ~ N(0, sigma^2 I)``, tiled.

    Args:
        model: an :class:`~certsr_rt.models.SRModel`, a registered model name, a checkpoint path, or an
            exported model (a certsr-rt ``.onnx`` file or TensorRT ``.engine``, by path or as an
            :class:`~certsr_rt.export.exported.ExportedModel`).
        smoothing: sigma, samples, seed, chunk size. ``sigma=None`` takes the model's recommended sigma
            (or :data:`CONSERVATIVE_SIGMA` for a checkpoint without one); ``seed=None`` (and no
            ``smoothing`` at all) draws a fresh seed from the OS, recorded in :meth:`provenance`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        backend: a backend name (``torch``, ``onnxruntime``, ``tensorrt``, ``auto``) or a ready
            :class:`~certsr_rt.runtime.backends.base.Backend`. ``None``: ``torch`` for a model or
            checkpoint, ``onnxruntime`` for an ``.onnx`` file, ``tensorrt`` for an ``.engine``.
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (half precisions on CUDA only).
        tile: tile size in LR pixels; ``0`` processes the whole image at once. ``None`` (the default): 192,
            except on CUDA, where an image whose whole-image memory estimate fits (:meth:`_check_memory`)
            is processed at once: no seams, and none of the pixels tiles compute twice (up to 71 % more at
            192 px with a 16 px overlap).
        tile_overlap: overlap of neighbouring tiles in LR pixels, blended linearly; ``None``: 16, or a
            quarter of the tile for tiles under 64 pixels, raised to the model's floor (RRDBNet 32,
            SRVGGNetCompact 8: :func:`~certsr_rt.models.arch.tile_limits`, measured per architecture). A
            tile under the model's minimum (RRDBNet 96, SRVGGNetCompact 24) or an overlap under its floor
            is an ``InputError``.
        bounds: compute certified per-pixel bounds (Lemma 4.1) for perturbations with ``||delta||_2 < eps``.
            Where tiles are blended, a pixel covered by up to m tiles is bracketed by the blend of the
            tiles' bounds, each taken at alpha/m (union bound), m being the most tiles covering any pixel
            of the image, so every pixel's statement holds with probability >= 1 - alpha.
        radius: compute a certified-radius map (see :func:`certsr_rt.smoothing.certify.certified_radius`):
            per output pixel, the largest eps whose certified interval is at most ``radius.tol`` wide in
            every channel. The n sorted samples of one tile are kept at a time (as for the median), so
            memory is bounded by the tile size: use a smaller ``tile`` for very large n. Blended pixels
            take the smallest radius of their tiles, at alpha/m as for ``bounds``.

    Raises:
        InputError: bad option values, or certified bounds that are vacuous at this number of samples.
    """

    def __init__(
        self,
        model: SRModel | ExportedModel | str | Path = DEFAULT_MODEL,
        smoothing: SmoothingConfig | None = None,
        *,
        device: str | torch.device = "auto",
        backend: str | Backend | None = None,
        precision: str = "auto",
        tile: int | None = None,
        tile_overlap: int | None = None,
        bounds: BoundsConfig | None = None,
        radius: RadiusMapConfig | None = None,
    ) -> None:
        self.auto_tile = tile is None
        if tile is None:
            tile = _DEFAULT_TILE
        if tile < 0:
            raise InputError(f"tile must be 0 (no tiling) or a positive size in pixels, got {tile}")
        if tile_overlap is not None and (tile_overlap < 0 or (0 < tile <= tile_overlap)):
            raise InputError(f"tile must be 0 or larger than tile_overlap ({tile_overlap}), got {tile}")
        self.device = resolve_device(device)
        if isinstance(model, (str, Path)):
            from certsr_rt.export.exported import describe_exported, is_exported_path

            if is_exported_path(model):
                model = describe_exported(model)
            else:
                from certsr_rt.models import load_model

                model = load_model(model)
        self.model: SRModel | ExportedModel = model
        # Tiles smaller than the network's context are refused; the overlap has the architecture's floor.
        hyperparameters = getattr(self.model, "hyperparameters", None)
        tile_overlap = resolve_overlap(
            self.model.architecture, hyperparameters, tile, tile_overlap, _DEFAULT_TILE_OVERLAP
        )
        self._min_tile = tile_limits(self.model.architecture, hyperparameters).min_tile
        if 0 < tile <= tile_overlap:
            raise InputError(f"tile must be 0 or larger than tile_overlap ({tile_overlap}), got {tile}")
        default_sigma = self.model.default_sigma
        self.sigma_is_model_default = smoothing is None or smoothing.sigma is None
        self.smoothing = (smoothing or SmoothingConfig()).resolved(
            CONSERVATIVE_SIGMA if default_sigma is None else default_sigma
        )
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.scale = self.model.scale
        # Noise of the last image's (key, tile, chunk)s: a video with a fixed noise field reuses it every
        # frame instead of regenerating it. Bounded by _NOISE_CACHE_BYTES; cleared when the key changes.
        self._noise_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self._noise_cache_bytes = 0
        self._finite: torch.Tensor | None = None  # the current image's samples are all finite (device)

        self.ranks: CertifiedRanks | None = None
        self.bounds = bounds
        if bounds is not None:
            from certsr_rt.smoothing.certify import certified_ranks, vacuity_message

            if self.smoothing.sigma <= 0:
                raise InputError("certified bounds need sigma > 0, got sigma 0")
            self.ranks = certified_ranks(
                self.smoothing.samples, bounds.eps, self.smoothing.sigma, bounds.alpha
            )
            if self.ranks.vacuous:
                raise InputError(vacuity_message(self.ranks))
        # Ranks and radius schedules by the number of blended tiles (the union bound's m).
        self._ranks_by_union: dict[int, CertifiedRanks] = {}
        self._schedules: dict[int, RadiusSchedule] = {}
        self.radius = radius
        if radius is not None:
            from certsr_rt.smoothing.certify import max_certified_eps

            if self.smoothing.sigma <= 0 or self.samples == 1:
                raise InputError("a certified-radius map needs smoothing: sigma > 0 and --samples > 1")
            if max_certified_eps(self.samples, self.smoothing.sigma, radius.alpha) is None:
                raise InputError(
                    f"no radius can be certified with n={self.samples} samples at alpha={radius.alpha:g} "
                    "(the interval for the median itself is vacuous); use more samples"
                )

        if isinstance(backend, Backend):
            self.backend = backend
        else:
            from certsr_rt.export.exported import ExportedModel
            from certsr_rt.runtime.backends import create_backend

            exported = isinstance(self.model, ExportedModel)
            if backend is None:
                backend = _DEFAULT_BACKEND[self.model.kind] if exported else "torch"
            self.backend = create_backend(backend, self.model, self.device, precision)
        self.backend.activate()

    # ------------------------------------------------------------------ public calls
    @property
    def samples(self) -> int:
        """Number of forward passes per pixel: 1 when sigma is 0 (all copies would be identical)."""
        return 1 if self.smoothing.sigma == 0 else self.smoothing.samples

    @property
    def is_plain(self) -> bool:
        """Whether this runs the plain model: sigma 0 or a single sample (no noise is added then)."""
        return self.samples == 1

    def provenance(self) -> dict[str, Any]:
        """The record outputs carry so the run can be repeated (see :func:`certsr_rt.io.images.write_image`).

        Returns:
            ``{"tool", "version", "model", "sigma", "samples", "seed", "tile", "tile_overlap", "backend",
            "precision"}``: with the same input and these settings the output is reproduced exactly.
        """
        from certsr_rt import __version__

        return {
            "tool": "certsr-rt",
            "version": __version__,
            "model": self.model.name,
            "sigma": self.smoothing.sigma,
            "samples": self.samples,
            "seed": self.smoothing.seed,
            "tile": self.tile,
            "tile_overlap": self.tile_overlap,
            "backend": self.backend.name,
            "precision": self.backend.precision,
        }

    def work_units(self, height: int, width: int, count: int = 1) -> int:
        """How many ``progress`` steps (backend calls) ``count`` images of ``height x width`` take at once."""
        return self._plan(height, width, self.model.in_channels, count, strict=False).steps

    def describe_work(self, height: int, width: int) -> tuple[int, str]:
        """``(work_units, line)`` of one ``height x width`` image, from one plan.

        The line reads e.g. ``4 tiles x 21 samples = 84 forward passes in 28 steps``.
        """
        plan = self._plan(height, width, self.model.in_channels, 1, strict=False)
        n = self.samples
        tiles = len(plan.tiles)
        what = "1 tile" if tiles == 1 else f"{tiles} tiles"
        out_mp = height * width * self.scale**2 / 1e6
        return plan.steps, (
            f"{width}x{height} -> {out_mp:.2f} MP: {what} x {n} sample{'s' if n > 1 else ''} = "
            f"{tiles * n} forward passes in {plan.steps} steps"
        )

    def describe(self) -> str:
        """One line for the start of a run: model, where it runs, n, sigma, seed and tiling."""
        m, s = self.model, self.smoothing
        tiling = "whole image" if self.tile == 0 else f"tiles {self.tile} px (overlap {self.tile_overlap})"
        if self.auto_tile and self.device.type == "cuda":
            tiling = f"the whole image where it fits in memory, else {tiling}"
        noise = f"n={self.samples}, sigma {s.sigma:g}, seed {s.seed}"
        if self.is_plain:
            noise = "no noise (plain model)"
        return (
            f"{m.name} ({m.architecture} x{m.scale}) on {self.device}, {self.backend.name} "
            f"{self.backend.precision}: {noise}, {tiling}"
        )

    @overload
    def __call__(
        self,
        images: np.ndarray | torch.Tensor,
        *,
        noise_key: int = 0,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> np.ndarray | torch.Tensor: ...

    @overload
    def __call__(
        self,
        images: Sequence[np.ndarray],
        *,
        noise_key: int = 0,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> list[np.ndarray]: ...

    def __call__(
        self,
        images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
        *,
        noise_key: int = 0,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> np.ndarray | torch.Tensor | list[np.ndarray]:
        """Upscale an image, a tensor batch or a list of images (see :meth:`upscale`); only the images."""
        result = self.upscale(images, noise_key=noise_key, progress=progress, cancel=cancel)
        if isinstance(result, list):
            return [r.image for r in result]
        return result.image

    @overload
    def upscale(
        self,
        images: np.ndarray | torch.Tensor,
        *,
        noise_key: int = 0,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> UpscaleResult: ...

    @overload
    def upscale(
        self,
        images: Sequence[np.ndarray],
        *,
        noise_key: int = 0,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> list[UpscaleResult]: ...

    def upscale(
        self,
        images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
        *,
        noise_key: int = 0,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> UpscaleResult | list[UpscaleResult]:
        """Upscale images with median randomized smoothing.

        Several images of one size go through the backend together: each backend call holds the noisy
        copies of several images (and tiles) where the memory budget and the backend's ``max_batch`` allow.
        The noise of a pixel is a pure function of (seed, ``noise_key``, position, sample), the same for
        every image of a batch, so each image's result is the one a call with that image alone gives (on
        the CPU bit for bit; a GPU backend may round differently at another batch size).

        Args:
            images: a numpy array ``H x W`` (gray) or ``H x W x C`` with C = 1 (gray), 2 (gray + alpha),
                3 (RGB) or 4 (RGBA), dtype uint8, uint16 or float32/float64 in [0, 1]; a list of such
                arrays of one shape and dtype; or a torch tensor ``N x C x H x W`` (or ``C x H x W``),
                float, C = 1 or 3, values in [0, 1], on any device. Channel order is RGB(A).
            noise_key: selects an independent noise field; keep it fixed across video frames for temporal
                stability, or pass the frame index for fresh noise per frame.
            progress: called as ``progress(done, total)`` after each backend call of this call (``total``
                is :meth:`work_units` of the images).
            cancel: called before each backend call; when it returns True the upscale stops with
                :class:`~certsr_rt.errors.Cancelled` (pass ``event.is_set`` to stop from a
                :class:`threading.Event`).

        Returns:
            numpy in -> an :class:`UpscaleResult` of numpy images of the same dtype and channel layout,
            ``scale`` times larger, alpha upscaled without smoothing (bicubic); a list in -> a list of
            them; torch in -> float32 tensors in [0, 1] on the input's device (``summary`` and
            ``radius_summary`` are those of the last image of the batch).

        Raises:
            InputError: a bad image, images of different sizes, or too large for memory.
            Cancelled: ``cancel()`` returned True.
        """
        first = images
        if isinstance(images, (list, tuple)):
            if not images:
                raise InputError("Expected at least one image, but got an empty list")
            first = images[0]
        elif not isinstance(images, (np.ndarray, torch.Tensor)):
            raise InputError(f"Expected a numpy array or a torch tensor, but got {type(images).__name__}")
        try:
            if isinstance(images, torch.Tensor):
                return self._upscale_torch(images, noise_key, progress, cancel)
            results = self._upscale_numpy(images, noise_key, progress, cancel)  # type: ignore[arg-type]
            return results if isinstance(images, (list, tuple)) else results[0]
        except (MemoryError, RuntimeError) as exc:
            # The up-front estimate (_check_memory) cannot see every limit (ulimit, other processes, a
            # fragmented GPU): an allocation that fails anyway is the same user error, said in one line.
            if not _is_allocation_failure(exc):
                raise
            shape = "x".join(str(d) for d in getattr(first, "shape", ()))
            raise InputError(
                f"a {shape} image is too large for these options on {self.device} ({first_line(exc)}); "
                "use a smaller tile or fewer samples"
            ) from None

    # ------------------------------------------------------------------ numpy images
    def _upscale_numpy(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        noise_key: int,
        progress: ProgressCallback | None,
        cancel: CancelCheck | None,
    ) -> list[UpscaleResult]:
        from certsr_rt.runtime.layout import alpha_of, from_batch, to_batch

        stack = [images] if isinstance(images, np.ndarray) else list(images)
        x, layout = to_batch(stack)
        results = self._smooth(x.to(self.device), noise_key, progress, cancel)
        alpha_up: list[np.ndarray | None] = [None] * len(stack)
        if layout.has_alpha:
            import cv2

            h, w = layout.shape[:2]
            alpha_up = [
                np.clip(cv2.resize(a, (w * self.scale, h * self.scale), interpolation=cv2.INTER_CUBIC), 0, 1)
                for a in alpha_of(stack, layout)
                if a is not None
            ]

        def to_numpy(t: torch.Tensor | None, i: int) -> np.ndarray | None:
            return None if t is None else from_batch(t, layout, [alpha_up[i]])[0]

        return [
            UpscaleResult(
                to_numpy(r.image, i),
                to_numpy(r.lower, i),
                to_numpy(r.upper, i),
                r.summary,
                None if r.radius is None else r.radius.cpu().numpy(),
                r.radius_summary,
            )
            for i, r in enumerate(results)
        ]

    # ------------------------------------------------------------------ torch tensors
    def _upscale_torch(
        self,
        image: torch.Tensor,
        noise_key: int,
        progress: ProgressCallback | None,
        cancel: CancelCheck | None,
    ) -> UpscaleResult:
        from certsr_rt.runtime.layout import check_float_range

        squeeze = image.dim() == 3
        x = image[None] if squeeze else image
        if x.dim() != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
            raise InputError(
                f"Expected a float N x C x H x W (or C x H x W) tensor with C = 1 or 3, "
                f"but got shape {tuple(image.shape)} and dtype {image.dtype}"
            )
        if x.shape[0] == 0:
            raise InputError(f"Expected at least one image in the batch, but got shape {tuple(image.shape)}")
        out_device = x.device
        results = self._smooth(
            check_float_range(x.to(self.device, torch.float32), "tensor"), noise_key, progress, cancel
        )

        def stack(ts: list[torch.Tensor | None]) -> torch.Tensor | None:
            if ts[0] is None:
                return None
            t = torch.cat(ts).clamp_(0, 1).to(out_device)  # type: ignore[arg-type]
            return t[0] if squeeze else t

        radius = None
        if results[0].radius is not None:
            radius = torch.stack([r.radius for r in results]).to(out_device)
            radius = radius[0] if squeeze else radius
        return UpscaleResult(
            stack([r.image for r in results]),
            stack([r.lower for r in results]),
            stack([r.upper for r in results]),
            results[-1].summary,
            radius,
            results[-1].radius_summary,
        )

    # ------------------------------------------------------------------ the plan of a call
    def _plan(self, height: int, width: int, channels: int, count: int, *, strict: bool = True) -> _Plan:
        """How ``count`` images of ``height x width`` go through the backend: decided once per call.

        Memory is queried once (on CUDA, ``mem_get_info``) for the tiling, the chunk budget and the check.
        ``strict=False`` (for :meth:`work_units`) plans one image at a time where even that does not fit,
        instead of raising.

        Raises:
            InputError: one image does not fit in memory (see :meth:`_check_memory`).
        """
        available = _available_memory(self.device)
        tiles = self._tiles(height, width, available=available)
        n = self.samples
        forwards = count * len(tiles) * n
        cap = self._chunk_size(tiles[0], available=available, forwards=forwards)
        hard = [v for v in (self.smoothing.chunk_size, self.backend.max_batch) if v is not None]
        if cap >= n:
            chunks, pairs = (n,), max(1, min(cap // n, count * len(tiles)))
        else:
            chunks, pairs = _split_samples(n, cap, min(hard) if hard else None), 1
        n_ranks = 2 if self.bounds is not None else 0
        # As many images at once as fit; one image that does not fit is refused with advice.
        images = count
        while True:
            try:
                self._check_memory(
                    height, width, channels, tiles, n_ranks,
                    images=images, pairs=min(pairs, images * len(tiles)), available=available,
                )  # fmt: skip
                break
            except InputError:
                if images == 1 and pairs == 1:
                    if strict:
                        raise
                    break
                if images > 1:
                    images = max(1, images // 2)
                else:
                    pairs = max(1, pairs // 2)
        passes = [images] * (count // images) + ([count % images] if count % images else [])
        steps = sum(math.ceil(g * len(tiles) / pairs) * len(chunks) for g in passes)
        return _Plan(tiles, max_coverage(tiles), chunks, pairs, images, steps)

    def _chunk_size(
        self, tile: Tile, available: int | None | object = _UNKNOWN, forwards: int | None = None
    ) -> int:
        """The most forward passes per backend call on ``tile``-sized inputs, of ``forwards`` (default n).

        The budget: ``chunk_size`` if given, else the memory budget (on CUDA half of what is available, on
        a CPU :data:`_CPU_BATCH_BUDGET`, and at least :data:`_CPU_PROGRESS_STEPS` steps per call there),
        never more than the backend's ``max_batch``.
        """
        n = self.samples
        total = n if forwards is None else forwards
        if self.smoothing.chunk_size is not None:
            chunk = self.smoothing.chunk_size
        else:
            pixels = (tile.y1 - tile.y0) * (tile.x1 - tile.x0)
            # Peak activation bytes per LR pixel per sample: the architecture's own figure (models/arch).
            per_sample = pixels * bytes_per_lr_pixel(self.model.architecture)
            if self.device.type == "cuda":
                if available is _UNKNOWN:
                    available = _available_memory(self.device)
                # Free memory plus what torch's allocator holds cached but unused (it reuses that first).
                budget = int(available or 0) // 2  # type: ignore[call-overload]
            else:
                budget = _CPU_BATCH_BUDGET
            chunk = max(1, int(budget // max(per_sample, 1)))
            if self.device.type != "cuda":
                # Progress is reported per backend call: on a CPU, where one image takes minutes, split
                # each image's (each tile's) n forwards into at least _CPU_PROGRESS_STEPS calls. Larger calls
                # do not pay there: 4 frames in 12-sample calls took 8% longer than in 3-sample calls, and the
                # stream 27% longer (benchmarks/results/stream_batch.md), so a CPU call holds one image's
                # chunk and batching images pays only on CUDA. Never below 2 where memory allows: a batch of
                # one rounds differently (_split_samples).
                chunk = min(chunk, max(2, math.ceil(min(n, total) / _CPU_PROGRESS_STEPS)))
        if self.backend.max_batch is not None:
            chunk = min(chunk, self.backend.max_batch)
        return max(1, min(chunk, total))

    def _tiles(self, height: int, width: int, available: int | None | object = _UNKNOWN) -> list[Tile]:
        """The tiles of a ``height x width`` image: on CUDA with ``tile=None``, the whole image if it fits."""
        if self.auto_tile and self.device.type == "cuda" and self.tile != 0:
            whole = make_tiles(height, width, 0, 0)
            try:
                self._check_memory(
                    height, width, self.model.in_channels, whole, 2 if self.ranks else 0, available=available
                )
            except InputError:
                pass  # too large at once: tiles
            else:
                return whole
        return make_tiles(height, width, self.tile, self.tile_overlap)

    def _check_memory(
        self,
        h: int,
        w: int,
        c: int,
        tiles: list[Tile],
        n_ranks: int,
        *,
        images: int = 1,
        pairs: int = 1,
        available: int | None | object = _UNKNOWN,
    ) -> None:
        """Refuse, before any work, images whose buffers cannot fit in the memory available now.

        Counted (float32): the ``n`` outputs of the largest tile (times the ``pairs`` of image and tile
        computed in one backend call) and as much again for the median's working copies; per image the
        result and two conversion copies; with several tiles the full-size blending accumulator and
        weights. Model activations are not counted: the chunk size keeps them in budget.
        """
        if available is _UNKNOWN:
            available = _available_memory(self.device)
        if available is None:
            return
        assert isinstance(available, int)
        s, n = self.scale, self.samples
        tile_px = max((t.y1 - t.y0) * (t.x1 - t.x0) for t in tiles) * s * s
        per_tile = 2 * n * c * tile_px * 4
        out_px = h * w * s * s
        image_bytes = (1 + n_ranks) * c * out_px * 4
        # The result and two conversion copies; with tiles also the accumulator and the weights.
        full = 3 * image_bytes + (image_bytes + out_px * 4 if len(tiles) > 1 else 0)
        if pairs * per_tile + images * full <= available:
            return
        advice = "fewer samples"
        if per_tile > available / 2:
            side = math.isqrt(max(1, int(available / 2 / (2 * n * c * 4 * s * s))))
            # A tile under the model's minimum would be refused (runtime.tiling): then only fewer samples.
            if side >= max(8, self._min_tile):
                advice = f"tile {side} or smaller (--tile {side}), or fewer samples"
        elif full > available / 2:
            advice = "a smaller image: the upscaled result alone does not fit"
        needed = pairs * per_tile + images * full
        what = f"a {h}x{w} image is" if images == 1 else f"{images} {h}x{w} images are"
        raise InputError(
            f"{what} too large for these options: about {_size(needed)} needed on "
            f"{self.device} ({n} samples of tiles up to {math.isqrt(tile_px) // s} px, x{s}), "
            f"{_size(available)} available; use {advice}"
        )

    # ------------------------------------------------------------------ the smoothing itself
    def _smooth(
        self,
        x: torch.Tensor,
        noise_key: int,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> list[UpscaleResult]:
        """Median-smoothed upscale of each image of ``x`` (see :meth:`_smooth_pass`), in passes.

        One :class:`_Plan` for the call. Each pass (the images that fit in memory at once) is checked for
        NaN/inf once: on CUDA each read of a flag is a host synchronisation, so none happens per chunk or
        tile: the backend folds its half-precision checks into one device flag
        (``infer(defer_check=True)``) and each tile's samples add theirs to :attr:`_finite`; both are read
        here, once per pass. If a half-precision chunk overflowed, the backend has switched to fp32 and
        the pass is computed again. Samples that are still NaN/inf (broken weights) are an error: a black
        or clipped image is never written.

        Raises:
            BackendError: the model produced NaN/inf in fp32.
            Cancelled: ``cancel()`` returned True.
        """
        count, c, h, w = x.shape
        plan = self._plan(h, w, c, count)
        steps = _Steps(plan.steps, progress, cancel)
        results: list[UpscaleResult] = []
        for start in range(0, count, plan.images):
            part = x[start : start + plan.images]
            done = steps.done
            self._finite = None
            pass_results = self._smooth_pass(part, noise_key, plan, steps)
            finite = self._finite is None or bool(self._finite)
            if self.backend.take_non_finite():
                steps.done = done
                self._finite = None
                pass_results = self._smooth_pass(part, noise_key, plan, steps)
                finite = self._finite is None or bool(self._finite)
            if not finite:
                raise BackendError(self._non_finite_message())
            results.extend(pass_results)
        return results

    def _smooth_pass(
        self, x: torch.Tensor, noise_key: int, plan: _Plan, steps: _Steps
    ) -> list[UpscaleResult]:
        """Median-smoothed upscale of the images ``x`` (G x C x H x W float32 on ``self.device``, in [0, 1]).

        ``C`` is the model's input channels, or 1 for a gray image. A gray image is smoothed *as a gray
        image*: one noise value per pixel, shared by the channels the model sees, and each noisy output
        reduced to gray (the channel mean) before the median. The smoothed function is then a function of
        the gray image, so certified bounds hold for perturbations of the gray image with the stated eps,
        and they bound the gray values that are written.

        Work goes by (tile, image) pairs, tile by tile: a backend call holds all n noisy copies of
        ``plan.pairs`` pairs (the noise of a tile is the same for every image), or, when n copies do not
        fit, one pair's samples in the chunks ``plan.chunks``.

        Returns:
            Per image, unclamped float tensors with ``C`` channels.
        """
        if self.device.type == "cuda":
            from certsr_rt.runtime.cuda_median import median_and_order_statistics
        else:
            from certsr_rt.smoothing.aggregate import median_and_order_statistics

        count, c, h, w = x.shape
        gray = c == 1 and self.model.in_channels != 1
        s = self.scale
        n = self.samples
        sigma = self.smoothing.sigma
        tiles = plan.tiles
        certified = self._ranks_for(plan.union)
        ranks: Sequence[int] = ()
        if certified is not None:
            ranks = (certified.lower, certified.upper)  # type: ignore[assignment]
        schedule = self._schedule_for(plan.union)
        single = len(tiles) == 1
        acc = None if single else torch.zeros(count, 1 + len(ranks), c, h * s, w * s, device=self.device)
        weight = None if single else torch.zeros(1, 1, h * s, w * s, device=self.device)
        radius = None
        if schedule is not None:
            radius = torch.full((count, h * s, w * s), math.inf, device=self.device)
        stacked_of: list[torch.Tensor | None] = [None] * count

        def noisy(tile: Tile, i: int, start: int, k: int) -> torch.Tensor:
            """Samples ``[start, start + k)`` of image ``i`` on ``tile``, as the model sees them."""
            patch = x[i : i + 1, :, tile.y0 : tile.y1, tile.x0 : tile.x1]
            batch = patch.expand(k, -1, -1, -1)
            if not self.is_plain:
                batch = batch + sigma * self._noise(noise_key, tile, start, k, c)
            if gray:
                batch = batch.expand(k, self.model.in_channels, -1, -1)
            return batch

        def reduce(tile: Tile, i: int, outputs: torch.Tensor, wts: torch.Tensor | None) -> None:
            """The median (and bounds, radius) of one pair's n outputs, blended into image ``i``."""
            # A model that gives NaN/inf (broken weights, an overflow) would be written as a black or
            # clipped image: a device flag per pair, read once per pass by _smooth (no sync here). The sum
            # is non-finite exactly when a value is (NaN and +-inf propagate; finite outputs in [0, 1] are
            # far from fp32's overflow) and reads the outputs once without a mask: 0.14 ms instead of
            # 6.7 ms for isfinite().all() on 21 x 3 x 256 x 256 on 2 CPU cores.
            tile_finite = torch.isfinite(outputs.sum())
            self._finite = tile_finite if self._finite is None else self._finite & tile_finite
            ys, xs = slice(tile.y0 * s, tile.y1 * s), slice(tile.x0 * s, tile.x1 * s)
            if schedule is not None:
                assert radius is not None
                med, stats, tile_radius = self._sorted_statistics(outputs, ranks, schedule)
                region = radius[i, ys, xs]
                torch.minimum(region, tile_radius, out=region)
            else:
                med, stats = median_and_order_statistics(outputs, ranks)
            stacked = torch.stack([med, *stats])
            if single:
                stacked_of[i] = stacked
            else:
                assert acc is not None and wts is not None
                acc[i, :, :, ys, xs] += stacked * wts

        order = [(tile, i) for tile in tiles for i in range(count)]
        weights: dict[Tile, torch.Tensor] = {}
        for tile in tiles:
            if not single:
                assert weight is not None
                wts = blend_weights(tile, tiles, s, self.device)
                weights[tile] = wts
                weight[:, :, tile.y0 * s : tile.y1 * s, tile.x0 * s : tile.x1 * s] += wts
        if plan.chunks == (n,):
            for g in range(0, len(order), plan.pairs):
                group = order[g : g + plan.pairs]
                steps.check()
                parts = [noisy(tile, i, 0, n) for tile, i in group]
                batch = torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()
                out = self.backend.infer(batch, defer_check=True)
                steps.tick()
                for p, (tile, i) in enumerate(group):
                    part = out[p * n : (p + 1) * n]
                    reduce(tile, i, part.mean(1, keepdim=True) if gray else part, weights.get(tile))
                del out, batch, parts
        else:
            for tile, i in order:
                th, tw = tile.y1 - tile.y0, tile.x1 - tile.x0
                outputs = torch.empty(n, c, th * s, tw * s, device=self.device)
                start = 0
                for k in plan.chunks:
                    steps.check()
                    out = self.backend.infer(noisy(tile, i, start, k).contiguous(), defer_check=True)
                    outputs[start : start + k] = out.mean(1, keepdim=True) if gray else out
                    steps.tick()
                    start += k
                reduce(tile, i, outputs, weights.get(tile))
                del outputs
        results = []
        for i in range(count):
            if single:
                result = stacked_of[i]
                assert result is not None
            else:
                assert acc is not None and weight is not None
                result = acc[i] / weight
            image_radius = None if radius is None else radius[i]
            results.append(self._summarize(result, image_radius, certified, ranks, schedule, c * h * w))
        return results

    def _summarize(
        self,
        result: torch.Tensor,
        radius: torch.Tensor | None,
        certified: CertifiedRanks | None,
        ranks: Sequence[int],
        schedule: RadiusSchedule | None,
        input_values: int,
    ) -> UpscaleResult:
        """One image's :class:`UpscaleResult` from its stacked ``[median, lower, upper]`` and radius."""
        image = result[0:1]
        radius_summary = None
        if radius is not None and schedule is not None and self.radius is not None:
            from certsr_rt.smoothing.certify import summarize_radius

            at = tuple(sorted({schedule.max_eps / 2} | ({self.bounds.eps} if self.bounds else set())))
            radius_summary = summarize_radius(
                radius, schedule, self.radius.tol, at=at, input_values=input_values
            )
        if certified is None:
            return UpscaleResult(image, radius=radius, radius_summary=radius_summary)
        from certsr_rt.smoothing.certify import summarize_bounds

        lower, upper = result[1:2], result[2:3]
        summary = summarize_bounds(
            lower.clamp(0, 1),
            upper.clamp(0, 1),
            image.clamp(0, 1),
            ranks=certified,
            input_values=input_values,
        )
        return UpscaleResult(image, lower, upper, summary, radius, radius_summary)

    def _ranks_for(self, union: int) -> CertifiedRanks | None:
        """The certified ranks for pixels blended from up to ``union`` tiles (None: no bounds requested).

        Raises:
            InputError: the bounds are vacuous at alpha/union.
        """
        if self.bounds is None:
            return None
        if union == 1 and self.ranks is not None:
            return self.ranks
        ranks = self._ranks_by_union.get(union)
        if ranks is None:
            from certsr_rt.smoothing.certify import certified_ranks, vacuity_message

            ranks = certified_ranks(
                self.samples, self.bounds.eps, self.smoothing.sigma, self.bounds.alpha, union=union
            )
            if ranks.vacuous:
                raise InputError(
                    f"{vacuity_message(ranks)} (this image is cut into overlapping tiles; --tile 0 avoids "
                    "the split of alpha)"
                )
            self._ranks_by_union[union] = ranks
        return ranks

    def _schedule_for(self, union: int) -> RadiusSchedule | None:
        """The radius schedule at alpha/union (None: no radius map requested)."""
        if self.radius is None:
            return None
        schedule = self._schedules.get(union)
        if schedule is None:
            from certsr_rt.smoothing.certify import radius_schedule

            schedule = radius_schedule(self.samples, self.smoothing.sigma, self.radius.alpha, union=union)
            if schedule.eps.size == 0:
                raise InputError(
                    f"no radius can be certified with n={self.samples} samples at "
                    f"alpha={self.radius.alpha:g} over {union} blended tiles; use more samples or --tile 0"
                )
            self._schedules[union] = schedule
        return schedule

    def _sorted_statistics(
        self, outputs: torch.Tensor, ranks: Sequence[int], schedule: RadiusSchedule
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Median, order statistics and the per-pixel certified radius of one tile's samples.

        The samples are sorted along the sample axis, in place on the CPU (no second copy of the n
        samples); the median and order statistics are read off (the same values the median kernels give),
        then the sorted samples are clamped to [0, 1] (what is written; clamping keeps the order) for the
        radius.

        Returns:
            ``(median, [order statistics], radius)``; the radius is the smallest over the channels.
        """
        from certsr_rt.smoothing.certify import certified_radius

        assert self.radius is not None
        if outputs.device.type == "cpu":
            outputs.numpy().sort(axis=0)
            ordered = outputs
        else:
            ordered = torch.sort(outputs, dim=0).values
        n = ordered.shape[0]
        med = ordered[n // 2].clone() if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
        stats = [ordered[k - 1].clone() for k in ranks]
        tile_radius = certified_radius(ordered.clamp_(0, 1), schedule, self.radius.tol).amin(0)
        return med, stats, tile_radius

    def _non_finite_message(self) -> str:
        source = getattr(self.model, "source", None) or getattr(self.model, "path", None)
        where = f" from {source}" if source and not str(source).startswith("generated:") else ""
        return (
            f"the model {self.model.name}{where} produced NaN or inf on this input ({self.backend.name} "
            f"backend, {self.backend.precision}, {self.device}); its weights may be broken (check the "
            "checkpoint); no output was made"
        )

    def _noise(self, key: int, tile: Tile, start: int, k: int, channels: int) -> torch.Tensor:
        """The noise field for samples ``[start, start + k)`` of ``tile``, cached across calls."""
        th, tw = tile.y1 - tile.y0, tile.x1 - tile.x0
        cache_key = (key, tile.y0, tile.x0, th, tw, start, k, channels)
        noise = self._noise_cache.get(cache_key)
        if noise is not None:
            return noise
        noise = gaussian_field(
            (k, channels, th, tw),
            seed=self.smoothing.seed,
            key=key,
            sample_offset=start,
            row_offset=tile.y0,
            col_offset=tile.x0,
            device=self.device,
        )
        if any(ck[0] != key for ck in self._noise_cache):
            self._noise_cache.clear()
            self._noise_cache_bytes = 0
        size = noise.numel() * noise.element_size()
        if self._noise_cache_bytes + size <= _NOISE_CACHE_BYTES:
            self._noise_cache[cache_key] = noise
            self._noise_cache_bytes += size
        return noise

    def close(self) -> None:
        """Release the backend's resources."""
        self.backend.deactivate()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.smoothing
        return (
            f"Upscaler(model={self.model.name!r}, sigma={s.sigma}, samples={self.samples}, seed={s.seed}, "
            f"backend={self.backend!r}, tile={self.tile})"
        )
