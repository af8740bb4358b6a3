"""Training data: an endless, seeded stream of (LR, HR) crop pairs from an HR folder or paired folders.

Why a *stream of numbered samples*: the k-th training sample is a pure function of ``(seed, k)`` — which
image (a fresh permutation of the images each epoch), where the crop is, which flips. Iteration ``i`` of a
run with global batch ``B`` uses samples ``i*B .. i*B+B-1``, and with several processes rank ``r`` takes
its equal slice of them. So:

* resuming at iteration ``i`` yields exactly the batch the uninterrupted run would have seen (the data
  "RNG state" is the iteration number), with no sampler state to save;
* the global batch is the same on 1 or N processes, which is what makes DDP match single-process training;
* DataLoader workers may run in any order without changing anything.

Because sample ``k`` is fixed, a file that cannot be used would stop every run, and every resume, at the same
place. So :class:`CropStream` decodes and measures every file when it is built, before training starts, and
names all the bad ones in one error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from time import monotonic

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from certsr_rt.errors import InputError
from certsr_rt.io.pairs import downscale_bicubic, first_few, list_images, pair_lr_files
from certsr_rt.runtime.layout import numpy_layout, to_batch

__all__ = [
    "CropStream",
    "StreamBatchSampler",
    "read_image",
]


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Read an image as a float32 ``C x H x W`` tensor in [0, 1], RGB (or gray for ``channels == 1``).

    Grayscale files are replicated to 3 channels, alpha is dropped, 16-bit files are rescaled.

    Raises:
        InputError: the file cannot be decoded (:func:`certsr_rt.io.images.read_image`: missing, truncated,
            corrupt, not an image) or holds floating-point samples.
    """
    return _to_tensor(_read_array(path), channels)


def _read_array(path: str | Path) -> np.ndarray:
    """The decoded file, ``H x W`` or ``H x W x C`` (RGB[A] order), 8- or 16-bit."""
    from certsr_rt.io.images import read_image as read_file

    img = read_file(path)
    try:
        numpy_layout(img, floats="refuse")
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return img


def _to_tensor(img: np.ndarray, channels: int) -> torch.Tensor:
    """``C x H x W`` float32 in [0, 1]: alpha dropped, gray replicated to RGB or RGB turned to luma."""
    return to_batch(img, floats="refuse", channels=channels)[0][0]


def _augment(t: torch.Tensor, hflip: bool, vflip: bool, rot90: bool) -> torch.Tensor:
    """BasicSR's ``augment``: horizontal flip, vertical flip, then transpose (a 90-degree rotation)."""
    if hflip:
        t = t.flip(-1)
    if vflip:
        t = t.flip(-2)
    if rot90:
        t = t.transpose(-2, -1)
    return t.contiguous()


class CropStream(Dataset):
    """Map-style dataset over the endless sample stream: item ``k`` is the k-th ``(lr, hr)`` training pair.

    Args:
        hr_dir: folder of HR images.
        scale: the model's upscaling factor.
        hr_crop: side of the square HR crop (multiple of ``scale``).
        lr_dir: optional folder of LR images paired with ``hr_dir`` by file name, as ``evaluate --lr`` pairs
            them (:func:`certsr_rt.io.pairs.pair_lr_files`: same stem, or the stem plus an LR suffix
            such as DIV2K's ``0001x4.png`` or BasicSR's ``baby_LR.png``); LR crops are then read, not
            synthesized.
        augment: random flips and 90-degree rotation.
        quantize_lr: round synthesized LR to 8 bits.
        seed: the data seed.
        channels: image channels the model takes (1 or 3).
        log: where to report the progress of the file check when it takes more than a few seconds.

    Raises:
        InputError: bad settings, a missing or empty folder, HR images without LR partner, or files that
            cannot be used (undecodable; smaller than ``hr_crop``; paired HR not ``scale`` x LR). Every file
            is checked here, and all bad files are named in one error.
    """

    def __init__(
        self,
        hr_dir: str | Path,
        *,
        scale: int,
        hr_crop: int,
        lr_dir: str | Path | None = None,
        augment: bool = True,
        quantize_lr: bool = True,
        seed: int = 0,
        channels: int = 3,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if hr_crop % scale:
            raise InputError(f"hr_crop must be a multiple of the model scale {scale}, got {hr_crop}")
        if channels not in (1, 3):
            raise InputError(f"training supports 1- or 3-channel models, got {channels} channels")
        self.scale = scale
        self.hr_crop = hr_crop
        self.lr_crop = hr_crop // scale
        self.augment = augment
        self.quantize_lr = quantize_lr
        self.seed = seed
        self.channels = channels
        self.hr_files = list_images(hr_dir, "--hr-dir")
        self.lr_files: list[Path] | None = None
        if lr_dir is not None:
            self.lr_files = pair_lr_files(self.hr_files, list_images(lr_dir, "--lr-dir"), lr_dir)
        self._check_files(hr_dir, lr_dir, log)
        self._perm_epoch = -1
        self._perm = np.arange(len(self.hr_files))

    def __len__(self) -> int:
        """Number of images (one epoch); the stream itself is endless."""
        return len(self.hr_files)

    def image_index(self, k: int) -> int:
        """Which image sample ``k`` is cut from: a fresh permutation of the images per epoch."""
        n = len(self.hr_files)
        epoch, pos = divmod(k, n)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 0, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k-th ``(lr, hr)`` pair: ``C x h x w`` and ``C x (scale h) x (scale w)`` float32 in [0, 1]."""
        if k < 0:
            raise IndexError(f"sample index must be >= 0, got {k}")
        idx = self.image_index(k)
        rng = np.random.default_rng([self.seed, 1, k])
        hr_full = read_image(self.hr_files[idx], self.channels)
        lr_full = read_image(self.lr_files[idx], self.channels) if self.lr_files is not None else None
        # Checked when the stream was built; this catches a file replaced since then.
        problem = self._size_problem(
            idx, tuple(hr_full.shape[1:]), None if lr_full is None else tuple(lr_full.shape[1:])
        )
        if problem is not None:
            raise InputError(f"training image changed since the run started: {problem}")
        s, hc, lc = self.scale, self.hr_crop, self.lr_crop
        if lr_full is None:
            _, h, w = hr_full.shape
            top = int(rng.integers(0, h - hc + 1))
            left = int(rng.integers(0, w - hc + 1))
            hr = hr_full[:, top : top + hc, left : left + hc]
            lr = None
        else:
            _, h, w = lr_full.shape
            top = int(rng.integers(0, h - lc + 1))
            left = int(rng.integers(0, w - lc + 1))
            lr = lr_full[:, top : top + lc, left : left + lc]
            hr = hr_full[:, top * s : (top + lc) * s, left * s : (left + lc) * s]
        flips = rng.random(3) < 0.5 if self.augment else (False, False, False)
        hr = _augment(hr, bool(flips[0]), bool(flips[1]), bool(flips[2]))
        if lr is None:
            lr = downscale_bicubic(hr, s, quantize=self.quantize_lr)
        else:
            lr = _augment(lr, bool(flips[0]), bool(flips[1]), bool(flips[2]))
        return lr, hr

    def _size_problem(self, idx: int, hr_hw: tuple[int, ...], lr_hw: tuple[int, ...] | None) -> str | None:
        """What is wrong with the sizes of image ``idx`` (HR and, when paired, LR ``(h, w)``), or None."""
        s, hc, lc = self.scale, self.hr_crop, self.lr_crop
        hr_name = self.hr_files[idx].name
        h, w = hr_hw
        if lr_hw is None:
            if h < hc or w < hc:
                return f"{hr_name} is {w}x{h}, expected at least {hc}x{hc} for hr_crop={hc}"
            return None
        assert self.lr_files is not None
        lr_name = self.lr_files[idx].name
        lh, lw = lr_hw
        if (h, w) != (lh * s, lw * s):
            return f"{hr_name} is {w}x{h}, expected {lw * s}x{lh * s} (scale {s} x LR {lr_name} {lw}x{lh})"
        if lh < lc or lw < lc:
            return f"LR {lr_name} is {lw}x{lh}, expected at least {lc}x{lc} for hr_crop={hc}"
        return None

    def _file_problem(self, idx: int) -> str | None:
        """Decode image ``idx`` (and its LR partner) and say what makes it unusable, or None."""
        paths = [self.hr_files[idx]]
        if self.lr_files is not None:
            paths.append(self.lr_files[idx])
        sizes: list[tuple[int, ...]] = []
        for role, path in zip(("", "LR "), paths, strict=False):
            try:
                sizes.append(tuple(_read_array(path).shape[:2]))
            except InputError as exc:
                # The reader says "cannot read /full/path: why"; the name is enough next to the folder.
                why = str(exc).removeprefix(f"cannot read {path}: ").removeprefix(f"{path}: ")
                return f"{role}{path.name} cannot be read: {why}"
        return self._size_problem(idx, sizes[0], sizes[1] if len(sizes) > 1 else None)

    def _check_files(
        self, hr_dir: str | Path, lr_dir: str | Path | None, log: Callable[[str], None] | None
    ) -> None:
        """Decode and measure every file now, so that a bad one stops the run before it starts.

        Raises:
            InputError: one message with the number of unusable images and the first few reasons.
        """
        n = len(self.hr_files)
        what = f"{n} HR images in {hr_dir}" + (f" and their LR partners in {lr_dir}" if lr_dir else "")
        started = monotonic()
        next_report = started + 2.0
        problems: list[str] = []
        for i in range(n):
            problem = self._file_problem(i)
            if problem is not None:
                problems.append(problem)
            now = monotonic()
            if log is not None and now >= next_report and i + 1 < n:
                log(f"checking training images: {i + 1}/{n} ({len(problems)} unusable so far)")
                next_report = now + 10.0
        if log is not None and monotonic() - started >= 2.0:
            log(f"checked {what} in {monotonic() - started:.0f} s")
        if problems:
            shown = first_few(problems, sep="; ", last_sep="; ")
            raise InputError(
                f"training data: {len(problems)} of {what} cannot be used (fix or remove them): {shown}"
            )

    def global_batch(self, iteration: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole global batch of ``iteration`` (for tests and single-process inspection)."""
        pairs = [self[iteration * batch_size + j] for j in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class StreamBatchSampler(Sampler[list[int]]):
    """Yields, for each iteration from ``start`` to ``stop``, this rank's slice of the global batch indices.

    Args:
        batch_size: the global batch size; must be divisible by ``world_size``.
        start: first iteration (the resume point).
        stop: one past the last iteration.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, batch_size: int, start: int, stop: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise InputError(
                f"the global batch_size must be divisible by the number of processes ({world_size}), "
                f"got {batch_size}"
            )
        self.batch_size = batch_size
        self.local = batch_size // world_size
        self.start = start
        self.stop = stop
        self.rank = rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for it in range(self.start, self.stop):
            first = it * self.batch_size + self.rank * self.local
            yield list(range(first, first + self.local))
