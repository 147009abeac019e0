"""Fashion-MNIST from its idx files: found in the Debian or torchvision layout, gzipped or not, parsed with numpy."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["FASHION_MNIST_CLASSES", "find_fashion_mnist", "read_fashion_mnist", "read_idx"]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
ENV_VAR = "LANG2NET_FASHION_MNIST"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# roots under which torchvision's FashionMNIST(root, download=True) leaves <root>/FashionMNIST/raw
TORCHVISION_ROOTS = ("~/.cache/torchvision", "~/.cache")
_PREFIX = {"train": "train", "test": "t10k"}
_MAGIC = {2051: ("images", 3), 2049: ("labels", 1)}  # idx magic -> (kind, number of dimensions)
_COUNTS = {"train": 60000, "test": 10000}
HOW_TO_GET = (
    "get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs to "
    f"{DEBIAN_DIR}), or with torchvision: `torchvision.datasets.FashionMNIST(root, download=True)` and pass "
    f"root=<root> (or set {ENV_VAR}=<folder with the idx files>)"
)


# helpers


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidate_folders(root: str | os.PathLike[str] | None) -> list[Path]:
    """Folders to search, in order: an explicit root only; else the env variable, Debian, torchvision caches."""
    if root is not None:
        roots = [Path(root).expanduser()]
    else:
        env = os.environ.get(ENV_VAR)
        roots = [Path(env).expanduser()] if env else []
        roots += [Path(DEBIAN_DIR), *(Path(r).expanduser() for r in TORCHVISION_ROOTS)]
    return [folder for r in roots for folder in (r, r / "FashionMNIST" / "raw")]


# public


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (images: magic 2051, ``(N, rows, cols)``; labels: magic 2049, ``(N,)``), gzipped or not.

    Raises:
        ValueError: If the file is not valid gzip, has an unknown magic number, or its size disagrees with its header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip file ({exc}); download it again") from None
    if len(raw) < 8:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an idx header")
    magic = int(np.frombuffer(raw[:4], dtype=">i4")[0])
    if magic not in _MAGIC:
        raise ValueError(f"{path}: idx magic number {magic}, expected one of {sorted(_MAGIC)} (images/labels)")
    kind, ndim = _MAGIC[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an idx {kind} header of {header} bytes")
    dims = [int(d) for d in np.frombuffer(raw[4:header], dtype=">i4")]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, but its header {dims} needs {expected}; the file is truncated")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_fashion_mnist(split: str, root: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Locate the (images, labels) idx files of a split.

    Args:
        split: "train" or "test".
        root: folder holding the idx files, or a torchvision root (``<root>/FashionMNIST/raw``). None searches
            ``$LANG2NET_FASHION_MNIST``, the Debian folder, then ``~/.cache/torchvision`` and ``~/.cache``.

    Raises:
        ValueError: If ``split`` is unknown.
        FileNotFoundError: If no searched folder holds both files; the message says how to get them.
    """
    if split not in _PREFIX:
        raise ValueError(f"fashion_mnist has no split {split!r}; valid: {list(_PREFIX)}")
    folders = _candidate_folders(root)
    for folder in folders:
        images = _file_in(folder, f"{_PREFIX[split]}-images-idx3-ubyte")
        labels = _file_in(folder, f"{_PREFIX[split]}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            return images, labels
    searched = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({_PREFIX[split]}-{{images-idx3,labels-idx1}}-ubyte[.gz]) not found in: "
        f"{searched}. {HOW_TO_GET}"
    )


def read_fashion_mnist(split: str, root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``(N, 28, 28)`` and labels int64 ``(N,)`` of a Fashion-MNIST split (60000 train, 10000 test).

    Raises:
        FileNotFoundError: As :func:`find_fashion_mnist`.
        ValueError: If a file is corrupt, of the wrong kind, or the counts disagree.
    """
    image_path, label_path = find_fashion_mnist(split, root)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: expected idx images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{label_path}: expected idx labels (N,), got shape {labels.shape}")
    if len(images) != _COUNTS[split] or len(labels) != _COUNTS[split]:
        raise ValueError(
            f"Fashion-MNIST {split} should hold {_COUNTS[split]} images and labels; {image_path} has {len(images)}, "
            f"{label_path} has {len(labels)}"
        )
    if int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{label_path}: label {int(labels.max())} outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    # np.frombuffer views are read-only; copy so that callers own writable tensors
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
