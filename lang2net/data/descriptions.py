"""Class description files: YAML or JSON mappings of class name to paraphrases, read with checks, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..text import _short, normalize_descriptions
from ..utils.atomic import write_atomic

__all__ = ["DESCRIPTION_FORMATS", "load_descriptions", "packaged_descriptions", "save_descriptions"]

DESCRIPTION_FORMATS = (".yaml", ".yml", ".json")
_PACKAGED_DIR = Path(__file__).parent / "descriptions"


# helpers


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a repeated key, which plain YAML silently overwrites."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in DESCRIPTION_FORMATS:
        raise ValueError(f"descriptions file {path} has extension {suffix!r}; valid: {', '.join(DESCRIPTION_FORMATS)}")
    return "json" if suffix == ".json" else "yaml"


def _parse(text: str, path: Path) -> Any:
    """Parse YAML or JSON text; a syntax error becomes a ValueError with the line number and reason."""
    if _format(path) == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise ValueError(f"{path}: nested too deeply to be a descriptions file") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ValueError(f"{path}: {where}: {reason}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a descriptions file") from None


def check_descriptions(descriptions: Mapping[str, Sequence[str]], source: str = "descriptions") -> dict[str, list[str]]:
    """Validate class -> one description or a list of paraphrases (``normalize_descriptions``), naming ``source``.

    Args:
        descriptions: the mapping.
        source: what to call it in error messages (a file path).

    Returns:
        A plain ``dict[str, list[str]]`` in the mapping's order.

    Raises:
        TypeError: If a class name is not a string or a value is not a string or a list of strings.
        ValueError: If the mapping is empty, a list is empty, a name or description is blank, or two names differ
            only in case and spacing.
    """
    if isinstance(descriptions, Mapping):
        for name, texts in descriptions.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"{source}: class name {_short(name)} is {type(name).__name__}, not str (quote it in YAML)"
                )
            if not isinstance(texts, (str, Sequence)):
                raise TypeError(f"{source}: class {name!r} needs a description or a list of them, got {_short(texts)}")
    try:
        return normalize_descriptions(descriptions)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{source}: {exc}") from None


# public


def load_descriptions(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a class -> list of descriptions file, YAML (``.yaml``/``.yml``) or JSON (``.json``), and validate it.

    Args:
        path: the file.

    Returns:
        class name -> paraphrases, in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it does not parse (the message gives line and reason), is not a mapping, repeats a class, or
            has an empty list or a blank description.
        TypeError: If a class name or a description is not a string.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"descriptions file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    data = _parse(text, path)
    if data is None:
        raise ValueError(f"{path} is empty; write one line per class, e.g. 'sandal: an open summer shoe'")
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: expected a mapping of class name to a list of descriptions, got {type(data).__name__}"
        )
    return check_descriptions(data, str(path))


def save_descriptions(descriptions: Mapping[str, Sequence[str]], path: str | os.PathLike[str]) -> Path:
    """Write class -> descriptions as YAML or JSON (by extension), atomically: a temp file, then a rename.

    Args:
        descriptions: class name -> paraphrases; validated like :func:`load_descriptions`.
        path: destination; its folder must exist.

    Returns:
        The path written.

    Raises:
        ValueError, TypeError: As :func:`load_descriptions`, or for an unknown extension.
    """
    path = Path(path)
    fmt = _format(path)
    data = check_descriptions(descriptions, str(path))
    if fmt == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def packaged_descriptions(name: str) -> dict[str, list[str]]:
    """The descriptions shipped with lang2net for a packaged dataset (``fashion_mnist`` or ``digits``).

    Raises:
        ValueError: If no descriptions file ships for ``name``.
    """
    path = _PACKAGED_DIR / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in _PACKAGED_DIR.glob("*.yaml"))
        raise ValueError(f"no packaged descriptions for {name!r}; shipped: {shipped}")
    return load_descriptions(path)
