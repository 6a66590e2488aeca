"""The inline-once cache: one compiled email per template version, looked up cheaply per recipient.

A template's version is a content hash (fingerprint) of the files it is made of plus the campaign
values and the year, so touching a file without changing it costs no rebuild and a changed clinic
address or a new year does. Looking at the files costs a few ``stat()`` calls; that is done at most
once per ``recheck_seconds`` per template, and the files are hashed again only when a stamp moved.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nurture.content.recipient_slots import Segments

__all__ = ["RECHECK_SECONDS", "Compiled", "TemplateVersions", "fingerprint"]

# By default look at a template's files at most once a second, so a long run picks up marketing's
# edits within a second without paying per email.
RECHECK_SECONDS = 1.0

# Versions kept before the cache starts afresh: many more than the emails of one campaign, so only
# a studio session editing for hours ever clears it.
_MAX_VERSIONS = 256

Stamp = tuple[int, int, int]


@dataclass(frozen=True)
class Compiled:
    """An email inlined once, split into literal segments and recipient slots."""

    subject: Segments
    preheader: Segments
    html: Segments
    text: Segments
    keys: frozenset[str]  # recipient values this template uses


@dataclass
class _Entry:
    stamps: tuple[tuple[str, Stamp], ...]
    fingerprint: str
    year: int
    compiled: Compiled
    checked: float = 0.0  # time.monotonic() of the last look at the files


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (-1, -1, -1)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def fingerprint(templates_dir: Path, paths: list[Path], salt: Any) -> str:
    """Content hash of ``paths`` (files by content, directories by their listing) and ``salt``."""
    digest = hashlib.sha256()
    digest.update(json.dumps(salt, sort_keys=True).encode())
    for path in paths:
        digest.update(str(path.relative_to(templates_dir)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
        elif path.is_dir():
            digest.update("\0".join(sorted(p.name for p in path.iterdir())).encode())
        digest.update(b"\0")
    return digest.hexdigest()


class TemplateVersions:
    """Compiled emails by template name and by version; safe to share between threads."""

    def __init__(self, templates_dir: Path, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.templates_dir = templates_dir
        self._recheck_seconds = recheck_seconds
        self._cache: dict[str, _Entry] = {}
        self._versions: dict[str, Compiled] = {}  # fingerprint -> compiled, so touching a file costs no rebuild
        self._lock = threading.Lock()

    def get(
        self,
        template: str,
        *,
        year: int,
        campaign: Mapping[str, Any],
        files: Callable[[str], list[Path]],
        build: Callable[[str, int], Compiled],
    ) -> Compiled:
        """``template`` compiled for its current version: ``files(template)`` lists what it is made of,
        ``build(template, year)`` compiles it when this version has not been seen."""
        entry = self._cache.get(template)
        if entry is not None and entry.year == year:
            now = time.monotonic()
            if now - entry.checked < self._recheck_seconds:
                return entry.compiled
            if all(_stamp(p) == s for p, s in entry.stamps):
                entry.checked = now
                return entry.compiled
        with self._lock:
            paths = files(template)
            stamps = tuple((str(p), _stamp(str(p))) for p in paths)
            version = fingerprint(self.templates_dir, paths, [template, dict(campaign), year])
            compiled = self._versions.get(version)
            if compiled is None:
                compiled = build(template, year)
                if len(self._versions) > _MAX_VERSIONS:
                    self._versions.clear()
                self._versions[version] = compiled
            self._cache[template] = _Entry(stamps, version, year, compiled, time.monotonic())
            return compiled

    def current(self, template: str) -> str | None:
        """The fingerprint of the version :meth:`get` last gave for ``template`` (None before any)."""
        entry = self._cache.get(template)
        return None if entry is None else entry.fingerprint
