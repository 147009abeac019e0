"""The photo check behind the emoji generator card's limits: five scikit-image photos and the Twemoji icons of the same
five classes, each scored among those five classes only.

    .venv/bin/python docs/results/emoji-effnet-lite0/photo_check.py adapters/emoji-effnet-lite0
"""

from __future__ import annotations

import sys

PHOTOS = {"chelsea": "cat", "coffee": "hot beverage", "rocket": "rocket", "horse": "horse", "camera": "camera"}


def photo_check(adapter_dir: str) -> dict[str, list[tuple[str, str]]]:
    """{"photos": [(true, predicted)] * 5, "icons": [(true, predicted)] * 5}."""
    import skimage.data

    from lang2net import LanguageConditionedAdapter
    from lang2net.data.emoji import emoji_classes, emoji_descriptions, emoji_root, read_emoji_image

    adapter = LanguageConditionedAdapter.from_pretrained(adapter_dir)
    classes = {c.name: c for c in emoji_classes()}
    names = list(PHOTOS.values())
    classifier = adapter.generate(emoji_descriptions([classes[n] for n in names])).bind(adapter.create_backbone())
    photos = classifier.predict([getattr(skimage.data, fn)() for fn in PHOTOS]).labels
    folder = emoji_root() / "twitter" / "img"
    icons = classifier.predict([read_emoji_image(folder / classes[n].image) for n in names]).labels
    return {"photos": list(zip(names, photos, strict=True)), "icons": list(zip(names, icons, strict=True))}


if __name__ == "__main__":
    for kind, pairs in photo_check(sys.argv[1] if len(sys.argv) > 1 else "adapters/emoji-effnet-lite0").items():
        right = sum(true == predicted for true, predicted in pairs)
        print(f"{kind}: {right} of {len(pairs)} right; predicted {[p for _, p in pairs]}")
