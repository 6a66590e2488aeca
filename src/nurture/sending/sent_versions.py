"""The versions of the emails as they were sent: the text of the files each was built from.

A message records the version it was built from (``outbox.template_version``), and each version's
text is kept once (``template_versions``), so `nurture templates impact` can compare what is on disk
with what people last received, and `explain` can say which version a person got.

The sender's cost: a version is identified by a hash of its files' text, and reading and hashing
those files happens once per version per process. Per message, the sender asks the renderer for its
current fingerprint (the lookup a render does anyway) and finds the version in a dictionary. The
store writes a version's row once per process, in the transaction that records the first message
built from it (an insert that ignores a row another process wrote first).

There is deliberately no foreign key from the outbox to this table: a version row missing for any
reason (a database restored from a copy, a process that cached the write) must never stop the
outcomes of delivered mail from being written. At worst `explain` names a version without its text.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.db import insert_or_not
from nurture.models import TemplateVersion as VersionRow

__all__ = ["SentVersions", "TemplateVersion", "load_version", "store_versions", "version_of_files"]


@dataclass(frozen=True)
class TemplateVersion:
    """One version of an email: its template, the hash of its files, and their text by path
    (relative to the templates folder)."""

    template: str
    digest: str
    sources: tuple[tuple[str, str], ...]

    @property
    def short(self) -> str:
        """The first 10 hex digits: what people are shown."""
        return self.digest[:10]

    def files(self) -> dict[str, str]:
        return dict(self.sources)


class _Renderer(Protocol):
    templates_dir: Path

    def version(self, template: str) -> str: ...

    def dependencies(self, template: str) -> list[Path]: ...


def version_of_files(template: str, templates_dir: Path, paths: Iterable[Path]) -> TemplateVersion:
    """The version made of these files (the directories among them are skipped: their listing is
    already the set of sibling files)."""
    sources = []
    for path in paths:
        if path.is_file():
            sources.append((path.relative_to(templates_dir).as_posix(), path.read_text(encoding="utf-8")))
    sources.sort()
    digest = hashlib.sha256()
    digest.update(template.encode() + b"\0")
    for name, text in sources:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return TemplateVersion(template, digest.hexdigest(), tuple(sources))


class SentVersions:
    """Versions by the renderer's fingerprint, read from disk once each; safe between threads."""

    def __init__(self) -> None:
        self._by_fingerprint: dict[str, TemplateVersion] = {}
        self._lock = threading.Lock()

    def of(self, renderer: _Renderer, template: str) -> TemplateVersion:
        """The version ``renderer`` renders ``template`` from now."""
        fingerprint = renderer.version(template)
        found = self._by_fingerprint.get(fingerprint)
        if found is not None and found.template == template:
            return found
        with self._lock:
            # The files are read just after the render that used them: an edit saved in between
            # (a window of at most the renderer's recheck interval) names the newer version.
            version = version_of_files(template, renderer.templates_dir, renderer.dependencies(template))
            if len(self._by_fingerprint) > 1024:  # a studio session editing for hours
                self._by_fingerprint.clear()
            self._by_fingerprint[fingerprint] = version
            return version


def store_versions(session: Session, versions: Iterable[TemplateVersion], *, now: datetime) -> None:
    """Keep these versions' text (those already kept are left as they are)."""
    rows = {(v.template, v.digest): v for v in versions}
    if not rows:
        return
    values = [dict(template=v.template, digest=v.digest, sources=json.dumps(dict(v.sources), sort_keys=True),
                   first_sent_at=now) for v in rows.values()]
    session.execute(insert_or_not(session, VersionRow).on_conflict_do_nothing(index_elements=["template", "digest"]),
                    values)


def load_version(session: Session, template: str, digest: str) -> TemplateVersion | None:
    """A kept version, or None when its text was not kept."""
    text = session.scalar(select(VersionRow.sources).where(VersionRow.template == template,
                                                           VersionRow.digest == digest))
    if text is None:
        return None
    return TemplateVersion(template, digest, tuple(sorted(json.loads(text).items())))
