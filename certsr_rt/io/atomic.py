"""Atomic file writes: the one way this package replaces a file.

Every writer (images, checkpoints, the ``net_g_latest.pth`` link, evaluation reports, ONNX exports, TensorRT
engines and their records, videos) goes through :class:`AtomicFile`:

1. a temporary file ``.<name>.<8 hex digits>.tmp`` is created (exclusively) in the destination's folder, so
   the final rename never crosses a file system and the leading dot keeps it out of listings;
2. the caller fills it, by path (:func:`atomic_path`: ``torch.onnx.export``, PyAV, a hard link) or with
   bytes (:func:`write_atomic`);
3. :meth:`AtomicFile.commit` flushes it to disk (:func:`os.fsync`), renames it over the destination with
   :func:`os.replace` (atomic on POSIX and Windows) and, on POSIX, flushes the folder entry too;
4. on any failure before that, ``KeyboardInterrupt`` included, :meth:`AtomicFile.discard` removes the
   temporary file.

The destination is therefore the old file, the new file, or absent, never half written. Only a hard kill
(``SIGKILL``, power loss) can leave a temporary file behind; :func:`stale_partial_files` finds those.

Failures of the mechanism itself (the folder cannot be created, the disk is full, the destination is a
folder) are an :class:`~certsr_rt.errors.InputError`, ``cannot write X: ...``; an exception raised by the
caller's own writing passes through unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from certsr_rt.errors import InputError

__all__ = ["AtomicFile", "atomic_path", "stale_partial_files", "write_atomic"]

_WRITE_CHUNK = 1 << 20  # bytes per write() call, so a Ctrl-C during a large write is seen soon


def _reason(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return exc.strerror or str(exc)


class AtomicFile:
    """A write in progress: :attr:`temporary` becomes :attr:`target` on :meth:`commit`, or vanishes.

    Use it as a context manager (leaving the block normally commits, leaving it by any exception discards),
    or call :meth:`commit` / :meth:`discard` yourself when the write outlives one block (the video writer).

    Args:
        target: the destination; missing folders are created.

    Raises:
        InputError: the folder cannot be created or the temporary file cannot be made in it.
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        """The destination."""
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot write {self.target}: cannot create the folder {self.target.parent} "
                f"({exc.strerror or exc})"
            ) from None
        while True:
            self.temporary = self.target.with_name(f".{self.target.name}.{secrets.token_hex(4)}.tmp")
            """The file to write; it exists (empty) from the start."""
            try:
                os.close(os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise InputError(f"cannot write {self.target}: {_reason(exc)}") from None
        self.done = False
        """Whether :meth:`commit` or :meth:`discard` has run."""

    def commit(self) -> Path:
        """Flush the temporary file to disk and rename it over the target; on failure, remove it.

        Returns:
            The target path.

        Raises:
            InputError: the flush or the rename failed (e.g. the target is a folder).
        """
        if self.done:
            raise InputError(f"cannot write {self.target}: this write was already finished")
        try:
            fd = os.open(self.temporary, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.temporary, self.target)
            if os.path.lexists(self.temporary):
                # rename() does nothing when both names are links to one file (a republished hard link)
                os.unlink(self.temporary)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise InputError(f"cannot write {self.target}: {_reason(exc)}") from None
            raise
        self.done = True
        _sync_folder(self.target.parent)
        return self.target

    def discard(self) -> None:
        """Remove the temporary file; the target is left as it was (idempotent)."""
        self.done = True
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk where the OS allows opening a folder (POSIX)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` through; it replaces ``target`` when the block succeeds.

    The path exists (an empty file) when the block starts; writers that refuse an existing file (a hard
    link) remove it first. On any exception the temporary file is removed and the exception passes on.

    Args:
        target: the destination; missing folders are created.

    Raises:
        InputError: the folder, the temporary file, the flush or the rename failed.
    """
    with AtomicFile(target) as f:
        yield f.temporary


def _write_chunks(f: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    for start in range(0, len(view), _WRITE_CHUNK):
        f.write(view[start : start + _WRITE_CHUNK])


def write_atomic(target: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``target`` atomically (see the module notes).

    Args:
        target: the destination; missing folders are created.
        data: the file's whole content.

    Returns:
        The target path.

    Raises:
        InputError: ``cannot write X: ...`` (permission, disk full, the target is a folder).
    """
    with AtomicFile(target) as f:
        try:
            with open(f.temporary, "wb") as fh:
                _write_chunks(fh, memoryview(data))
        except OSError as exc:
            raise InputError(f"cannot write {f.target}: {_reason(exc)}") from None
    return f.target


def stale_partial_files(target: str | os.PathLike[str], older_than: float) -> list[Path]:
    """Temporary files of atomic writes of ``target`` that a hard kill left behind.

    The names are those :class:`AtomicFile` gives (``.NAME.<hex8>.tmp``) and the one earlier versions'
    video writer gave (``.STEM.partial-<hex8>EXT``), in ``target``'s folder; only files last modified before
    ``older_than`` (a :func:`time.time` value: the start of this run) count, so the temporary file of a
    write in progress is never listed.

    Args:
        target: an output path.
        older_than: modification-time cut-off, seconds since the epoch.

    Returns:
        The stale files, sorted.
    """
    out = Path(target)
    ours = re.compile(rf"\.{re.escape(out.name)}\.[0-9a-f]{{8}}\.tmp")
    earlier_video = re.compile(rf"\.{re.escape(out.stem)}\.partial-[0-9a-f]{{8}}{re.escape(out.suffix)}")
    found = []
    try:
        candidates = list(out.parent.glob(f".{glob_escape(out.stem)}*"))
    except OSError:
        return []
    for c in candidates:
        if not (ours.fullmatch(c.name) or earlier_video.fullmatch(c.name)):
            continue
        try:
            if c.is_file() and not c.is_symlink() and c.stat().st_mtime < older_than:
                found.append(c)
        except OSError:
            continue
    return sorted(found)
