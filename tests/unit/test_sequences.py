"""Loading sequence definitions from the email templates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nurture.content.sequences import (
    TemplateFormatError,
    describe_email,
    load_newsletters,
    load_sequences,
    parse_front_matter,
    place_email,
)

SHIPPED = Path(__file__).resolve().parents[2] / "templates" / "emails"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def step_file(key: str, delay: int | None, extra: str = "") -> str:
    delay_line = f"delay_days: {delay}\n" if delay is not None else ""
    return f"---\nkey: {key}\nsubject: About {key}\n{delay_line}{extra}---\n{{% extends 'layout.html.j2' %}}\n"


def test_shipped_nurture_sequence() -> None:
    sequence = load_sequences(SHIPPED)["nurture"]
    # The four numbered emails the welcome and the signup wording promise; then one conditional
    # extra (issue 14), which is not one of them.
    assert [(s.key, s.delay_days, s.position) for s in sequence.series] == [
        ("welcome-history", 0, 0),
        ("how-it-may-work", 2, 1),
        ("risks-side-effects", 5, 2),
        ("consultation-invite", 8, 3),
    ]
    assert [(s.key, s.delay_days, s.position, s.is_extra) for s in sequence.steps[4:]] == [
        ("invite-reminder", 11, 4, True)]
    step = sequence.step("risks-side-effects")
    assert step is not None and step.template == "nurture/30-risks-side-effects.html.j2"
    assert step.subject == "Part 3: risks and side effects, plainly" and step.track_opens is False
    assert sequence.step("gone") is None


def test_newsletter_and_system_are_not_sequences() -> None:
    assert set(load_sequences(SHIPPED)) == {"nurture"}
    issue = load_newsletters(SHIPPED)["2026-12-winter"]
    assert issue.delay_days == 0 and issue.sequence == "newsletter"


def test_steps_ordered_by_number_prefix_so_15_goes_between(tmp_path: Path) -> None:
    write(tmp_path / "s" / "10-a.html.j2", step_file("a", 0))
    write(tmp_path / "s" / "20-b.html.j2", step_file("b", 4))
    write(tmp_path / "s" / "15-c.html.j2", step_file("c", 2))
    write(tmp_path / "s" / "100-d.html.j2", step_file("d", 9))
    write(tmp_path / "s" / "notes.txt", "not a step")
    assert [s.key for s in load_sequences(tmp_path)["s"].steps] == ["a", "c", "b", "d"]


def test_front_matter_is_blanked_keeping_line_numbers() -> None:
    text = "---\nkey: a\n# a comment\nsubject: 'Hello: quoted'\n---\nbody line 6\n"
    front = parse_front_matter(text, "x.html.j2")
    assert front.fields == {"key": "a", "subject": "Hello: quoted"}
    assert front.lines == {"key": 2, "subject": 4}
    assert front.body.split("\n")[5] == "body line 6"
    assert front.body.split("\n")[:5] == [""] * 5


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("<p>no header</p>\n", 1, "the file must start with a front-matter header between '---' lines"),
        ("---\nkey: a\nsubject: x\n", 1, "the front matter is not closed: add a '---' line after the header"),
        ("---\nkey: a\njust words\n---\n", 3, "expected 'name: value' in the front matter, got 'just words'"),
        ("---\nkey: a\nkey: b\n---\n", 3, "'key' is given twice (first on line 2)"),
    ],
)
def test_front_matter_errors_carry_path_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TemplateFormatError) as info:
        parse_front_matter(text, "emails/x.html.j2")
    assert (info.value.line, info.value.message) == (line, message)
    assert str(info.value) == f"emails/x.html.j2:{line}: {message}"


def test_decreasing_delay_is_a_loader_error(tmp_path: Path) -> None:
    write(tmp_path / "s" / "10-a.html.j2", step_file("a", 3))
    path = write(tmp_path / "s" / "20-b.html.j2", step_file("b", 1))
    with pytest.raises(TemplateFormatError) as info:
        load_sequences(tmp_path)
    assert info.value.path == path and info.value.line == 4
    assert "must not decrease" in info.value.message


def test_duplicate_key_is_a_loader_error(tmp_path: Path) -> None:
    write(tmp_path / "s" / "10-a.html.j2", step_file("a", 0))
    path = write(tmp_path / "s" / "20-a.html.j2", step_file("a", 1))
    with pytest.raises(TemplateFormatError, match="duplicate key 'a'") as info:
        load_sequences(tmp_path)
    assert (info.value.path, info.value.line) == (path, 2)


@pytest.mark.parametrize("key", ["-a", "A", "a_b", "a" * 65, ""])
def test_bad_keys(tmp_path: Path, key: str) -> None:
    write(tmp_path / "s" / "10-a.html.j2", step_file(key, 0))
    with pytest.raises(TemplateFormatError):
        load_sequences(tmp_path)


@pytest.mark.parametrize("value", ["yes", "True", "1"])
def test_track_opens_is_strict(tmp_path: Path, value: str) -> None:
    write(tmp_path / "s" / "10-a.html.j2", step_file("a", 0, f"track_opens: {value}\n"))
    with pytest.raises(TemplateFormatError, match="track_opens must be 'true' or 'false'"):
        load_sequences(tmp_path)


def test_track_opens_true(tmp_path: Path) -> None:
    write(tmp_path / "s" / "10-a.html.j2", step_file("a", 0, "track_opens: true\n"))
    assert load_sequences(tmp_path)["s"].steps[0].track_opens is True


def test_step_file_needs_a_number_prefix(tmp_path: Path) -> None:
    write(tmp_path / "s" / "intro.html.j2", step_file("a", 0))
    with pytest.raises(TemplateFormatError, match="must start with a number"):
        load_sequences(tmp_path)


def test_newsletter_has_no_delay(tmp_path: Path) -> None:
    write(tmp_path / "newsletter" / "2026-01.html.j2", step_file("2026-01", 3))
    with pytest.raises(TemplateFormatError, match="only sequence steps have a delay"):
        load_newsletters(tmp_path)


def test_describe_email_gives_position_and_total(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "e")
    step, total = describe_email(tmp_path / "e", "nurture/30-risks-side-effects.html.j2")
    assert (step.key, step.position, total) == ("risks-side-effects", 2, 4)
    step, total = describe_email(tmp_path / "e", "system/confirm.html.j2")
    assert (step.key, step.sequence, total) == ("confirm", "system", 1)


def test_place_email_gives_the_next_step(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "e")
    place = place_email(tmp_path / "e", "nurture/20-how-it-may-work.html.j2")
    assert (place.step.key, place.total, place.next.key, place.next.delay_days) == ("how-it-may-work", 4, "risks-side-effects", 5)
    assert place_email(tmp_path / "e", "nurture/40-consultation-invite.html.j2").next is None
    assert place_email(tmp_path / "e", "newsletter/2026-12-winter.html.j2").next is None
