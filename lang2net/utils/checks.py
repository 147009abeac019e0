"""Argument checks shared by every layer: positive ints, probabilities, unknown keys; errors name value and choices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["check_fraction", "check_int", "check_positive_int", "reject_unknown_keys"]


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int = 1,
    optional: bool = False,
    integers: tuple[type, ...] = (int,),
    error: type[Exception] = ValueError,
) -> None:
    """Raise ``error`` naming ``name`` unless ``value`` is an int >= ``minimum`` (bools are not ints here); None
    passes when ``optional``. ``integers`` widens what counts as an int (e.g. numpy integers)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, integers) or value < minimum:
        kind = {1: "a positive int", 0: "a non-negative int"}.get(minimum, f"an int >= {minimum}")
        suffix = " or None" if optional else ""
        raise error(f"{name} must be {kind}{suffix}, got {value!r}")


def check_positive_int(name: str, value: Any, *, optional: bool = False, error: type[Exception] = ValueError) -> None:
    """:func:`check_int` with ``minimum=1``."""
    check_int(name, value, optional=optional, error=error)


def check_fraction(name: str, value: Any, *, low_open: bool = False, high_open: bool = True) -> None:
    """Raise ValueError unless ``value`` is a real number in [0, 1) (bounds open or closed as asked)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def reject_unknown_keys(data: Mapping[str, Any], known: Iterable[str], template: str, **context: Any) -> None:
    """Raise ``ValueError(template.format(unknown=..., known=..., **context))`` when ``data`` has keys outside ``known``.

    Only ``template`` is parsed for fields, so a ``context`` value (a path, a section name) may hold any characters.
    """
    known = set(known)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(template.format(unknown=unknown, known=sorted(known), **context))
