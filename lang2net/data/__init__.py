"""Datasets, class descriptions, seen/unseen splits, backbone input and episode sampling for lang2net."""

from .datasets import DATASETS, DatasetSpec, load_dataset
from .descriptions import load_descriptions, packaged_descriptions, save_descriptions
from .emoji import emoji_classes, emoji_descriptions, emoji_root, fetch_emoji, load_emoji
from .episodes import EpisodeSampler
from .images import open_image, prepare_images, to_uint8_rgb
from .labeled import LabeledImages, keep_per_class
from .shapes import ProceduralShapes
from .splits import ClassSplit, class_splits, load_split_file, stratified_class_split, validate_split
from .transforms import to_backbone_input

__all__ = [
    "DATASETS",
    "ClassSplit",
    "DatasetSpec",
    "EpisodeSampler",
    "LabeledImages",
    "ProceduralShapes",
    "class_splits",
    "emoji_classes",
    "emoji_descriptions",
    "emoji_root",
    "fetch_emoji",
    "keep_per_class",
    "load_dataset",
    "load_descriptions",
    "load_emoji",
    "load_split_file",
    "open_image",
    "packaged_descriptions",
    "prepare_images",
    "save_descriptions",
    "stratified_class_split",
    "to_backbone_input",
    "to_uint8_rgb",
    "validate_split",
]
