"""LanguageConditionedAdapter: the generator, class descriptions -> TaskAdaptation, on PyTorchModelHubMixin.

Axis legend: b images, t tasks, c classes (padded across tasks), e text width, f pooled-feature width.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import Tensor, nn

from .backbones import BackboneSplit, create_backbone, data_config, feature_dim, pooled_features
from .config import AdapterConfig
from .engine.injection import Injection, inject
from .engine.lowrank import LowRankDelta
from .generator import TaskGenerator
from .heads import head_logits
from .io import cards, folders
from .io.records import first_non_finite
from .task import TaskAdaptation, _check_feature_dim, adapted_logits, attach
from .text import TextEncoder, normalize_descriptions

__all__ = ["LanguageConditionedAdapter"]

logger = logging.getLogger(__name__)


MAX_D_MODEL = 16384


def _check_sizes(config: AdapterConfig) -> None:
    """Refuse sizes that cannot mean anything before they allocate memory."""
    specs = config.target_specs or []
    if specs:
        limit = max(min(s.fan_in, s.out_features) for s in specs)
        if config.rank > limit:
            raise ValueError(
                f"rank={config.rank} exceeds {limit}, the largest rank any target of {config.backbone} can hold (min "
                "of its input and output width); LoRA-style ranks are 4-64"
            )
    if config.d_model > MAX_D_MODEL:
        raise ValueError(f"d_model={config.d_model} is over {MAX_D_MODEL}; the generator's width is usually 128-1024")


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
        _check_sizes(config)  # before any allocation: a typo like rank=10**7 fails here, not in the allocator
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
                specs = [dataclasses.replace(t, module_type="", per_sample=True) for t in inj.targets.values()]
                inj.remove()
        return dataclasses.replace(
            config,
            text_dim=text_dim,
            feature_dim=feature_dim(backbone),
            target_specs=specs or [],
            preprocessing=data_config(backbone, config.preprocessing),
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
        self,
        descriptions: Mapping[str, str | Sequence[str]],
        *,
        embeddings: Tensor | None = None,
        allow_single_class: bool = False,
    ) -> TaskAdaptation:
        """Descriptions -> TaskAdaptation. ``embeddings`` (c, e) skips the text encoder when already computed.

        A one-class task gives every image probability 1.0, so it is refused unless ``allow_single_class`` (e.g. to
        look at one class's deltas or head).
        """
        descriptions = normalize_descriptions(descriptions)
        if len(descriptions) == 1 and not allow_single_class:
            raise ValueError(
                f"one class ({next(iter(descriptions))!r}) makes a classifier that gives every image probability 1.0; "
                "describe at least two classes (or pass allow_single_class=True)"
            )
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
        bad = first_non_finite({n: d.select(0) for n, d in deltas.items()}, weight[0], bias[0])
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
            preprocessing=dict(self.config.preprocessing),
        )

    # training path (activation space, differentiable)

    def attach(self, backbone: nn.Module) -> LanguageConditionedAdapter:
        """Use ``backbone`` (frozen) for the differentiable path ``adapter(images, class_embeddings)``.

        The backbone is injected once (or its existing injection reused); it is referenced, not registered, so the
        adapter's state_dict stays the generator's alone.
        """
        _check_feature_dim(backbone, self.config.feature_dim)
        inj = attach(backbone, self.config.target_specs) if self.config.target_specs else None
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
        *,
        pooled: bool = False,
        split: BackboneSplit | None = None,
    ) -> Tensor:
        """Differentiable logits for training.

        Args:
            images: (b, C, H, W) for the backbone given to :meth:`attach`; with ``pooled``, the backbone's pooled
                features (b, f) instead (a head-only generator never changes the backbone, so they can be computed
                once: see ``lang2net.workflows.feature_bank``); with ``split``, the activations at its cut (the
                trunk before every adapted layer, computed once: see :func:`lang2net.backbones.split_backbone`).
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
        if pooled:
            if self.generator.deltas is not None:
                raise ValueError(
                    f"pooled=True skips the backbone, but this generator writes deltas (delta_mode="
                    f"{self.config.delta_mode!r}); only a head-only generator (delta_mode='none') can use pooled features"
                )
            if images.ndim != 2 or images.shape[1] != self.config.feature_dim:
                raise ValueError(f"pooled features must be (b, {self.config.feature_dim}), got {tuple(images.shape)}")
        elif self._backbone is None:
            raise RuntimeError("call adapter.attach(backbone) before adapter(images, class_embeddings)")
        if split is not None and (pooled or split.backbone is not self._backbone):
            raise ValueError("split must cut the attached backbone, and cannot be combined with pooled=True")
        deltas, weight, bias = self.generator(class_embeddings, mask)
        if t == 1:  # one task: its head and deltas shared by the batch
            weight, bias, mask = weight[0], bias[0], mask[0]
            chosen = {n: d.select(0) for n, d in deltas.items()}
        else:  # each image under its own task
            weight, bias, mask = weight[task_ids], bias[task_ids], mask[task_ids]
            chosen = {n: LowRankDelta(d.A[task_ids], d.B[task_ids], d.scale) for n, d in deltas.items()}
        if pooled:
            logits = head_logits(images.to(weight.dtype), weight, bias)
        else:
            logits = adapted_logits(
                self._backbone, self._injection, chosen, weight, bias, images, strategy="activation", split=split
            )  # (b, c)
        return logits.masked_fill(~mask, float("-inf"))

    def task_features(self, images: Tensor, class_embeddings: Tensor) -> Tensor:
        """(b, f) pooled features of ``images`` (b, C, H, W) under the deltas written for one task (c, e): what the
        head of :meth:`forward` reads (the attached backbone as it is for a head-only generator). The deltas do not
        depend on a head memory's mix, so a sweep over mixes can compute these once (see ``head_memory``)."""
        if self._backbone is None:
            raise RuntimeError("call adapter.attach(backbone) before adapter.task_features(images, class_embeddings)")
        if class_embeddings.ndim != 2:
            raise ValueError(f"class_embeddings must be one task (c, e), got shape {tuple(class_embeddings.shape)}")
        deltas = self.generator(class_embeddings[None])[0] if self.generator.deltas is not None else {}
        if not deltas:
            return pooled_features(self._backbone, images)
        with self._injection.apply({n: d.select(0) for n, d in deltas.items()}, strategy="activation"):
            return pooled_features(self._backbone, images)

    # Hub. The mixin's public save/load/push are kept in signature but routed through lang2net.io: saves are atomic
    # (the mixin writes in place) and loading is strict (the mixin decodes config.json leniently and loads weights
    # with strict=False by default). ``_save_pretrained`` / ``_from_pretrained`` are the mixin's hooks.

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        metrics: str | os.PathLike | Mapping | Sequence | None = None,
        datasets: Sequence[str] | None = None,
        recipe: str | os.PathLike | None = None,
        about: Mapping[str, Any] | None = None,
        **push_kwargs: Any,
    ) -> Path | Any:
        """Write config.json, model.safetensors (the generator only) and a model card README.md, atomically.

        Args:
            save_directory: the folder (replaced as a whole if it holds an earlier lang2net artifact).
            repo_id: the Hub id the card's usage snippet loads (default: the folder); with ``push_to_hub``, the repo.
            metrics: evaluation results for the card's model-index: a JSON file or object (see ``cards.read_metrics``).
            datasets: Hub dataset ids for the card's metadata.
            recipe: the recipe YAML that built it (default: ``hub_configs/<name>.yaml`` next to ``adapters/<name>``);
                its ``card:`` section gives the card's intended use, usage example, limits and credits.
            about: measured facts for the card: ``held_out`` (class names never trained on), ``results_table``
                (markdown with every baseline).
        """
        card = {"metrics": metrics, "datasets": datasets, "recipe": recipe, "about": about}
        path = folders.save_generator(save_directory, self.config, self._state(), repo_id=repo_id, **self._card(card))
        if push_to_hub:
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
        strict: bool = True,
        text_encoder: TextEncoder | None = None,
    ) -> LanguageConditionedAdapter:
        """A generator from a folder or a Hub repo id (``revision`` or ``"owner/name@revision"`` pins a commit;
        offline, including ``HF_HUB_OFFLINE=1``, it reads the Hub cache). Builds neither a backbone nor a text encoder.

        Args:
            strict: as in the mixin and ``load_state_dict``; True (the default here) refuses missing or unexpected
                weights, False loads the others and warns. Shapes, dtypes and finiteness are always checked.

        Raises:
            FileNotFoundError: the folder, repo or one of its files is missing.
            ValueError: not a lang2net generator, an unknown config key, a newer config version, a corrupt
                safetensors file, or missing / unexpected / misshapen weights.
        """
        return cls._from_pretrained(
            model_id=os.fspath(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            map_location=map_location,
            strict=strict,
            text_encoder=text_encoder,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
        text_encoder: TextEncoder | None = None,
        **ignored: Any,
    ) -> LanguageConditionedAdapter:
        ignored.pop("config", None)  # the mixin's leniently decoded config: the files are read strictly below
        ignored.pop("proxies", None)
        ignored.pop("resume_download", None)
        if ignored:
            raise TypeError(f"unexpected arguments {sorted(ignored)} for LanguageConditionedAdapter.from_pretrained")
        hub = {"cache_dir": cache_dir, "force_download": force_download or None, "token": token}
        hub["local_files_only"] = local_files_only or None
        config, state, label = folders.read_generator(model_id, revision=revision, **hub)
        # shapes first, on the meta device: a config that declares a huge generator must not allocate it (a stranger's
        # rank=10**7 would take the process down), and the real build below is no larger than the file just read
        try:
            with torch.device("meta"):
                expected = {k: tuple(v.shape) for k, v in cls(config, text_encoder=text_encoder).state_dict().items()}
        except (RuntimeError, OverflowError, TypeError, ValueError) as e:  # sizes past what torch can describe
            raise ValueError(f"{label}: describes a generator that cannot be built ({e})") from None
        what = f"the generator that {label}/{folders.CONFIG_NAME} describes"
        where = f"{label}/{folders.WEIGHTS_NAME}"
        if strict:
            folders.check_tensors(expected, state, where, what)
        else:
            common = {k: v for k, v in expected.items() if k in state}
            folders.check_tensors(common, {k: v for k, v in state.items() if k in common}, where, what)
            missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            if missing or unexpected:
                warnings.warn(
                    f"{where}: strict=False: missing {folders.few(missing)}; unexpected {folders.few(unexpected)}",
                    stacklevel=3,
                )
        adapter = cls(config, text_encoder=text_encoder)  # resolved config: builds neither a backbone nor a text model
        adapter.load_state_dict(state, strict=strict)
        adapter.source = label
        return adapter.to(map_location).eval()

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload lang2net generator",
        metrics: str | os.PathLike | Mapping | Sequence | None = None,
        datasets: Sequence[str] | None = None,
        recipe: str | os.PathLike | None = None,
        about: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Upload the folder :meth:`save_pretrained` writes, in one commit (``kwargs``: private, token, branch,
        create_pr, allow_patterns, ignore_patterns, delete_patterns, as in huggingface_hub)."""
        card = self._card({"metrics": metrics, "datasets": datasets, "recipe": recipe, "about": about})

        def write(folder: Path, repo: str) -> None:
            folders.write_generator(folder, self.config, self._state(), name=repo, **card)

        return folders.push_folder(write, repo_id, commit_message=commit_message, **kwargs)

    def generate_model_card(self, name: str | None = None, **card: Any) -> ModelCard:
        """The model card save_pretrained writes (``card``: metrics, datasets, recipe)."""
        n_params = sum(p.numel() for p in self.parameters())
        name = name or self.source or "lang2net-generator"
        return folders.generator_card(self.config, name=name, n_params=n_params, **self._card(card))[0]

    def __repr__(self) -> str:  # one line, not the generator's whole module tree
        c = self.config
        n = sum(p.numel() for p in self.parameters())
        return (
            f"LanguageConditionedAdapter(backbone={c.backbone!r}, text_encoder={c.text_encoder!r}, "
            f"delta_mode={c.delta_mode!r}, rank={c.rank}, targets={len(c.target_specs or [])}, params={n:,}, "
            f"source={self.source!r})"
        )

    def _state(self) -> dict[str, Tensor]:
        return dict(self.state_dict())

    def _card(self, card: dict[str, Any]) -> dict[str, Any]:
        """Card arguments plus the mixin's own metadata (library_name, license, tags)."""
        return {**card, "base": type(self)._hub_mixin_info.model_card_data}

    def _save_pretrained(self, save_directory: Path) -> None:
        folders.write_generator(Path(save_directory), self.config, self._state(), name=Path(save_directory).name)
