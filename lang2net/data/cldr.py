"""Unicode CLDR English emoji annotations (spoken "tts" names and keywords), parsed from the Debian package's XML.

The files come from the Debian package ``unicode-cldr-core`` (``/usr/share/unicode/cldr/common``; set
``$LANG2NET_CLDR`` to another CLDR ``common`` folder). Unicode CLDR data: Copyright © Unicode, Inc., under the Unicode
licence (https://www.unicode.org/license.txt).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLDR_FILES",
    "DEFAULT_CLDR_DIR",
    "CldrAnnotation",
    "cldr_dir",
    "codepoints",
    "lookup_annotation",
    "parse_cldr_annotations",
    "read_cldr_annotations",
]

DEFAULT_CLDR_DIR = Path("/usr/share/unicode/cldr/common")
CLDR_FILES = ("annotations/en.xml", "annotationsDerived/en.xml")  # earlier files win for a code point in both
VS16 = "\ufe0f"  # emoji presentation selector: CLDR drops it from its keys, emoji-datasource keeps it


@dataclass(frozen=True)
class CldrAnnotation:
    """The CLDR English annotation of one emoji.

    Attributes:
        tts: the short spoken name ("dog face"), or None when the file has none.
        keywords: search keywords in file order ("dog", "face", "pet").
    """

    tts: str | None = None
    keywords: tuple[str, ...] = ()


def codepoints(unified: str) -> str:
    """The emoji string of an emoji-datasource ``unified`` code such as ``"2601-FE0F"``.

    Raises:
        ValueError: If a part is not a hexadecimal code point.
    """
    try:
        return "".join(chr(int(part, 16)) for part in unified.split("-"))
    except ValueError:
        raise ValueError(
            f"bad unified code {unified!r}; expected hex code points joined by '-', e.g. '2601-FE0F'"
        ) from None


def parse_cldr_annotations(xml: str | bytes) -> dict[str, CldrAnnotation]:
    """Parse one CLDR annotations XML document.

    Args:
        xml: the document text.

    Returns:
        emoji string (U+FE0F removed) -> annotation, in document order.

    Raises:
        ValueError: If the text is not well-formed XML.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"not a CLDR annotations XML document: {exc}") from None
    tts: dict[str, str] = {}
    keywords: dict[str, tuple[str, ...]] = {}
    for node in root.iter("annotation"):
        cp, text = node.get("cp"), (node.text or "").strip()
        if not cp or not text:
            continue
        key = cp.replace(VS16, "")
        if node.get("type") == "tts":
            tts.setdefault(key, text)
        else:
            keywords.setdefault(key, tuple(k.strip() for k in text.split("|") if k.strip()))
    keys = dict.fromkeys([*keywords, *tts])
    return {k: CldrAnnotation(tts.get(k), keywords.get(k, ())) for k in keys}


def merge_annotations(parts: Iterable[Mapping[str, CldrAnnotation]]) -> dict[str, CldrAnnotation]:
    """Merge annotation tables; for each field the first table that has it wins."""
    out: dict[str, CldrAnnotation] = {}
    for part in parts:
        for key, ann in part.items():
            old = out.get(key)
            if old is None:
                out[key] = ann
            else:
                out[key] = CldrAnnotation(old.tts or ann.tts, old.keywords or ann.keywords)
    return out


def cldr_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The CLDR ``common`` folder: ``path``, else ``$LANG2NET_CLDR``, else the Debian package folder.

    Raises:
        FileNotFoundError: If the folder lacks the English annotation files.
    """
    folder = Path(path or os.environ.get("LANG2NET_CLDR") or DEFAULT_CLDR_DIR).expanduser()
    missing = [name for name in CLDR_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CLDR annotations {missing} not found in {folder}; install the Debian package unicode-cldr-core "
            "(apt-get install unicode-cldr-core) or set LANG2NET_CLDR to a CLDR 'common' folder"
        )
    return folder


def read_cldr_annotations(folder: str | os.PathLike[str] | None = None) -> dict[str, CldrAnnotation]:
    """English annotations from ``annotations/en.xml`` plus ``annotationsDerived/en.xml`` of a CLDR folder.

    Args:
        folder: the CLDR ``common`` folder (default: see :func:`cldr_dir`).

    Raises:
        FileNotFoundError: If the files are missing.
        ValueError: If a file is not valid XML (the message names it).
    """
    root = cldr_dir(folder)
    parts = []
    for name in CLDR_FILES:
        path = root / name
        try:
            parts.append(parse_cldr_annotations(path.read_bytes()))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return merge_annotations(parts)


def lookup_annotation(annotations: Mapping[str, CldrAnnotation], unified: str | Sequence[str]) -> CldrAnnotation:
    """The annotation of an emoji given as a ``unified`` code (or several codes: the first one found wins).

    Keys are matched with U+FE0F removed, so ``"2601-FE0F"`` and ``"2601"`` both find the cloud.

    Returns:
        The annotation, or an empty one (``tts=None``, no keywords) when CLDR does not list the emoji.
    """
    codes = [unified] if isinstance(unified, str) else list(unified)
    for code in codes:
        found = annotations.get(codepoints(code).replace(VS16, ""))
        if found is not None:
            return found
    return CldrAnnotation()
