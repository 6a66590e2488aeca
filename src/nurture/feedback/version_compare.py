"""What changed between a kept version of an email and the one on disk, as a reader would see it.

The comparison is of the rendered email for the same sample recipient, not of the source files,
because the source is not what people receive:
- an edit of a comment or of indentation changes the source and nothing anyone sees ("no visible
  change", so marketing is not told 180 people get "a new version" of an identical email);
- an edit elsewhere changes what people receive although the step's own file did not change: the
  layout, an included file, or the next step's subject (shown in "Coming in two days: ...").
A kept version carries every file it was built from, so it is rendered again as it was, in a
temporary folder, with today's campaign values (the clinic's address is not a template edit).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nurture.content.rendering import Rendered, Renderer
from nurture.content.sequences import Sequence, load_sequences
from nurture.sending.sent_versions import TemplateVersion

__all__ = ["PARTS", "kept_sequence", "visible_changes"]

# What a reader can tell apart, in the order they are named.
PARTS = ("subject", "preheader", "body", "look")

_SPACE = re.compile(r"\s+")


@contextmanager
def _materialised(version: TemplateVersion) -> Iterator[Path]:
    """The kept files written out under a temporary folder, as they were laid out."""
    with tempfile.TemporaryDirectory(prefix="nurture-version-") as folder:
        root = Path(folder)
        for name, text in version.sources:
            path = (root / name).resolve()
            if root.resolve() not in path.parents:
                continue  # a kept path is relative to the templates folder; anything else is skipped
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        yield root


def _like(renderer: Renderer, templates_dir: Path, year: int) -> Renderer:
    """A renderer over ``templates_dir`` with ``renderer``'s campaign values and a fixed year."""
    return Renderer(templates_dir, clinic=renderer.clinic, base_url=renderer.base_url,
                    consultation_url=renderer.consultation_url, year=year)


def _differences(old: Rendered, new: Rendered) -> tuple[str, ...]:
    def squeeze(text: str) -> str:
        return _SPACE.sub(" ", text).strip()

    changed = []
    if squeeze(old.subject) != squeeze(new.subject):
        changed.append("subject")
    if squeeze(old.preheader) != squeeze(new.preheader):
        changed.append("preheader")
    if squeeze(old.text) != squeeze(new.text):
        changed.append("body")  # the words and the links (the text part lists every link)
    if not changed and squeeze(old.html) != squeeze(new.html):
        # The same words, links, subject and preheader (both are in the HTML too), styled or laid
        # out differently.
        changed.append("look")
    return tuple(changed)


def visible_changes(renderer: Renderer, old: TemplateVersion, template: str, *, year: int) -> tuple[str, ...]:
    """The parts of ``template`` (as on disk now) that differ from the kept version ``old`` for the
    sample recipient: some of :data:`PARTS`, empty for "no visible change". Raises RenderError
    when the email on disk cannot be rendered."""
    sample = renderer.sample_recipient()
    new = _like(renderer, renderer.templates_dir, year).render(template, sample)
    with _materialised(old) as folder:
        try:
            before = _like(renderer, folder, year).render(old.template, sample)
        except Exception:  # noqa: BLE001 - a kept version today's renderer cannot build: all of it changed
            return ("subject", "preheader", "body")
    return _differences(before, new)


def kept_sequence(version: TemplateVersion, name: str) -> Sequence | None:
    """The sequence ``name`` as it was when ``version`` was sent (its sibling steps are kept with
    it), or None when it cannot be read back."""
    with _materialised(version) as folder:
        try:
            return load_sequences(folder).get(name)
        except Exception:  # noqa: BLE001 - a kept version in a format this code no longer reads
            return None
