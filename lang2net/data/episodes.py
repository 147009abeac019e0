"""EpisodeSampler: seeded, resumable draws of k-way episodes with class-balanced image batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..utils.checks import check_int

__all__ = ["EpisodeSampler"]


class EpisodeSampler:
    """Draw episodes: ``k_way`` classes without replacement, then a class-balanced batch of their images.

    Each class gets ``batch_size // k_way`` images and ``batch_size % k_way`` randomly chosen classes one more; images
    are drawn without replacement within an episode when the class has enough, else with replacement. All randomness
    comes from one ``torch.Generator``, so ``state_dict``/``load_state_dict`` resume the exact sequence.

    Args:
        labels: int ``(N,)`` class index of every image.
        classes: class indices episodes may use (e.g. a fold's seen classes).
        k_way: classes per episode.
        batch_size: images per episode.
        seed: generator seed.

    Raises:
        ValueError: If ``k_way`` exceeds the number of classes, ``batch_size < k_way``, a class repeats or has no
            images.
    """

    def __init__(self, labels: torch.Tensor, classes: Sequence[int], k_way: int, batch_size: int, seed: int = 0):
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
            raise ValueError(f"labels must be an integer (N,) tensor, got {getattr(labels, 'shape', labels)}")
        class_list = [int(c) for c in classes]
        if not class_list or len(set(class_list)) != len(class_list):
            raise ValueError(f"classes must be non-empty and distinct, got {class_list}")
        check_int("k_way", k_way)
        check_int("batch_size", batch_size)
        if k_way > len(class_list):
            raise ValueError(f"k_way={k_way} exceeds the {len(class_list)} classes available: {class_list}")
        if batch_size < k_way:
            raise ValueError(f"batch_size={batch_size} is below k_way={k_way}: every class needs an image")
        labels = labels.detach().cpu().long()
        self.index_by_class = [torch.nonzero(labels == c).flatten() for c in class_list]
        empty = [c for c, index in zip(class_list, self.index_by_class, strict=True) if len(index) == 0]
        if empty:
            raise ValueError(f"classes without images: {empty}")
        self.classes = torch.tensor(class_list, dtype=torch.int64)
        self.k_way, self.batch_size, self.seed = k_way, batch_size, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.episodes = 0

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler(classes={len(self.classes)}, k_way={self.k_way}, batch_size={self.batch_size}, "
            f"seed={self.seed}, episodes={self.episodes})"
        )

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one episode.

        Returns:
            ``(class_ids, image_index)``: int64 ``(k_way,)`` class indices from ``classes`` in random order, and int64
            ``(batch_size,)`` image indices of those classes, shuffled.
        """
        g = self.generator
        pick = torch.randperm(len(self.classes), generator=g)[: self.k_way]  # (k,)
        counts = torch.full((self.k_way,), self.batch_size // self.k_way, dtype=torch.int64)
        counts[: self.batch_size % self.k_way] += 1  # pick is already random, so the extra images go to random classes
        chosen = []
        for slot, count in zip(pick.tolist(), counts.tolist(), strict=True):
            pool = self.index_by_class[slot]
            if count <= len(pool):
                chosen.append(pool[torch.randperm(len(pool), generator=g)[:count]])
            else:
                chosen.append(pool[torch.randint(len(pool), (count,), generator=g)])
        index = torch.cat(chosen)  # (b,)
        self.episodes += 1
        return self.classes[pick], index[torch.randperm(len(index), generator=g)]

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "classes": self.classes.tolist(),
            "sizes": [len(i) for i in self.index_by_class],
            "k_way": self.k_way,
            "batch_size": self.batch_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """The generator state and episode count, plus what the sampler was built on (checked when loading)."""
        return {
            "generator": self.generator.get_state(),
            "episodes": self.episodes,
            "seed": self.seed,
            **self._fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next episodes equal those of the uninterrupted sampler.

        Raises:
            ValueError: If the state lacks keys or came from a sampler with other classes, sizes, k_way or batch size.
        """
        missing = [k for k in ("generator", "episodes", *self._fingerprint()) if k not in state]
        if missing:
            raise ValueError(f"sampler state lacks {missing}; expected a dict from EpisodeSampler.state_dict()")
        mismatch = [
            k for k, v in self._fingerprint().items() if (list(state[k]) if isinstance(v, list) else state[k]) != v
        ]
        if mismatch:
            raise ValueError(f"sampler state was made with other {mismatch}; build the sampler with the same data")
        self.generator.set_state(state["generator"])
        self.episodes = int(state["episodes"])
