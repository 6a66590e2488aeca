"""What the studio lists: every email file under the templates directory, grouped (sequences,
newsletter, system), and the templates' *stamp*, which changes whenever one is saved."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nurture.content.sequences import (
    EMAIL_SUFFIX,
    KEY_PATTERN,
    NOT_SEQUENCES,
    Sequence,
    Step,
    TemplateFormatError,
    describe_email,
    scan_templates,
)


def is_template(name: str) -> bool:
    """Whether a file name is a template the studio watches."""
    # Editors' swap and backup files (.x.swp, x~, #x#) are not templates: saving them reloads nothing.
    return name.endswith(".j2") and not name.startswith((".", "#"))


def templates_stamp(directory: Path) -> str:
    """A short digest of the ``*.j2`` files' names, sizes, mtimes and inodes: changes when one is saved."""
    digest = hashlib.blake2b(digest_size=8)
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not is_template(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            digest.update(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One email file as the studio lists it; ``step`` is None when its front matter is broken."""

    template: str  # path relative to the templates directory: the studio's name for the email
    group: str  # sequence name, "newsletter" or "system"
    step: Step | None
    error: str | None = None
    number: int | None = None  # 1-based position in a sequence
    total: int = 1

    @property
    def label(self) -> str:
        return self.step.subject if self.step else Path(self.template).name


@dataclass(frozen=True)
class Group:
    name: str
    kind: str  # "sequence", "newsletter" or "system"
    entries: tuple[Entry, ...]
    sequence: Sequence | None = None

    @property
    def title(self) -> str:
        return {"newsletter": "Newsletter issues", "system": "System emails"}.get(self.kind, f"Sequence “{self.name}”")


def _email_files(directory: Path) -> list[Path]:
    """Email files in sequence order: by the number prefix, then name (as sequences.py orders them)."""
    def order(path: Path) -> tuple[int, str]:
        prefix = path.name.split("-", 1)[0]
        return (int(prefix) if prefix.isdigit() else -1, path.name)

    return sorted((p for p in directory.iterdir() if p.is_file() and p.name.endswith(EMAIL_SUFFIX)
                   and not p.name.startswith(".")), key=order)


def catalogue(templates_dir: Path, first_sequence: str) -> list[Group]:
    """Every email file, grouped: sequences (the configured one first), newsletter, system.
    A file whose front matter is broken is listed too, with its error, so it can be found and fixed."""
    if not templates_dir.is_dir():
        return []
    sequences, newsletters, errors = scan_templates(templates_dir)
    steps = {s.template: s for seq in sequences.values() for s in seq.steps} | {s.template: s for s in newsletters.values()}
    problems: dict[str, str] = {}
    for error in errors:
        problems.setdefault(relative(templates_dir, error.path), where(templates_dir, error.path, error.line, error.message))
    names = sorted((p.name for p in templates_dir.iterdir() if p.is_dir() and KEY_PATTERN.fullmatch(p.name)),
                   key=lambda n: (n in NOT_SEQUENCES, n != first_sequence, n == "system", n))
    groups = []
    for name in names:
        kind = name if name in NOT_SEQUENCES else "sequence"
        sequence = sequences.get(name)
        total = len(sequence.steps) if sequence else 0
        entries = []
        files = _email_files(templates_dir / name)
        if kind == "sequence":
            # Numbered by file, not by the steps that loaded: one file with a broken front matter must
            # not renumber the emails after it (they are still the emails marketing wrote, in order).
            total = len(files)
        for index, path in enumerate(files):
            rel = path.relative_to(templates_dir).as_posix()
            step, error = steps.get(rel), None
            if kind == "system":
                try:
                    step = describe_email(templates_dir, rel)[0]
                except TemplateFormatError as exc:
                    error = where(templates_dir, exc.path, exc.line, exc.message)
            elif step is None:
                error = problems.get(rel, f"{rel}: not part of the {name} sequence")
            number = index + 1 if kind == "sequence" else None
            entries.append(Entry(rel, name, step, error, number, total if kind == "sequence" else 1))
        if entries:
            groups.append(Group(name, kind, tuple(entries), sequence))
    return groups


def relative(templates_dir: Path, path: Path | str) -> str:
    """``path`` as the studio names files: relative to the templates directory (either spelling
    of it, resolved or not), or as given when it is outside."""
    path = Path(path)
    for base in (templates_dir, templates_dir.resolve()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    try:
        return path.resolve().relative_to(templates_dir.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def where(templates_dir: Path, path: Path | str, line: int, message: str) -> str:
    """``file:line: message`` with the file relative to the templates directory (no line when unknown)."""
    rel = relative(templates_dir, path)
    return f"{rel}:{line}: {message}" if line else f"{rel}: {message}"
