"""Extra emoji styles for training, rendered from open SVG sets: OpenMoji, Fluent Emoji (colour) and Fluent Emoji flat.

The two base styles (Twemoji, Noto) come as 64 px PNGs; these three come as SVGs in npm packages and are rendered
here, once, to 64 px RGBA PNGs named like the base styles' files (``<cache>/<style>/img/<image>.png``), so that every
consumer reads all five styles the same way (:func:`lang2net.data.emoji.load_emoji`, splits such as
``"twitter+google+openmoji"``). A class whose emoji a set lacks (a newer emoji) has no image in that style.

They exist to give each training class more than two drawings: with two, generators learn the icons rather than the
objects. The benchmark's test images stay Twemoji and Noto, so extra styles change what a generator is trained on,
never what it is measured on.

Credits and licences:
    * OpenMoji graphics (npm ``openmoji``): the OpenMoji project, CC BY-SA 4.0.
    * Fluent Emoji graphics (npm ``fluentui-emoji``, a packaging of Microsoft's Fluent Emoji): Microsoft, MIT licence.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = [
    "EXTRA_STYLES",
    "RENDER_SIZE",
    "SvgStyle",
    "extract_png_style",
    "npm_pack",
    "render_svg_styles",
    "svg_keys",
]

RENDER_SIZE = 64  # the base styles' size: every style reaches the model through the same resampling
STYLE_FILE = "style.json"  # written last into a rendered style folder: what it was rendered from


@dataclass(frozen=True)
class SvgStyle:
    """An SVG emoji set in an npm package.

    Attributes:
        package: the npm spec, ``name@version``.
        folder: the SVGs' folder inside the package tarball.
        key: how its files are named: ``"unified"`` (code points, ``1F436.svg``) or ``"name"`` (the emoji's name,
            ``dog-face.svg``).
        credit: author and licence, for cards and docs.
    """

    package: str
    folder: str
    key: str
    credit: str


EXTRA_STYLES: dict[str, SvgStyle] = {
    "openmoji": SvgStyle("openmoji@17.0.0", "package/color/svg/", "unified", "OpenMoji (CC BY-SA 4.0)"),
    "fluent": SvgStyle("fluentui-emoji@1.3.0", "package/icons/modern/", "name", "Fluent Emoji, Microsoft (MIT)"),
    "fluent-flat": SvgStyle(
        "fluentui-emoji@1.3.0", "package/icons/flat/", "name", "Fluent Emoji flat, Microsoft (MIT)"
    ),
}


def npm_pack(spec: str, workdir: Path, npm: str) -> Path:
    """Download one npm package tarball into ``workdir`` with ``npm pack``; returns the tarball."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([npm, "pack", "--silent", spec], cwd=workdir, capture_output=True, text=True, check=False)
    tarballs = sorted(workdir.glob("*.tgz"))
    if result.returncode or len(tarballs) != 1:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"`npm pack {spec}` failed (exit {result.returncode}, tarballs {tarballs}): {tail}")
    return tarballs[0]


def extract_png_style(tarball: Path, prefix: str, dest: Path) -> int:
    """Copy ``package/emoji.json`` and ``<prefix>*.png`` of an emoji-datasource tarball into ``dest``; the PNG count."""
    (dest / "img").mkdir(parents=True, exist_ok=True)
    n_images, has_json = 0, False
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            rest = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
            if not member.isfile():
                continue
            if member.name == "package/emoji.json":
                target, has_json = dest / "emoji.json", True
            elif rest.endswith(".png") and "/" not in rest and not rest.startswith("."):
                target, n_images = dest / "img" / rest, n_images + 1
            else:
                continue
            source = tar.extractfile(member)
            if source is not None:
                target.write_bytes(source.read())
    if not has_json or not n_images:
        raise ValueError(f"{tarball} lacks package/emoji.json or {prefix}*.png ({n_images} images found)")
    return n_images


def _name_key(text: str) -> str:
    """``"Woman’s Boot"`` -> ``"womansboot"``: how a name-keyed file and an emoji name are matched."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def svg_keys(style: str, unified: str, names: Sequence[str]) -> list[str]:
    """The keys an emoji's SVG may have in ``style``, most specific first.

    Args:
        style: a key of :data:`EXTRA_STYLES`.
        unified: the emoji's code points as in emoji-datasource (``"1F43F-FE0F"``).
        names: its names (Unicode name, CLDR name, short names).
    """
    if EXTRA_STYLES[style].key == "unified":
        bare = "-".join(code for code in unified.upper().split("-") if code != "FE0F")
        return list(dict.fromkeys([unified.upper(), bare]))
    return list(dict.fromkeys(_name_key(name) for name in names if _name_key(name)))


def _file_key(style: str, file_name: str) -> str:
    stem = file_name[: -len(".svg")]
    return stem.upper() if EXTRA_STYLES[style].key == "unified" else _name_key(stem)


def _render(svg: bytes, size: int) -> bytes:
    import resvg_py

    return bytes(resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), width=size, height=size, skip_system_fonts=True))


def renderer_version() -> str:
    """The installed SVG renderer (``resvg-py``); ImportError naming the install command when it is missing."""
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        raise ImportError(
            "rendering the extra emoji styles needs resvg-py: pip install 'lang2net[train]' (or resvg-py)"
        ) from None
    return metadata.version("resvg-py")


def _key_owners(targets: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """key -> the target it names: the target that lists it earliest (its own name beats another's short name); a
    key that two targets list at the same place (a CLDR name two emoji share) names neither."""
    owners: dict[str, tuple[int, str | None]] = {}
    for name, keys in targets.items():
        for rank, key in enumerate(dict.fromkeys(keys)):
            best = owners.get(key)
            if best is None or rank < best[0]:
                owners[key] = (rank, name)
            elif rank == best[0]:
                owners[key] = (rank, None)
    return {key: name for key, (_, name) in owners.items() if name is not None}


def render_svg_styles(
    tarball: Path,
    targets: Mapping[str, Mapping[str, Sequence[str]]],
    dests: Mapping[str, Path],
    size: int = RENDER_SIZE,
) -> dict[str, list[str]]:
    """Render the wanted SVGs of one package into PNG folders, one per style of that package.

    Args:
        tarball: the npm package tarball (:func:`npm_pack`).
        targets: style -> {output PNG name -> the SVG keys it may have (:func:`svg_keys`)}.
        dests: style -> folder to fill: ``img/<png name>`` for each target found, then ``style.json`` (package,
            size, renderer, rendered count, missing PNG names).
        size: PNG side in pixels.

    Returns:
        style -> the output names that had no SVG in the package.

    Raises:
        ValueError: If a style's SVG folder is absent from the tarball, or an SVG cannot be rendered.
    """
    version = renderer_version()
    wanted = {style: _key_owners(targets[style]) for style in dests}  # style -> key -> the one target it names
    svgs: dict[str, dict[str, bytes]] = {style: {} for style in dests}  # style -> key -> SVG text
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            for style in dests:
                prefix = EXTRA_STYLES[style].folder
                rest = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
                if member.isfile() and rest.endswith(".svg") and "/" not in rest:
                    key = _file_key(style, rest)
                    source = tar.extractfile(member) if key in wanted[style] else None
                    if source is not None:
                        svgs[style][key] = source.read()
    missing: dict[str, list[str]] = {}
    for style, dest in dests.items():
        if not svgs[style] and targets[style]:
            raise ValueError(f"{tarball} has no SVG of the wanted emoji under {EXTRA_STYLES[style].folder}")
        (dest / "img").mkdir(parents=True, exist_ok=True)
        missing[style] = []
        for name, keys in targets[style].items():
            key = next((k for k in keys if k in svgs[style] and wanted[style].get(k) == name), None)
            if key is None:
                missing[style].append(name)
                continue
            try:
                png = _render(svgs[style][key], size)
            except ValueError as exc:
                raise ValueError(f"cannot render {style} SVG {key!r} of {tarball.name}: {exc}") from None
            (dest / "img" / name).write_bytes(png)
        n = len(targets[style]) - len(missing[style])
        record = {"package": EXTRA_STYLES[style].package, "folder": EXTRA_STYLES[style].folder, "size": size}
        record |= {"renderer": f"resvg-py {version}", "rendered": n, "missing": missing[style]}
        (dest / STYLE_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return missing
