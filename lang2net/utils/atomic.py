"""The one atomic writer: files and folders are written aside and renamed into place, so a failure loses nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_file", "atomic_folder", "write_atomic"]


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)  # the package's one rename: same-filesystem and atomic on POSIX and Windows


def _umask_mode(mode: int = 0o666) -> int:
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds it is renamed over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp's 0600 is widened to the umask's).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _umask_mode())
            _fsync(tmp)  # the bytes reach the disk before the name does: a crash leaves the old file or the new
        _replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``; returns ``path``."""
    with atomic_file(path) as tmp:
        write(tmp)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(directory: str | os.PathLike, *, carry_over: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty sibling folder to write into; on success it replaces ``directory`` (the old one removed last).

    Args:
        directory: the destination folder.
        carry_over: entries of an existing ``directory`` for which this returns True and that the new folder lacks are
            copied into it before the swap (a .gitattributes, notes); default: none.

    Files written into the folder get the permissions a plain ``open(path, "w")`` would give and reach the disk before
    the rename. A failure at any point before the final rename leaves ``directory`` untouched and removes the
    temporary folder.
    """
    dest = Path(directory)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # plain mkdir (not mkdtemp): the folder gets the user's usual permissions
    try:
        yield tmp
        mode = _umask_mode()
        for path in tmp.rglob("*"):  # writers that make their own 0600 files (safetensors) get the umask's permissions
            if path.is_file() and not path.is_symlink():
                os.chmod(path, mode)
                _fsync(path)
        if dest.is_dir():
            for entry in dest.iterdir():
                if carry_over is not None and not (tmp / entry.name).exists() and carry_over(entry):
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, tmp / entry.name)
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            _replace(dest, old)
            try:
                _replace(tmp, dest)
            except BaseException:
                _replace(old, dest)  # the previous folder goes back where it was
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            _replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
