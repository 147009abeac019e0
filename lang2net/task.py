"""TaskAdaptation (a generated classifier), TaskClassifier (images -> logits) and mixed-task batches.

One forward path, :func:`adapted_logits`: the backbone under the task's deltas, pooled features, the generated head.
Axis legend: b images, t tasks, c classes (padded across tasks), f pooled-feature width.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .backbones import BackboneSplit, data_config, feature_dim, pooled_features
from .engine.injection import Injection, plain_copy, shared_injection
from .engine.lowrank import LowRankDelta, fold_weight
from .engine.targets import Target, describe_layer
from .heads import head_logits
from .io import export, folders
from .io.records import TaskData
from .utils.checks import check_int

__all__ = ["Predictions", "TaskAdaptation", "TaskClassifier", "adapted_logits", "attach", "mixed_task_logits"]


# helpers


def attach(backbone: nn.Module, specs: Sequence[Target]) -> Injection:
    """The backbone's injection for these targets: reuses one already on the backbone (so several tasks and adapters
    share one set of hooks) and checks that every target exists there with the shapes the task was made for."""
    inj = shared_injection(backbone, [s.name for s in specs])
    for spec in specs:
        have = inj.targets.get(spec.name)
        if have is None:
            raise ValueError(
                f"target '{spec.name}' is not injected in {type(backbone).__name__}; remove() the other injection first"
            )
        if have.shape_group != spec.shape_group:
            raise ValueError(
                f"target '{spec.name}' was {spec.shape_group} when this task was made, but is {have.shape_group} "
                f"in this {type(backbone).__name__}: a task made for one backbone cannot run on another"
            )
    return inj


def adapted_logits(
    backbone: nn.Module,
    injection: Injection | None,
    deltas: Mapping[str, LowRankDelta],
    weight: Tensor,
    bias: Tensor,
    images: Tensor,
    *,
    strategy: str = "auto",
    split: BackboneSplit | None = None,
) -> Tensor:
    """The one forward path: ``backbone`` under ``deltas`` -> pooled features (b, f) -> head -> logits (b, c).

    ``weight`` is (c, f) shared or (b, c, f) per sample, ``bias`` (c,) or (b, c); deltas may carry a leading batch
    axis (one per sample). With no injection or no deltas the backbone runs plain. With ``split`` (a cut of
    ``backbone`` before every adapted layer), ``images`` are the activations at the cut and only the rest runs.
    """

    def features_of(x: Tensor) -> Tensor:
        return split.rest(x) if split is not None else pooled_features(backbone, x)

    if injection is None or not deltas:
        features = features_of(images)
    else:
        with injection.apply(deltas, strategy=strategy):
            features = features_of(images)  # (b, f)
    return head_logits(features.to(weight.dtype), weight, bias)


def _check_architecture(expected: str, backbone: nn.Module) -> None:
    """Warn when timm says the backbone is another architecture; the shape checks decide whether it can run."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    actual = cfg.get("architecture") if isinstance(cfg, dict) else None
    if actual and actual != expected.split(".")[0].removeprefix("timm/"):
        warnings.warn(f"this task was made for {expected!r}, the backbone is {actual!r}", stacklevel=3)


def _check_feature_dim(backbone: nn.Module, width: int) -> None:
    if feature_dim(backbone) != width:
        raise ValueError(
            f"the head expects {width} pooled features but {type(backbone).__name__} gives {feature_dim(backbone)}: "
            "a task made for one backbone cannot run on another"
        )


# classes


class TaskAdaptation(TaskData):
    """A generated classifier: class names and descriptions, backbone deltas and a linear head (see ``TaskData``).

    ``bind`` runs it on a backbone, ``merge`` folds it into a plain timm model, ``save_pretrained`` /
    ``from_pretrained`` / ``push_to_hub`` share it, ``to_peft`` / ``to_timm`` export it.
    """

    def bind(self, backbone: nn.Module) -> TaskClassifier:
        """An nn.Module images -> logits (b, c) running ``backbone`` under this task (the backbone is not copied)."""
        return TaskClassifier(self, backbone)

    def merge(self, backbone: nn.Module) -> nn.Module:
        """A standalone copy of ``backbone`` with the deltas folded in and the classifier reset to this task's classes.

        The copy has no hooks and no lang2net dependency at run time; its logits equal ``bind(backbone)``'s.
        """
        _check_architecture(self.backbone, backbone)
        _check_feature_dim(backbone, self.feature_dim)
        model = plain_copy(backbone)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for spec in self.target_specs:
                layer = modules.get(spec.name)
                found = describe_layer(spec.name, layer) if layer is not None else None
                if found is None or found.shape_group != spec.shape_group:
                    raise ValueError(
                        f"target '{spec.name}' {spec.shape_group} does not fit this {type(backbone).__name__}"
                    )
                delta = self.deltas.get(spec.name)
                if delta is not None:
                    folded = fold_weight(layer.weight, delta.to(layer.weight.device))
                    if not torch.isfinite(folded).all():  # e.g. a finite delta that overflows a bf16/fp16 weight
                        raise ValueError(f"merging the delta for '{spec.name}' gives non-finite weights")
                    layer.weight.copy_(folded)
            model.reset_classifier(self.num_classes)
            head = model.get_classifier()
            head.weight.copy_(self.head_weight.to(head.weight))
            head.bias.copy_(self.head_bias.to(head.bias))
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        cfg.update(num_classes=self.num_classes, label_names=list(self.class_names))
        if self.preprocessing.get("input_size"):
            cfg.update(input_size=tuple(self.preprocessing["input_size"]))
        model.pretrained_cfg = cfg
        return model

    # Hub and export (the files are written by lang2net.io from this task's data)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        **push_kwargs: Any,
    ) -> Path | Any:
        """Write task_config.json, model.safetensors and a model card listing the classes, atomically.

        Args:
            save_directory: the folder (replaced as a whole if it holds an earlier lang2net artifact).
            repo_id, push_to_hub: also upload the folder to this Hub repo (see :meth:`push_to_hub`).
        """
        path = folders.save_task(self, save_directory, repo_id=repo_id)
        if push_to_hub:
            return self.push_to_hub(repo_id or path.name, **push_kwargs)
        return path

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
    ) -> TaskAdaptation:
        """A task from a folder or a Hub repo id (``revision`` pins a commit; offline it reads the Hub cache).

        Raises:
            FileNotFoundError: the folder, repo or one of its files is missing.
            ValueError: the folder is not a lang2net task, its format is newer, or a tensor is missing or misshapen.
        """
        fields = folders.read_task(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        source = fields.pop("source")
        try:
            task = cls(**fields)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None
        return task.to(map_location)

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload lang2net task", **kwargs: Any) -> Any:
        """Upload the folder :meth:`save_pretrained` writes, in one commit (``kwargs``: private, token, branch,
        create_pr, allow_patterns, ignore_patterns, delete_patterns, as in huggingface_hub)."""

        def write(folder: Path, repo: str) -> None:
            folders.write_task(folder, self, name=repo)

        return folders.push_folder(write, repo_id, commit_message=commit_message, **kwargs)

    def to_peft(self, save_directory: str | os.PathLike, *, model_args: Mapping[str, Any] | None = None) -> Path:
        """A peft LoRA folder: ``PeftModel.from_pretrained(timm.create_model(backbone, num_classes=C), folder)``
        (with the backbone's weights) gives this task's logits. ``model_args``: extra timm.create_model arguments."""
        return export.export_peft(self, save_directory, model_args=model_args)

    def to_timm(
        self, save_directory: str | os.PathLike, backbone: nn.Module, *, model_args: Mapping[str, Any] | None = None
    ) -> Path:
        """A timm folder of ``merge(backbone)``: ``timm.create_model("local-dir:" + folder, pretrained=True)`` loads
        it, with ``label_names`` / ``label_descriptions`` in its pretrained_cfg. ``model_args``: the extra
        timm.create_model arguments ``backbone`` was built with (img_size, ...)."""
        return export.export_timm(self, save_directory, self.merge(backbone), model_args=model_args)


class Predictions(NamedTuple):
    """What :meth:`TaskClassifier.predict` returns: the top label per image and every class's probability."""

    labels: list[str]
    probabilities: Tensor  # (n, c), rows sum to 1, columns in class_names order
    class_names: list[str]

    def top(self, k: int = 1) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` most probable (label, probability) pairs, best first."""
        check_int("k", k)
        values, index = self.probabilities.topk(min(k, len(self.class_names)), dim=-1)
        return [
            [(self.class_names[i], v) for i, v in zip(row_i, row_v, strict=True)]
            for row_i, row_v in zip(index.tolist(), values.tolist(), strict=True)
        ]


class TaskClassifier(nn.Module):
    """images -> logits (b, c) of one task: the backbone under the task's deltas, pooled features, generated head.

    ``forward`` takes prepared float input ``(b, 3, H, W)``; :meth:`preprocess` and :meth:`predict` take the images a
    user has (paths, PIL images, uint8 arrays of any channel count) and prepare them as the generator was trained:
    the task's recorded input size and the backbone's mean and std (``data_config``).
    """

    def __init__(self, task: TaskAdaptation, backbone: nn.Module) -> None:
        super().__init__()
        _check_architecture(task.backbone, backbone)
        _check_feature_dim(backbone, task.feature_dim)
        self.backbone = backbone
        self.task = task
        self.injection = attach(backbone, task.target_specs) if task.deltas else None
        device = next(backbone.parameters()).device
        self.head = nn.Linear(task.feature_dim, task.num_classes).to(device)
        with torch.no_grad():
            self.head.weight.copy_(task.head_weight)
            self.head.bias.copy_(task.head_bias)
        self.deltas = {n: d.to(device) for n, d in task.deltas.items()}
        self.class_names = list(task.class_names)
        self.data_config = data_config(backbone, task.preprocessing)  # the generator's input size wins over timm's

    def forward(self, images: Tensor) -> Tensor:
        return adapted_logits(self.backbone, self.injection, self.deltas, self.head.weight, self.head.bias, images)

    def preprocess(self, images: Any, img_size: int | None = None) -> Tensor:
        """Images (a path, PIL image or uint8 array/tensor, or a list of them) -> float ``(n, 3, S, S)`` input on the
        backbone's device, at the task's input size unless ``img_size`` is given (see ``data.prepare_images``)."""
        from .data.images import prepare_images

        device = next(self.backbone.parameters()).device
        return prepare_images(images, self.data_config, img_size, device=device)

    @torch.no_grad()
    def predict(self, images: Any, *, batch_size: int = 64, img_size: int | None = None) -> Predictions:
        """Labels and probabilities for images of any kind :meth:`preprocess` accepts, ``batch_size`` at a time."""
        from .data.images import image_list, prepare_images

        check_int("batch_size", batch_size)
        if isinstance(images, Tensor) and images.is_floating_point():
            items: list[Any] = list(images.split(batch_size))
        else:
            listed = image_list(images)
            items = [listed[i : i + batch_size] for i in range(0, len(listed), batch_size)]
        device = next(self.backbone.parameters()).device
        probabilities = torch.cat(
            [
                self(prepare_images(b, self.data_config, img_size, device=device)).float().softmax(-1).cpu()
                for b in items
            ]
        )
        labels = [self.class_names[i] for i in probabilities.argmax(-1).tolist()]
        return Predictions(labels, probabilities, list(self.class_names))

    def extra_repr(self) -> str:
        return f"{len(self.class_names)} classes, {len(self.deltas)} deltas"

    def __repr__(self) -> str:  # the backbone's whole module tree is not what a user wants to read
        return f"TaskClassifier({self.extra_repr()}, backbone={type(self.backbone).__name__})"


def mixed_task_logits(
    backbone: nn.Module, tasks: Sequence[TaskAdaptation], images: Tensor, task_ids: Tensor
) -> tuple[Tensor, Tensor]:
    """Score each image against its own task's classes in one batch (one delta per sample).

    Returns:
        logits (b, c_max) with -inf where a task has fewer classes, and the mask (b, c_max) of real classes.
    """
    if not tasks:
        raise ValueError("mixed_task_logits needs at least one task")
    task_ids = torch.as_tensor(task_ids, device=images.device, dtype=torch.long)
    if task_ids.shape != (images.shape[0],) or int(task_ids.min()) < 0 or int(task_ids.max()) >= len(tasks):
        raise ValueError(
            f"task_ids must be ({images.shape[0]},) indices into {len(tasks)} tasks, got {task_ids.tolist()}"
        )
    names = [s.name for s in tasks[0].target_specs if s.name in tasks[0].deltas]
    for task in tasks[1:]:
        if [s.name for s in task.target_specs if s.name in task.deltas] != names:
            raise ValueError("tasks in one mixed batch must come from generators for the same targets")
    c_max = max(t.num_classes for t in tasks)
    f = tasks[0].feature_dim
    weight = images.new_zeros(len(tasks), c_max, f)
    bias = images.new_zeros(len(tasks), c_max)
    mask = torch.zeros(len(tasks), c_max, dtype=torch.bool, device=images.device)
    for i, task in enumerate(tasks):
        weight[i, : task.num_classes] = task.head_weight.to(weight)
        bias[i, : task.num_classes] = task.head_bias.to(bias)
        mask[i, : task.num_classes] = True
    inj = attach(backbone, tasks[0].target_specs) if names else None
    per_sample = {
        n: LowRankDelta(
            torch.stack([t.deltas[n].A for t in tasks]).to(images.device)[task_ids],
            torch.stack([t.deltas[n].B for t in tasks]).to(images.device)[task_ids],
        )
        for n in names
    }
    logits = adapted_logits(backbone, inj, per_sample, weight[task_ids], bias[task_ids], images)  # (b, c_max)
    return logits.masked_fill(~mask[task_ids], float("-inf")), mask[task_ids]
