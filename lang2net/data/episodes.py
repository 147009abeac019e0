"""EpisodeSampler: seeded, resumable draws of k-way episodes with class-balanced image batches."""

from __future__ import annotations

import hashlib
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
        neighbours: optional int ``(len(classes), m)``: row ``i`` holds positions in ``classes`` of class ``i``'s
            ``m >= k_way - 1`` nearest other classes (e.g. by description similarity). Each episode is then an anchor
            class drawn at random plus ``k_way - 1`` of its neighbours drawn at random: classes that are hard to tell
            apart, so that the episode rewards what is specific to its classes.

    Raises:
        ValueError: If ``k_way`` exceeds the number of classes, ``batch_size < k_way``, a class repeats or has no
            images, or ``neighbours`` has the wrong shape or lists a class as its own neighbour.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        classes: Sequence[int],
        k_way: int,
        batch_size: int,
        seed: int = 0,
        neighbours: torch.Tensor | None = None,
    ):
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
        if neighbours is not None:
            n = len(class_list)
            if (
                not isinstance(neighbours, torch.Tensor)
                or neighbours.is_floating_point()
                or neighbours.ndim != 2
                or neighbours.shape[0] != n
                or not k_way - 1 <= neighbours.shape[1] < n
            ):
                raise ValueError(
                    f"neighbours must be an integer ({n}, m) tensor with {k_way - 1} <= m < {n}, got "
                    f"{getattr(neighbours, 'shape', neighbours)}"
                )
            neighbours = neighbours.detach().cpu().long()
            rows = torch.arange(n)[:, None]
            if bool(((neighbours < 0) | (neighbours >= n)).any()) or bool((neighbours == rows).any()):
                raise ValueError("neighbours must hold positions in classes, none of them the class's own")
            if any(len(set(row)) != len(row) for row in neighbours.tolist()):
                raise ValueError("neighbours must not repeat a class within a row")
        self.neighbours = neighbours
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
        if self.neighbours is None:
            pick = torch.randperm(len(self.classes), generator=g)[: self.k_way]  # (k,)
        else:  # an anchor and k - 1 of its neighbours, in random order
            anchor = int(torch.randint(len(self.classes), (1,), generator=g))
            row = self.neighbours[anchor]
            others = row[torch.randperm(len(row), generator=g)[: self.k_way - 1]]
            pick = torch.cat([torch.tensor([anchor]), others])[torch.randperm(self.k_way, generator=g)]
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
            "neighbours": None if self.neighbours is None else hashlib.sha256(self.neighbours.numpy()).hexdigest(),
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
            ValueError: If the state lacks keys or came from a sampler with other classes, sizes, k_way, batch size or
                neighbours.
        """
        state = {"neighbours": None, **state}  # states written before neighbour episodes existed
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
