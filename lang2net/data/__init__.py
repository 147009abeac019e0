"""Datasets, class descriptions, seen/unseen splits, backbone input and episode sampling for lang2net."""

from .datasets import DATASETS, DatasetSpec, load_dataset
from .descriptions import load_descriptions, packaged_descriptions, save_descriptions
from .episodes import EpisodeSampler
from .labeled import LabeledImages, keep_per_class
from .shapes import ProceduralShapes
from .splits import ClassSplit, class_splits, validate_split
from .transforms import to_backbone_input

__all__ = [
    "DATASETS",
    "ClassSplit",
    "DatasetSpec",
    "EpisodeSampler",
    "LabeledImages",
    "ProceduralShapes",
    "class_splits",
    "keep_per_class",
    "load_dataset",
    "load_descriptions",
    "packaged_descriptions",
    "save_descriptions",
    "to_backbone_input",
    "validate_split",
]
