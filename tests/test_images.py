"""One image path for every consumer: paths, PIL images and uint8 arrays of 1-4 channels become the same backbone
input, at the generator's recorded size, through ``TaskClassifier.preprocess`` / ``predict`` (and the CLI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _robustness import make_task, tiny_adapter
from conftest import make_model
from PIL import Image

from lang2net.data import to_backbone_input
from lang2net.data.images import open_image, prepare_images, square_resize, to_uint8_rgb

CONFIG = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "input_size": [3, 24, 24]}


def _rgb(h: int = 30, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_every_kind_of_image_gives_the_same_input(tmp_path):
    array = _rgb()
    Image.fromarray(array).save(tmp_path / "a.png")
    square = torch.from_numpy(array[:, 5:35])  # the centred 30x30 square of a 30x40 image
    expected = to_backbone_input(square[None], CONFIG)  # (1, 3, 24, 24)
    for image in (array, torch.from_numpy(array), Image.fromarray(array), tmp_path / "a.png", str(tmp_path / "a.png")):
        got = prepare_images(image, CONFIG)
        assert got.shape == (1, 3, 24, 24) and torch.allclose(got, expected, atol=1e-6), type(image).__name__
    batch = prepare_images(np.stack([array, _rgb(seed=1)]), CONFIG)  # (N, H, W, 3) is two images
    assert batch.shape == (2, 3, 24, 24) and torch.allclose(batch[:1], expected, atol=1e-6)
    assert prepare_images([array, tmp_path / "a.png"], CONFIG).shape == (2, 3, 24, 24)
    assert prepare_images(array, CONFIG, img_size=16).shape == (1, 3, 16, 16)  # --img-size overrides


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channel_counts(channels):
    rng = np.random.default_rng(channels)
    colour = rng.integers(0, 256, (8, 8, min(channels, 3) if channels != 2 else 1), dtype=np.uint8)
    opaque = np.full((8, 8, 1), 255, np.uint8)  # with an alpha channel fully opaque, the colour is kept as is
    image = np.concatenate([colour, opaque], axis=-1) if channels in (2, 4) else colour
    rgb = to_uint8_rgb(image)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == torch.uint8
    expected = colour if colour.shape[-1] == 3 else np.repeat(colour, 3, axis=-1)
    assert torch.equal(rgb, torch.from_numpy(expected))
    assert torch.equal(to_uint8_rgb(image[..., 0]), torch.from_numpy(np.repeat(image[..., :1], 3, axis=-1)))


def test_transparency_is_composited_on_white_and_masks_are_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red; the rest fully transparent black
    rgb = to_uint8_rgb(rgba)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[1, 1].tolist() == [255, 255, 255]
    assert torch.equal(to_uint8_rgb(Image.fromarray(rgba)), rgb)  # PIL RGBA: the same
    mask = np.array([[True, False]])
    assert to_uint8_rgb(mask).tolist() == [[[255, 255, 255], [0, 0, 0]]]


def test_bad_images_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"must be uint8 \(0..255\) or bool, got torch.float32"):
        to_uint8_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\) with C in 1..4, got shape \(4, 4, 5, 1\)"):
        to_uint8_rgb(np.zeros((4, 4, 5, 1), np.uint8))
    with pytest.raises(FileNotFoundError, match="image not found"):
        open_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.png"):
        open_image(tmp_path / "bad.png")
    Image.fromarray(_rgb(50, 60)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="is 60x50 = 3,000 pixels, over the limit of 1,000"):
        open_image(tmp_path / "big.png", max_pixels=1000)
    with pytest.raises(ValueError, match="no images given"):
        prepare_images([], CONFIG)


def test_square_resize_matches_the_prepared_input():
    array = _rgb(30, 40)
    stored = square_resize(array, 24)  # what an image folder keeps (uint8)
    assert stored.shape == (24, 24, 3) and stored.dtype == torch.uint8
    prepared = prepare_images(array, CONFIG)
    assert torch.allclose(to_backbone_input(stored[None], CONFIG), prepared, atol=2.5 / 255 / 0.2)  # rounding only


def test_task_classifier_predict_and_preprocess():
    adapter = tiny_adapter("test_resnet")
    task = make_task(adapter, 3)
    model = task.bind(make_model("test_resnet"))
    side = model.data_config["input_size"][-1]
    images = [_rgb(seed=i) for i in range(5)]
    x = model.preprocess(images)
    assert x.shape == (5, 3, side, side)
    with torch.no_grad():
        expected = model(x).softmax(-1)
    prediction = model.predict([Image.fromarray(images[0]), *images[1:]], batch_size=2)  # mixed kinds, 3 batches
    assert torch.allclose(prediction.probabilities, expected, atol=1e-5)
    assert prediction.labels == [task.class_names[i] for i in expected.argmax(-1).tolist()]
    top = prediction.top(2)
    assert [len(t) for t in top] == [2] * 5 and all(t[0][1] >= t[1][1] for t in top)
    grey = model.predict(images[0][..., 0])  # one 1-channel image: no conv error
    assert grey.probabilities.shape == (1, 3)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(images, batch_size=0)


def test_read_only_arrays_are_copied_not_shared():
    import warnings

    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    array.flags.writeable = False  # as scikit-image's bundled photos and memory-mapped files come
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a non-writable array
        image = to_uint8_rgb(array)
    assert torch.equal(image, torch.from_numpy(array.copy()))
    image[0, 0, 0] = 255  # the tensor owns its memory: the caller's array is untouched
    assert array[0, 0, 0] == 0
