"""scikit-learn's handwritten digits (1797 8x8 images) as uint8, with a fixed stratified 80/20 train/test split."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DIGIT_CLASSES", "TEST_FRACTION", "read_digits"]

DIGIT_CLASSES = [str(d) for d in range(10)]
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, independent of any training seed, so that train and test never overlap


def read_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``(N, 8, 8)`` (0..16 scaled to 0..255) and labels int64 ``(N,)`` of a split.

    The test split holds ``round(0.2 * n_c)`` images of each class ``c`` chosen by a seeded permutation per class
    (359 images); train holds the other 1438. Both keep the original order.

    Raises:
        ValueError: If ``split`` is not "train" or "test".
    """
    if split not in ("train", "test"):
        raise ValueError(f"digits has no split {split!r}; valid: ['train', 'test']")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(len(DIGIT_CLASSES)):
        index = rng.permutation(np.flatnonzero(labels == c))
        is_test[index[: int(np.rint(TEST_FRACTION * len(index)))]] = True
    keep = is_test if split == "test" else ~is_test
    return torch.from_numpy(images[keep]), torch.from_numpy(labels[keep])
