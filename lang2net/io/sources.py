"""Where a folder comes from: a local folder, or a Hub repo through huggingface_hub and its cache (offline too).

A missing path that is plainly local fails at once with the closest names; with no network, one line, not retries.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id

__all__ = ["Source", "resolve_source"]

CARD_NAME = "README.md"


@dataclasses.dataclass(frozen=True)
class Source:
    name: str  # the folder as given, or the repo id
    local: bool
    revision: str | None = None
    hub: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # cache_dir, token, force/local_files_only

    @property
    def label(self) -> str:
        """What adapter.source / task.generator record: the folder, the repo id, or repo@revision."""
        return self.name if self.local or self.revision is None else f"{self.name}@{self.revision}"

    def where(self, filename: str) -> str:
        return os.path.join(self.name, filename) if self.local else f"{self.label}/{filename}"

    def find(self, filename: str) -> str | None:
        """Local path of ``filename`` (downloaded or from the Hub cache), or None when the folder/repo lacks it."""
        if self.local:
            path = os.path.join(self.name, filename)
            return path if os.path.isfile(path) else None
        try:
            return hf_hub_download(repo_id=self.name, filename=filename, revision=self.revision, **self.hub)
        except EntryNotFoundError:  # the repo has no such file, or (offline) the cache does not hold it
            return None
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            raise FileNotFoundError(f"{self.label}: {type(e).__name__} on the Hub ({str(e).splitlines()[0]})") from None

    def require(self, filename: str, layout: str) -> str:
        path = self.find(filename)
        if path is not None:
            return path
        if self.local:
            raise FileNotFoundError(f"{self.where(filename)} not found: {layout}")
        cache = self.hub.get("cache_dir") or hf_constants.HF_HUB_CACHE
        offline = bool(hf_constants.HF_HUB_OFFLINE or self.hub.get("local_files_only"))
        raise FileNotFoundError(
            f"{self.where(filename)} not found on the Hub nor in the Hub cache {cache} (offline: {offline}; there is "
            f"no local folder {self.name} either): {layout}"
        )


def resolve_source(name_or_path: str | os.PathLike, revision: str | None, **hub: Any) -> Source:
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        if revision is not None:
            raise ValueError(f"revision={revision!r} selects a Hub commit, but {path} is a local folder")
        return Source(path, True)
    if os.path.exists(path):
        raise ValueError(f"{path} is a file: pass the folder that holds it")
    repo_id = path
    if revision is None and "@" in path:  # "owner/name@revision", as adapter.source records a pinned load
        repo_id, revision = path.split("@", 1)
    _refuse_missing_local(path, repo_id)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"{path}: no such folder, and not a Hub repo id ('owner/name')") from None
    source = Source(repo_id, False, revision, {k: v for k, v in hub.items() if v is not None})
    offline = hf_constants.HF_HUB_OFFLINE or source.hub.get("local_files_only")
    if not offline and not _cached(source) and not _hub_reachable():
        raise FileNotFoundError(
            f"{path}: no local folder of that name, not in the Hub cache, and the Hub cannot be reached (no network)"
        )
    return source


def _refuse_missing_local(path: str, repo_id: str) -> None:
    """A path that is plainly local (./x, ../x, /x, ~/x, a/b/c, or whose first part is a folder here) and missing
    fails at once with the closest existing names, instead of being tried as a Hub repo id."""
    parts = Path(path).parts
    looks_local = (
        path.startswith((".", "/", "~", "\\"))
        or len(parts) > 2
        or os.path.isabs(path)
        or (len(parts) == 2 and os.path.isdir(parts[0]))
    )
    if not looks_local:
        return
    parent = Path(path).expanduser().parent
    siblings = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
    close = difflib.get_close_matches(Path(path).name, siblings, n=3, cutoff=0.5)
    hint = f"; close: {', '.join(str(parent / c) for c in close)}" if close else ""
    where = f"{parent} has no {Path(path).name!r}" if parent.is_dir() else f"{parent} does not exist"
    raise FileNotFoundError(f"no such folder: {path} ({where}{hint})")


def _cached(source: Source) -> bool:
    """True when the Hub cache holds this repo's files (no network needed)."""
    try:
        hf_hub_download(
            repo_id=source.name,
            filename=CARD_NAME,
            revision=source.revision,
            local_files_only=True,
            cache_dir=source.hub.get("cache_dir"),
        )
        return True
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        return False


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect to the Hub endpoint: with no network, one clear line instead of a minute of retries."""
    url = urllib.parse.urlsplit(hf_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
