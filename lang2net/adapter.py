"""LanguageConditionedAdapter (descriptions -> TaskAdaptation) and TaskAdaptation (bind, merge, mixed-task batches).

Axis legend: b images, t tasks, c classes (padded across tasks), e text width, f pooled-feature width.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import Tensor, nn

from . import cards, export, hub
from .backbones import create_backbone, feature_dim, pooled_features
from .config import AdapterConfig, TargetSpec
from .generator import TaskGenerator
from .heads import head_logits
from .injection import _INJECTED, _INJECTED_LOCK, Injection, inject, plain_copy
from .lowrank import LowRankDelta, fold_weight
from .text import TextEncoder, normalize_descriptions

__all__ = ["LanguageConditionedAdapter", "TaskAdaptation", "TaskClassifier", "attach", "mixed_task_logits"]

logger = logging.getLogger(__name__)


# helpers


def _spec_of(target) -> TargetSpec:
    return TargetSpec(target.name, target.kind, target.in_features, target.out_features, tuple(target.kernel_size))


def attach(backbone: nn.Module, specs: Sequence[TargetSpec], rank: int | None) -> Injection:
    """The backbone's injection for these targets: reuses one already on the backbone (so several tasks and adapters
    share one set of hooks) and checks that every target exists there with the shapes the task was made for."""
    with _INJECTED_LOCK:  # get-or-inject in one step: threads binding tasks to one fresh backbone share one injection
        inj = _INJECTED.get(backbone)
        if inj is None:
            names = [s.name for s in specs]
            missing = [n for n in names if n not in dict(backbone.named_modules())]
            if missing:
                raise ValueError(
                    f"this task/generator was made for a backbone with layers {missing[:3]}..., which "
                    f"{type(backbone).__name__} does not have; use the backbone named in its config"
                )
            inj = inject(backbone, targets=names, rank=None)
    for spec in specs:
        have = inj.targets.get(spec.name)
        if have is None:
            raise ValueError(
                f"target '{spec.name}' is not injected in {type(backbone).__name__}; remove() the other injection first"
            )
        if _spec_of(have).shape_group != spec.shape_group:
            raise ValueError(
                f"target '{spec.name}' was {spec.shape_group} when this task was made, but is {_spec_of(have).shape_group} "
                f"in this {type(backbone).__name__}: a task made for one backbone cannot run on another"
            )
    return inj


def _check_architecture(expected: str, backbone: nn.Module) -> None:
    """Warn when timm says the backbone is another architecture; the shape checks decide whether it can run."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    actual = cfg.get("architecture") if isinstance(cfg, dict) else None
    if actual and actual != expected.split(".")[0].removeprefix("timm/"):
        warnings.warn(f"this task was made for {expected!r}, the backbone is {actual!r}", stacklevel=3)


def _non_finite(deltas: Mapping[str, LowRankDelta], head_weight: Tensor, head_bias: Tensor) -> str | None:
    """The first of the head and the deltas that holds inf or nan, by name; None when all are finite."""
    if not torch.isfinite(head_weight).all() or not torch.isfinite(head_bias).all():
        return "the head"
    return next((f"the delta for '{n}'" for n, d in deltas.items() if not d.is_finite()), None)


def _check_feature_dim(backbone: nn.Module, width: int) -> None:
    if feature_dim(backbone) != width:
        raise ValueError(
            f"the head expects {width} pooled features but {type(backbone).__name__} gives {feature_dim(backbone)}: "
            "a task made for one backbone cannot run on another"
        )


# classes


@dataclass(eq=False)
class TaskAdaptation:
    """A generated classifier: class names and descriptions, backbone deltas and a linear head.

    Attributes:
        class_names: the classes, in logit order.
        descriptions: class -> the descriptions it was generated from.
        deltas: target name -> shared LowRankDelta.
        head_weight: (c, f) head weights in the backbone's pooled-feature space.
        head_bias: (c,).
        backbone: the timm model name the task was made for.
        target_specs: the adapted layers with their shapes (checked when the task is bound or merged).
        generator: where the generator came from (a folder, a Hub id, or None).
    """

    class_names: list[str]
    descriptions: dict[str, list[str]]
    deltas: dict[str, LowRankDelta]
    head_weight: Tensor
    head_bias: Tensor
    backbone: str
    target_specs: list[TargetSpec] = field(default_factory=list)
    generator: str | None = None
    backbone_weights: str | None = None  # the weight source of the backbone it was made for ("packaged:...", "timm")

    def __post_init__(self) -> None:
        c = len(self.class_names)
        if self.head_weight.ndim != 2 or self.head_weight.shape[0] != c or self.head_bias.shape != (c,):
            raise ValueError(
                f"head must be ({c}, f) and ({c},) for {c} classes, got {tuple(self.head_weight.shape)} and {tuple(self.head_bias.shape)}"
            )
        if any(d.batched for d in self.deltas.values()):
            raise ValueError("a TaskAdaptation holds shared deltas; select() one task of a batched generation")
        if not self.head_weight.is_floating_point() or not self.head_bias.is_floating_point():
            raise TypeError(f"head must be floating-point, got {self.head_weight.dtype} and {self.head_bias.dtype}")
        bad = _non_finite(self.deltas, self.head_weight, self.head_bias)
        if bad:
            raise ValueError(f"non-finite values (inf/nan) in {bad}: such a task would poison any model it runs in")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def bind(self, backbone: nn.Module) -> TaskClassifier:
        """An nn.Module images -> logits (b, c) running ``backbone`` under this task (the backbone is not copied)."""
        return TaskClassifier(self, backbone)

    def merge(self, backbone: nn.Module) -> nn.Module:
        """A standalone copy of ``backbone`` with the deltas folded in and the classifier reset to this task's classes.

        The copy has no hooks and no lang2net dependency at run time; its logits equal ``bind(backbone)``'s.
        """
        _check_architecture(self.backbone, backbone)
        _check_feature_dim(backbone, self.head_weight.shape[1])
        model = plain_copy(backbone)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for spec in self.target_specs:
                layer = modules.get(spec.name)
                if layer is None or _weight_spec(spec.name, layer) != spec.shape_group:
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
        model.pretrained_cfg = cfg
        return model

    # Hub and export (the machinery lives in hub.py)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        backbone_weights: str | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        **push_kwargs: Any,
    ) -> Path | Any:
        """Write task_config.json, model.safetensors and a model card listing the classes, atomically.

        Args:
            save_directory: the folder (replaced as a whole if it holds an earlier lang2net artifact).
            backbone_weights: the weights the backbone was loaded with (``AdapterConfig.backbone_weights``), for the
                card's base model and usage snippet.
            repo_id, push_to_hub: also upload the folder to this Hub repo (see :meth:`push_to_hub`).
        """
        path = hub.save_task(
            self, save_directory, repo_id=repo_id, backbone_weights=backbone_weights or self.backbone_weights
        )
        if push_to_hub:
            return self.push_to_hub(
                repo_id or path.name, backbone_weights=backbone_weights or self.backbone_weights, **push_kwargs
            )
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
        return hub.load_task(
            cls,
            pretrained_model_name_or_path,
            revision=revision,
            map_location=map_location,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        backbone_weights: str | None = None,
        commit_message: str = "Upload lang2net task",
        **kwargs: Any,
    ) -> Any:
        """Upload the folder :meth:`save_pretrained` writes, in one commit (``kwargs``: private, token, branch,
        create_pr, allow_patterns, ignore_patterns, delete_patterns, as in huggingface_hub)."""

        def write(folder: Path, repo: str) -> None:
            hub.write_task(self, folder, name=repo, backbone_weights=backbone_weights or self.backbone_weights)

        return hub.push_folder(write, repo_id, commit_message=commit_message, **kwargs)

    def to_peft(
        self,
        save_directory: str | os.PathLike,
        *,
        model_args: Mapping[str, Any] | None = None,
        backbone_weights: str | None = None,
    ) -> Path:
        """A peft LoRA folder: ``PeftModel.from_pretrained(timm.create_model(backbone, num_classes=C), folder)``
        (with the backbone's weights) gives this task's logits. ``model_args``: extra timm.create_model arguments."""
        return export.export_peft(
            self, save_directory, model_args=model_args, backbone_weights=backbone_weights or self.backbone_weights
        )

    def to_timm(
        self,
        save_directory: str | os.PathLike,
        backbone: nn.Module,
        *,
        model_args: Mapping[str, Any] | None = None,
        backbone_weights: str | None = None,
    ) -> Path:
        """A timm folder of ``merge(backbone)``: ``timm.create_model("local-dir:" + folder, pretrained=True)`` loads
        it, with ``label_names`` / ``label_descriptions`` in its pretrained_cfg. ``model_args``: the extra
        timm.create_model arguments ``backbone`` was built with (img_size, ...)."""
        return export.export_timm(
            self,
            save_directory,
            backbone,
            model_args=model_args,
            backbone_weights=backbone_weights or self.backbone_weights,
        )

    def to(self, device: torch.device | str) -> TaskAdaptation:
        return TaskAdaptation(
            list(self.class_names),
            dict(self.descriptions),
            {n: d.to(device) for n, d in self.deltas.items()},
            self.head_weight.to(device),
            self.head_bias.to(device),
            self.backbone,
            list(self.target_specs),
            self.generator,
            self.backbone_weights,
        )

    def __repr__(self) -> str:
        return f"TaskAdaptation({self.num_classes} classes, {len(self.deltas)} deltas, backbone={self.backbone!r})"


def _weight_spec(name: str, layer: nn.Module) -> tuple:
    w = getattr(layer, "weight", None)
    if w is None:
        return ()
    kind = "linear" if w.ndim == 2 else "conv2d"
    kernel = (1, 1) if w.ndim == 2 else tuple(w.shape[2:])
    return (kind, w.shape[1], w.shape[0], kernel)


class TaskClassifier(nn.Module):
    """images -> logits (b, c) of one task: the backbone under the task's deltas, pooled features, generated head."""

    def __init__(self, task: TaskAdaptation, backbone: nn.Module) -> None:
        super().__init__()
        _check_architecture(task.backbone, backbone)
        _check_feature_dim(backbone, task.head_weight.shape[1])
        self.backbone = backbone
        self.task = task
        self.injection = attach(backbone, task.target_specs, rank=None) if task.deltas else None
        device = next(backbone.parameters()).device
        self.head = nn.Linear(task.head_weight.shape[1], task.num_classes).to(device)
        with torch.no_grad():
            self.head.weight.copy_(task.head_weight)
            self.head.bias.copy_(task.head_bias)
        self.deltas = {n: d.to(device) for n, d in task.deltas.items()}
        self.class_names = list(task.class_names)

    def forward(self, images: Tensor) -> Tensor:
        if self.injection is None:
            return self.head(pooled_features(self.backbone, images))
        with self.injection.apply(self.deltas):
            features = pooled_features(self.backbone, images)  # (b, f)
        return self.head(features.to(self.head.weight.dtype))


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
    f = tasks[0].head_weight.shape[1]
    weight = images.new_zeros(len(tasks), c_max, f)
    bias = images.new_zeros(len(tasks), c_max)
    mask = torch.zeros(len(tasks), c_max, dtype=torch.bool, device=images.device)
    for i, task in enumerate(tasks):
        weight[i, : task.num_classes] = task.head_weight.to(weight)
        bias[i, : task.num_classes] = task.head_bias.to(bias)
        mask[i, : task.num_classes] = True
    if names:
        inj = attach(backbone, tasks[0].target_specs, rank=None)
        per_sample = {
            n: LowRankDelta(
                torch.stack([t.deltas[n].A for t in tasks]).to(images.device)[task_ids],
                torch.stack([t.deltas[n].B for t in tasks]).to(images.device)[task_ids],
            )
            for n in names
        }
        with inj.apply(per_sample):
            features = pooled_features(backbone, images)
    else:
        features = pooled_features(backbone, images)
    logits = head_logits(features.to(weight.dtype), weight[task_ids], bias[task_ids])  # (b, c_max)
    return logits.masked_fill(~mask[task_ids], float("-inf")), mask[task_ids]


class LanguageConditionedAdapter(
    nn.Module, PyTorchModelHubMixin, library_name="lang2net", tags=list(cards.HUB_TAGS), license=cards.LICENSE
):
    """The generator: class descriptions -> a TaskAdaptation (backbone deltas + head) for one timm backbone.

    Only the generator's parameters live in this module (and in its state_dict). The text encoder is frozen and
    loaded on first use; the backbone is the user's (``create_backbone()`` builds the configured one). Saving, loading
    and pushing go through huggingface_hub's mixin interface, with lang2net's strict loading and atomic saving.
    """

    def __init__(self, config: AdapterConfig | None = None, *, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        config = config if config is not None else AdapterConfig()
        if not isinstance(config, AdapterConfig):
            raise TypeError(f"config must be an AdapterConfig, got {type(config).__name__}")
        self._text_encoder = text_encoder
        if not config.resolved:
            config = self._resolve(config)
        self.config = config
        self.generator = TaskGenerator(config)
        self.source: str | None = None  # set by from_pretrained
        self._backbone: nn.Module | None = None  # attached backbone: referenced, never a submodule (not saved)
        self._injection: Injection | None = None

    def _resolve(self, config: AdapterConfig) -> AdapterConfig:
        """Fill text_dim, feature_dim and the target list from the text encoder and a randomly initialised backbone."""
        text_dim = config.text_dim or self.text_encoder_for(config).dim
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bypassed layers are recorded below, not repeated at every build
            backbone = create_backbone(config.backbone, "random", **config.backbone_kwargs)
            specs = config.target_specs
            if specs is None and config.delta_mode != "none":
                inj = inject(backbone, targets=config.targets, rank=config.rank)
                specs = [_spec_of(t) for t in inj.targets.values()]
                inj.remove()
        return dataclasses.replace(
            config, text_dim=text_dim, feature_dim=feature_dim(backbone), target_specs=specs or []
        )

    def text_encoder_for(self, config: AdapterConfig) -> TextEncoder:
        if self._text_encoder is None:
            self._text_encoder = TextEncoder(config.text_encoder)
        return self._text_encoder

    @property
    def text_encoder(self) -> TextEncoder:
        """The frozen text encoder (loaded on first use; its embeddings are cached)."""
        return self.text_encoder_for(self.config)

    def create_backbone(self, weights: str | None = None, **kwargs) -> nn.Module:
        """The configured timm backbone (frozen, eval) with ``config.backbone_weights`` unless ``weights`` is given."""
        return create_backbone(
            self.config.backbone, weights or self.config.backbone_weights, **{**self.config.backbone_kwargs, **kwargs}
        )

    # generation

    def encode(self, descriptions: Mapping[str, str | Sequence[str]]) -> Tensor:
        """Class embeddings (c, e): the paraphrases of each class averaged (cached by text)."""
        return self.text_encoder.encode_classes(descriptions)

    def generate(
        self, descriptions: Mapping[str, str | Sequence[str]], *, embeddings: Tensor | None = None
    ) -> TaskAdaptation:
        """Descriptions -> TaskAdaptation. ``embeddings`` (c, e) skips the text encoder when already computed."""
        descriptions = normalize_descriptions(descriptions)
        if embeddings is None:
            embeddings = self.encode(descriptions)
        if not isinstance(embeddings, Tensor) or not embeddings.is_floating_point():
            got = f"a {embeddings.dtype} tensor" if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise TypeError(f"embeddings must be a floating-point tensor (c, e), got {got}")
        if embeddings.shape != (len(descriptions), self.config.text_dim):
            raise ValueError(
                f"embeddings must be ({len(descriptions)}, {self.config.text_dim}), got {tuple(embeddings.shape)}"
            )
        if not torch.isfinite(embeddings).all():
            raise ValueError("embeddings hold inf/nan; check the text encoder or the embeddings given")
        was_training = self.training
        self.eval()
        try:
            param = next(self.parameters())
            with torch.no_grad():  # the generator's own dtype: float64 embeddings for a bf16 generator are fine
                deltas, weight, bias = self.generator(embeddings.to(param.device, param.dtype)[None])
        finally:
            self.train(was_training)
        bad = _non_finite({n: d.select(0) for n, d in deltas.items()}, weight[0], bias[0])
        if bad:
            raise ValueError(
                f"the generator produced non-finite values (inf/nan) in {bad}; its parameters are corrupt or diverged "
                f"(reload or retrain it), or the embeddings are out of range (max |e| = {embeddings.abs().max():.3g}); "
                "no task was made"
            )
        return TaskAdaptation(
            class_names=list(descriptions),
            descriptions=descriptions,
            deltas={n: d.select(0) for n, d in deltas.items()},
            head_weight=weight[0],
            head_bias=bias[0],
            backbone=self.config.backbone,
            target_specs=list(self.config.target_specs),
            generator=self.source,
            backbone_weights=self.config.backbone_weights,
        )

    # training path (activation space, differentiable)

    def attach(self, backbone: nn.Module) -> LanguageConditionedAdapter:
        """Use ``backbone`` (frozen) for the differentiable path ``adapter(images, class_embeddings)``.

        The backbone is injected once (or its existing injection reused); it is referenced, not registered, so the
        adapter's state_dict stays the generator's alone.
        """
        _check_feature_dim(backbone, self.config.feature_dim)
        inj = attach(backbone, self.config.target_specs, rank=self.config.rank) if self.config.target_specs else None
        backbone.requires_grad_(False)
        # plain attributes, not submodules: the backbone must stay out of the generator's state_dict
        object.__setattr__(self, "_backbone", backbone)
        object.__setattr__(self, "_injection", inj)
        return self

    @property
    def backbone(self) -> nn.Module | None:
        return self._backbone

    def forward(
        self,
        images: Tensor,
        class_embeddings: Tensor,
        mask: Tensor | None = None,
        task_ids: Tensor | None = None,
    ) -> Tensor:
        """Differentiable logits for training.

        Args:
            images: (b, C, H, W) for the backbone given to :meth:`attach`.
            class_embeddings: (c, e) for one task shared by the batch, or (t, c, e) for a batch of tasks.
            mask: (t, c) True for real classes when tasks have different class counts.
            task_ids: (b,) the task of each image (needed when t > 1).

        Returns:
            (b, c) logits; padded classes of a task are -inf.
        """
        if class_embeddings.ndim == 2:
            class_embeddings = class_embeddings[None]
        t = class_embeddings.shape[0]
        if task_ids is None:
            if t != 1:
                raise ValueError(f"{t} tasks given: pass task_ids (b,) to say which task each image belongs to")
            task_ids = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        if mask is None:
            mask = torch.ones(class_embeddings.shape[:2], dtype=torch.bool, device=class_embeddings.device)
        backbone, inj = self._backbone, self._injection
        if backbone is None:
            raise RuntimeError("call adapter.attach(backbone) before adapter(images, class_embeddings)")
        deltas, weight, bias = self.generator(class_embeddings, mask)
        if inj is None:
            features = pooled_features(backbone, images)
        else:
            chosen = (
                {n: d.select(0) for n, d in deltas.items()}
                if t == 1
                else {n: LowRankDelta(d.A[task_ids], d.B[task_ids], d.scale) for n, d in deltas.items()}
            )
            with inj.apply(chosen, strategy="activation"):
                features = pooled_features(backbone, images)
        if t == 1:
            logits = head_logits(features.to(weight.dtype), weight[0], bias[0])
            return logits.masked_fill(~mask[0], float("-inf"))
        logits = head_logits(features.to(weight.dtype), weight[task_ids], bias[task_ids])
        return logits.masked_fill(~mask[task_ids], float("-inf"))

    # Hub (PyTorchModelHubMixin's interface; the mixin's non-strict loading is replaced, the machinery is in hub.py)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        metrics: str | os.PathLike | Mapping | Sequence | None = None,
        datasets: Sequence[str] | None = None,
        recipe: str | os.PathLike | None = None,
        **push_kwargs: Any,
    ) -> Path | Any:
        """Write config.json, model.safetensors (the generator only) and a model card README.md, atomically.

        Args:
            save_directory: the folder (replaced as a whole if it holds an earlier lang2net artifact).
            repo_id: the Hub id the card's usage snippet loads (default: the folder); with ``push_to_hub``, the repo.
            metrics: evaluation results for the card's model-index: a JSON file or object (see ``cards.read_metrics``).
            datasets: Hub dataset ids for the card's metadata.
            recipe: the recipe YAML that built it (default: ``hub_configs/<name>.yaml`` next to ``adapters/<name>``).
        """
        path = hub.save_generator(
            self, save_directory, repo_id=repo_id, metrics=metrics, datasets=datasets, recipe=recipe
        )
        if push_to_hub:
            card = {"metrics": metrics, "datasets": datasets, "recipe": recipe}
            return self.push_to_hub(repo_id or path.name, **card, **push_kwargs)
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
        text_encoder: TextEncoder | None = None,
    ) -> LanguageConditionedAdapter:
        """A generator from a folder or a Hub repo id (``revision`` or ``"owner/name@revision"`` pins a commit;
        offline, including ``HF_HUB_OFFLINE=1``, it reads the Hub cache). Builds neither a backbone nor a text encoder.

        Raises:
            FileNotFoundError: the folder, repo or one of its files is missing.
            ValueError: not a lang2net generator, an unknown config key, a newer config version, a corrupt
                safetensors file, or missing / unexpected / misshapen weights.
        """
        return hub.load_generator(
            cls,
            pretrained_model_name_or_path,
            revision=revision,
            map_location=map_location,
            text_encoder=text_encoder,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload lang2net generator",
        metrics: str | os.PathLike | Mapping | Sequence | None = None,
        datasets: Sequence[str] | None = None,
        recipe: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Any:
        """Upload the folder :meth:`save_pretrained` writes, in one commit (``kwargs``: private, token, branch,
        create_pr, allow_patterns, ignore_patterns, delete_patterns, as in huggingface_hub)."""

        def write(folder: Path, repo: str) -> None:
            hub.write_generator(self, folder, name=repo, metrics=metrics, datasets=datasets, recipe=recipe)

        return hub.push_folder(write, repo_id, commit_message=commit_message, **kwargs)

    def generate_model_card(self, name: str | None = None, **card: Any) -> ModelCard:
        """The model card save_pretrained writes (``card``: metrics, datasets, recipe)."""
        return hub.generator_card(self, name=name or self.source or "lang2net-generator", **card)[0]

    def _save_pretrained(self, save_directory: Path) -> None:
        hub.write_generator(self, Path(save_directory), name=str(save_directory))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs: Any) -> LanguageConditionedAdapter:
        kwargs.pop("config", None)
        kwargs.pop("strict", None)  # always strict
        return hub.load_generator(cls, model_id, **kwargs)
