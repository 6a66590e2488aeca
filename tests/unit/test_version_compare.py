"""What a reader would see change between a kept version and the files on disk: the comparison
is of the rendered email, so a comment or spacing is no change and a sibling's subject is one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nurture.content.rendering import Renderer
from nurture.feedback.version_compare import kept_sequence, visible_changes
from nurture.sending.sent_versions import version_of_files

from conftest import TEMPLATES

HOW = "nurture/20-how-it-may-work.html.j2"
WELCOME = "nurture/10-welcome-history.html.j2"


@pytest.fixture
def templates(tmp_path) -> Path:
    copy = tmp_path / "emails"
    shutil.copytree(TEMPLATES, copy)
    return copy


def kept(templates: Path, template: str):
    """The version of ``template`` as it is now, as the sender would keep it."""
    renderer = Renderer(templates, clinic={}, base_url="http://127.0.0.1:8000", year=2026)
    return renderer, version_of_files(template, templates, renderer.dependencies(template))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_comment_and_spacing_are_no_visible_change(templates):
    renderer, old = kept(templates, HOW)
    edit(templates / HOW, "{% block body %}", "{% block body %}\n{# checked by Dr. Rivera, December #}\n\n\n   ")
    assert visible_changes(renderer, old, HOW, year=2026) == ()


@pytest.mark.parametrize("old_text, new_text, parts", [
    ('subject: "Part 2: how it may work"', 'subject: "Part 2: how it may help"', ("subject",)),
    ("preheader: What researchers think", "preheader: What scientists think", ("preheader",)),
    ("{% block body %}", "{% block body %}<p>A new paragraph.</p>", ("body",)),
])
def test_each_part_a_reader_sees_is_named(templates, old_text, new_text, parts):
    renderer, old = kept(templates, HOW)
    edit(templates / HOW, old_text, new_text)
    assert visible_changes(renderer, old, HOW, year=2026) == parts


def test_a_style_only_edit_is_a_change_of_look_and_a_layout_edit_reaches_every_email(templates):
    renderer, old = kept(templates, HOW)
    edit(templates / "layout.html.j2", "<body", "<body data-edited=\"yes\"")
    assert visible_changes(renderer, old, HOW, year=2026) == ("look",)


def test_the_next_steps_subject_changes_the_email_before_it(templates):
    renderer, old = kept(templates, WELCOME)
    edit(templates / HOW, 'subject: "Part 2: how it may work"', 'subject: "Part 2: how it may help"')
    assert visible_changes(renderer, old, WELCOME, year=2026) == ("body",)  # "Coming in two days: ..."


def test_the_sequence_a_version_was_sent_in_can_be_read_back(templates):
    _, old = kept(templates, HOW)
    (templates / "nurture" / "30-risks-side-effects.html.j2").unlink()
    sequence = kept_sequence(old, "nurture")
    assert [s.key for s in sequence.steps] == ["welcome-history", "how-it-may-work", "risks-side-effects",
                                               "consultation-invite", "invite-reminder"]
