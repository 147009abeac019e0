"""Episodic meta-training of a generator on seen classes, on accelerate (CPU, one GPU, or data-parallel)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..adapter import LanguageConditionedAdapter
from ..backbones import BackboneSplit, split_backbone
from ..heads import head_logits
from ..utils.atomic import atomic_folder
from .episode_data import prepare_episode_data
from .feature_bank import FeatureBank
from .head_memory import calibrate_memory, fill_classifier_memory, fill_memory
from .recipe import Recipe

__all__ = ["TrainResult", "TrainingDiverged", "train"]

logger = logging.getLogger(__name__)

TRUNK_CACHE_BYTES = 4 * 2**30  # the most memory train.trunk_cache may hold


@dataclass
class TrainResult:
    """What a training call leaves: the saved generator folder (once all steps ran) and the trained generator."""

    generator_dir: Path | None
    adapter: LanguageConditionedAdapter
    steps: int


class TrainingDiverged(RuntimeError):
    """A non-finite loss stopped training; the last good checkpoint is kept."""


# helpers


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _init_from(adapter: LanguageConditionedAdapter, folder: str) -> None:
    """Copy every weight of a trained generator whose name and shape match (e.g. a head-only run's set encoder and
    head into a delta run); the others keep their initialisation."""
    donor = LanguageConditionedAdapter.from_pretrained(folder).state_dict()
    own = adapter.state_dict()
    matched = {k: v for k, v in donor.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"train.init_from={folder!r} shares no weights with this generator")
    adapter.load_state_dict(matched, strict=False)
    logger.info("initialised %d of %d tensors from %s", len(matched), len(own), folder)


def _checkpoints(output_dir: Path) -> list[Path]:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = (p for p in root.iterdir() if p.name.startswith("step_") and p.name[5:].isdigit() and p.is_dir())
    return sorted(found, key=lambda p: int(p.name[5:]))  # stray folders (step_old, ...) are not checkpoints


def _safetensors_device(device: torch.device) -> str:
    """safetensors names devices "cpu" or "cuda:0"; accelerate's CPU processes report "cpu:0", which it refuses."""
    return "cpu" if device.type == "cpu" else str(device)


# the loop


class _Run:
    """One training run's state: the pieces accelerate prepares plus the episode and paraphrase generators."""

    def __init__(
        self, recipe: Recipe, output_dir: Path, fold: int, head_only: bool, feature_store: Path | None = None
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        from ..data import EpisodeSampler

        cfg = recipe.train
        use_cuda = torch.cuda.is_available()
        self.accelerator = Accelerator(
            cpu=not use_cuda,
            mixed_precision=cfg.mixed_precision if use_cuda else "no",
            # head-only generators never use the task code that the delta queries read
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=head_only)],
        )
        self.recipe, self.output_dir, self.fold, self.feature_store = recipe, output_dir, fold, feature_store
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        adapter_cfg = dataclasses.replace(recipe.adapter, delta_mode="none") if head_only else recipe.adapter
        size = recipe.data.img_size  # the generator records the input size it is trained at
        adapter_cfg = dataclasses.replace(
            adapter_cfg, preprocessing={**adapter_cfg.preprocessing, "input_size": [3, size, size]}
        )
        self.adapter = LanguageConditionedAdapter(adapter_cfg)
        if cfg.init_from:
            _init_from(self.adapter, cfg.init_from)
        self.backbone = self.adapter.create_backbone().to(self.accelerator.device)
        self.data = prepare_episode_data(recipe, self.adapter, self.backbone, fold)
        self.bank = None  # head-only runs may read pooled features computed once (see workflows.feature_bank)
        if head_only and cfg.feature_views > 0:
            self.bank = FeatureBank.build(
                self.backbone,
                self.data.images,
                self.data.data_config,
                self.data.img_size,
                views=cfg.feature_views,
                augment=cfg.augment,
                seed=cfg.seed,
                device=self.accelerator.device,
                store=feature_store,
            )
        memories = [f for f in ("memory", "classifier_memory") if getattr(adapter_cfg, f)]
        if memories and not self.data.validation and cfg.memory_mix is None:
            raise ValueError(
                f"adapter.{memories[0]} chooses how much the head recalls on validation classes, but this fold has "
                f"none; use a class split with validation classes, set train.memory_mix, or adapter.{memories[0]}=false"
            )
        if adapter_cfg.feature_norm == "center":
            features = self.seen_features()
            self.adapter.generator.head.set_feature_statistics(features)
            if adapter_cfg.memory:  # filled now, mixed in after training: the head trains on its own
                seen = self.data.seen
                labels = self.data.labels[torch.isin(self.data.labels, torch.tensor(seen))]  # seen_features' order
                memory = fill_memory(self.adapter.generator.head, self.prototypes(seen), features, labels, seen)
                self.adapter.config.memory_size = memory
            if adapter_cfg.classifier_memory:  # the backbone's own classifier rows, keyed by their label texts
                head, encoder = self.adapter.generator.head, self.adapter.text_encoder
                self.adapter.config.classifier_memory_size = fill_classifier_memory(head, self.backbone, encoder)
        self.adapter.attach(self.backbone)
        self.split, self.trunk = (
            self._trunk() if not head_only and cfg.trunk_cache and cfg.augment == 0 else (None, None)
        )
        rank = self.accelerator.process_index
        neighbours = self._neighbours() if cfg.episodes == "neighbours" else None
        self.sampler = EpisodeSampler(
            self.data.labels,
            self.data.seen,
            cfg.k_way,
            cfg.batch_size,
            seed=cfg.seed + 1000 * rank,
            neighbours=neighbours,
        )
        self.paraphrase_rng = torch.Generator().manual_seed(cfg.seed + 7 + 1000 * rank)
        self.augment_rng = torch.Generator().manual_seed(cfg.seed + 11 + 1000 * rank)
        optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # the scheduler is stepped by hand: accelerate's wrapper would step it once per process
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, cfg.steps))
        self.model, self.optimizer = self.accelerator.prepare(self.adapter, optimizer)
        self.step = 0

    def _neighbours(self) -> Tensor:
        """(n, m) each seen class's ``m = 2 (k_way - 1)`` nearest other seen classes (positions in ``data.seen``) by
        the cosine similarity of their mean description embeddings."""
        text = F.normalize(self.prototypes(self.data.seen), dim=-1)
        similarity = (text @ text.T).fill_diagonal_(-float("inf"))
        m = min(2 * (self.recipe.train.k_way - 1), len(self.data.seen) - 1)
        return similarity.topk(m, dim=1).indices

    def _trunk(self) -> tuple[BackboneSplit | None, Tensor | None]:
        """The backbone cut before its first adapted layer, and the trunk's activations of every training-class image
        computed once, one row per image (rows of other images stay unused); (None, None) when the backbone cannot
        be cut or the activations would take more than ``TRUNK_CACHE_BYTES``."""
        from ..data import to_backbone_input

        names = list(self.adapter._injection.targets)  # the adapted layers, by name
        try:
            split = split_backbone(self.backbone, names)
        except ValueError as exc:
            logger.info("trunk cache off: %s", exc)
            return None, None
        index = torch.nonzero(torch.isin(self.data.labels, torch.tensor(self.data.seen))).flatten()
        trunk = None
        with torch.no_grad(), self.accelerator.autocast():
            for rows in index.split(self.recipe.eval.batch_size):
                x = to_backbone_input(
                    self.data.images[rows].to(self.accelerator.device), self.data.data_config, self.data.img_size
                )
                out = split.trunk(x).cpu()
                if trunk is None:
                    shape = (len(self.data.images), *out.shape[1:])
                    size = math.prod(shape) * out.element_size()
                    if size > TRUNK_CACHE_BYTES:
                        logger.info("trunk cache off: activations at %s would take %.1f GB", split.at, size / 1e9)
                        return None, None
                    trunk = torch.zeros(shape, dtype=out.dtype)
                trunk[rows] = out
        logger.info("trunk cache: activations %s at %s (%.0f MB)", tuple(trunk.shape), split.at, size / 2**20)
        return split, trunk

    def seen_features(self) -> Tensor:
        """(n, f) pooled features of the training classes' images, unaugmented, under the frozen backbone: what a
        centring head's statistics are taken from (the same on every run of a fold, so resuming stays exact)."""
        index = torch.nonzero(torch.isin(self.data.labels, torch.tensor(self.data.seen))).flatten()
        if self.bank is not None:
            return self.bank.plain(index)
        bank = FeatureBank.build(
            self.backbone,
            self.data.images[index],
            self.data.data_config,
            self.data.img_size,
            views=1,
            augment=0.0,
            seed=self.recipe.train.seed,
            device=self.accelerator.device,
            store=self.feature_store,
        )
        return bank.plain(torch.arange(len(index)))

    def episode(self) -> tuple[Tensor, Tensor, Tensor]:
        from ..data import to_backbone_input
        from ..data.augment import augment_batch

        classes, index = self.sampler.sample()
        if self.recipe.train.paraphrases == "mean":  # each class as inference sees it (encode_classes)
            embeddings = self.prototypes(classes.tolist())
        else:
            choice = [
                int(torch.randint(len(self.data.paraphrases[c]), (1,), generator=self.paraphrase_rng))
                for c in classes.tolist()
            ]
            embeddings = torch.stack(
                [self.data.paraphrases[c][i] for c, i in zip(classes.tolist(), choice, strict=True)]
            )  # (k, e)
        position = torch.full((int(self.data.labels.max()) + 1,), -1, dtype=torch.long)
        position[classes] = torch.arange(len(classes))
        targets = position[self.data.labels[index]]  # (b,) index into the episode's classes
        if self.bank is not None:
            images = self.bank.take(index, self.augment_rng)  # pooled features (b, f)
        elif self.trunk is not None:
            images = self.trunk[index]  # activations at the cut (b, C', H', W')
        else:
            raw = augment_batch(self.data.images[index], self.recipe.train.augment, self.augment_rng)
            images = to_backbone_input(raw, self.data.data_config, self.data.img_size)
        device = self.accelerator.device
        return images.to(device), embeddings.to(device), targets.to(device)

    def train_step(self) -> tuple[float, float]:
        images, embeddings, targets = self.episode()
        with self.accelerator.autocast():
            logits = self.model(images, embeddings, pooled=self.bank is not None, split=self.split)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.recipe.train.label_smoothing)
        finite = self.accelerator.reduce(torch.isfinite(loss).float().reshape(1), reduction="sum")
        if int(finite.item()) != self.accelerator.num_processes:
            kept = _checkpoints(self.output_dir)
            raise TrainingDiverged(
                f"non-finite loss at step {self.step + 1}; training stopped. Last good checkpoint: "
                f"{kept[-1] if kept else 'none'} (lower train.lr or raise train.warmup_steps)"
            )
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        accuracy = (logits.argmax(-1) == targets).float().mean().item()
        return loss.item(), accuracy

    def prototypes(self, classes: list[int]) -> Tensor:
        """(k, e): each class's paraphrase embeddings averaged (and re-normalised), as ``encode_classes`` gives them."""
        prototypes = torch.stack([self.data.paraphrases[c].mean(0) for c in classes])
        if getattr(self.adapter.text_encoder, "normalize", False):
            prototypes = F.normalize(prototypes, dim=-1)
        return prototypes

    @torch.no_grad()
    def validation_top1(self, cache: dict[str, Tensor] | None = None) -> float | None:
        """Per-class mean zero-shot top-1 over all validation classes at once (None without validation classes).
        With ``cache`` (a dict the caller keeps) the images' features under the validation task's deltas, which a
        head memory's mix does not change, are computed on the first call and reused: a mix sweep scores heads only."""
        from ..data import to_backbone_input

        classes = self.data.validation
        if not classes:
            return None
        prototypes = self.prototypes(classes)
        position = torch.full((int(self.data.labels.max()) + 1,), -1, dtype=torch.long)
        position[torch.tensor(classes)] = torch.arange(len(classes))
        index = torch.nonzero(position[self.data.labels] >= 0).flatten()
        targets = position[self.data.labels[index]]
        model, device = self.accelerator.unwrap_model(self.model), self.accelerator.device
        model.eval()
        features = (cache or {}).get("features")
        with self.accelerator.autocast():
            if features is None:
                chunks = []
                for chunk in index.split(256):
                    if self.bank is not None:
                        chunks.append(self.bank.plain(chunk).to(device))
                    else:
                        x = to_backbone_input(self.data.images[chunk], self.data.data_config, self.data.img_size)
                        chunks.append(model.task_features(x.to(device), prototypes.to(device)))
                features = torch.cat(chunks)
            if cache is not None:
                cache["features"] = features
            _, weight, bias = model.generator(prototypes[None].to(device))
            predictions = head_logits(features.to(weight.dtype), weight[0], bias[0]).argmax(-1).cpu()
        model.train()
        hits = (predictions == targets).float()
        per_class = torch.zeros(len(classes)).index_add_(0, targets, hits) / torch.bincount(
            targets, minlength=len(classes)
        )
        return float(per_class.mean())

    # checkpoints

    def save_best(self, score: float) -> None:
        """Keep the generator weights of the best validation score so far (``best/``), written atomically."""
        acc = self.accelerator
        with atomic_folder(self.output_dir / "best") as tmp:  # a failure never leaves a half-written folder
            save_file(acc.unwrap_model(self.model).state_dict(), tmp / "generator.safetensors")
            (tmp / "best.json").write_text(json.dumps({"step": self.step, "val_top1": score}, indent=2))

    def save_checkpoint(self) -> None:
        acc, rank = self.accelerator, self.accelerator.process_index
        final = self.output_dir / "checkpoints" / f"step_{self.step:07d}"
        sampler = self.sampler.state_dict()
        rng = {
            "sampler": sampler.pop("generator"),
            "paraphrase": self.paraphrase_rng.get_state(),
            "augment": self.augment_rng.get_state(),
            "torch": torch.get_rng_state(),
        }

        def write_rank_state(folder: Path) -> None:  # each process draws its own episodes
            save_file(rng, folder / f"rng_rank{rank}.safetensors")
            (folder / f"sampler_rank{rank}.json").write_text(json.dumps(sampler))

        if acc.is_main_process:

            def write(tmp: Path) -> None:
                save_file(acc.unwrap_model(self.model).state_dict(), tmp / "generator.safetensors")
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                state = {"step": self.step, "fold": self.fold, "scheduler": self.scheduler.state_dict()}
                (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
                write_rank_state(tmp)

            with atomic_folder(final) as tmp:
                write(tmp)
        acc.wait_for_everyone()
        if not acc.is_main_process:
            write_rank_state(final)
        acc.wait_for_everyone()
        if acc.is_main_process:
            for old in _checkpoints(self.output_dir)[: -self.recipe.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> None:
        acc = self.accelerator
        state = json.loads((path / "trainer_state.json").read_text())
        weights = load_file(path / "generator.safetensors", device=_safetensors_device(acc.device))
        acc.unwrap_model(self.model).load_state_dict(weights, strict=True)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=acc.device, weights_only=True))
        self.scheduler.load_state_dict(state["scheduler"])
        rng = load_file(path / f"rng_rank{acc.process_index}.safetensors")
        sampler = json.loads((path / f"sampler_rank{acc.process_index}.json").read_text())
        self.sampler.load_state_dict({**sampler, "generator": rng["sampler"]})
        self.paraphrase_rng.set_state(rng["paraphrase"])
        if "augment" in rng:  # checkpoints written before augmentation existed
            self.augment_rng.set_state(rng["augment"])
        torch.set_rng_state(rng["torch"])
        self.step = int(state["step"])


def _validate(run: _Run, output_dir: Path, started: float) -> None:
    """Score the validation classes at a checkpoint; log the score and keep the best generator (main process)."""
    if not (run.recipe.train.select_on_validation and run.accelerator.is_main_process):
        return
    score = run.validation_top1()
    if score is None:
        return
    best = output_dir / "best" / "best.json"
    previous = json.loads(best.read_text())["val_top1"] if best.is_file() else -1.0
    if score > previous:
        run.save_best(score)
    line = {"step": run.step, "val_top1": score, "seconds": round(time.perf_counter() - started, 3)}
    with open(output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def train(
    recipe: Recipe,
    output_dir: str | os.PathLike,
    *,
    fold: int = 0,
    head_only: bool = False,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    feature_store: str | os.PathLike | None = None,
) -> TrainResult:
    """Meta-train a generator on the seen classes of one fold and save it as a Hub-ready folder.

    Args:
        recipe: what to train (see ``hub_configs/``).
        output_dir: run folder: ``checkpoints/``, ``metrics.jsonl``, ``best/`` (the best weights on the validation
            classes) and the final ``generator/``.
        fold: which class split of the dataset.
        head_only: train the head-only baseline (no backbone deltas).
        resume: continue from the newest checkpoint in ``output_dir`` if there is one.
        progress: show a progress bar with loss and episode accuracy (main process only).
        stop_after: stop (with a checkpoint) after this many steps in this call, e.g. to test resuming.
        feature_store: a folder sharing the frozen backbone's plain features of training images between runs.

    Returns:
        The generator folder (``output_dir/generator``, None when stopped early) and the trained generator itself
        (on every process).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(recipe, output_dir, fold, head_only, Path(feature_store) if feature_store is not None else None)
    acc, cfg = run.accelerator, recipe.train
    existing = _checkpoints(output_dir) if resume else []
    if existing:
        run.load_checkpoint(existing[-1])
        logger.info("resumed from %s", existing[-1])
    elif acc.is_main_process:
        shutil.rmtree(output_dir / "best", ignore_errors=True)  # a fresh run never inherits an older run's best
    end = cfg.steps if stop_after is None else min(cfg.steps, run.step + stop_after)
    bar = None
    if progress and acc.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=run.step, desc=f"train {recipe.name} fold {fold}", dynamic_ncols=True)
    log_path = output_dir / "metrics.jsonl"
    started = time.perf_counter()
    while run.step < end:
        loss, accuracy = run.train_step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}")
        if acc.is_main_process and (run.step % cfg.log_every == 0 or run.step == end):
            line = {"step": run.step, "loss": loss, "episode_acc": accuracy, "lr": run.scheduler.get_last_lr()[0]}
            line["seconds"] = round(time.perf_counter() - started, 3)
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        if run.step % cfg.checkpoint_every == 0 or run.step == end:
            _validate(run, output_dir, started)
            run.save_checkpoint()
    if bar is not None:
        bar.close()
    done = run.step >= cfg.steps
    final = output_dir / "generator"
    if done and acc.is_main_process:
        model = acc.unwrap_model(run.model)
        best = output_dir / "best"
        if cfg.select_on_validation and (best / "best.json").is_file():
            chosen = json.loads((best / "best.json").read_text())
            model.load_state_dict(
                load_file(best / "generator.safetensors", device=_safetensors_device(acc.device)), strict=True
            )
            logger.info("saving the step-%d generator (validation top-1 %.3f)", chosen["step"], chosen["val_top1"])
        if model.config.memory or model.config.classifier_memory:
            cache: dict[str, Tensor] = {}  # the validation features, computed once for every mix
            mix = calibrate_memory(model.generator.head, lambda: run.validation_top1(cache), fixed=cfg.memory_mix)
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(mix) + "\n")
        model.save_pretrained(final)  # atomic: written aside, then renamed
    acc.wait_for_everyone()
    adapter = acc.unwrap_model(run.model)
    if done and not acc.is_main_process:  # the main process chose the checkpoint and the mix: every rank returns them
        adapter = type(adapter).from_pretrained(str(final)).to(acc.device)
    return TrainResult(final if done else None, adapter, run.step)
