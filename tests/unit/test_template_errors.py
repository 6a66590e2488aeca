"""A rendering mistake is told as the template file and line where it is."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateSyntaxError, UndefinedError

from nurture.content.template_errors import error_message, front_matter_line, template_line


def test_the_innermost_template_line_of_a_runtime_error(tmp_path: Path) -> None:
    (tmp_path / "layout.j2").write_text("top\n{% block body %}{% endblock %}\n")
    (tmp_path / "email.j2").write_text("{% extends 'layout.j2' %}\n{% block body %}\nok\n{{ 1 / 0 }}\n{% endblock %}\n")
    env = Environment(loader=FileSystemLoader(str(tmp_path)))
    try:
        env.get_template("email.j2").render()
    except ZeroDivisionError as exc:
        caught = exc
    path, line = template_line(caught, tmp_path)
    assert (path.name, line) == ("email.j2", 4)
    assert error_message(caught) == "ZeroDivisionError: division by zero"


def test_a_syntax_error_names_its_own_file_and_line(tmp_path: Path) -> None:
    exc = TemplateSyntaxError("unexpected end of template", 7, "email.j2", str(tmp_path / "email.j2"))
    assert template_line(exc, tmp_path) == (tmp_path / "email.j2", 7)
    assert error_message(exc) == "template syntax error: unexpected end of template"


def test_an_error_outside_the_templates_has_no_line(tmp_path: Path) -> None:
    try:
        raise KeyError("x")
    except KeyError as exc:
        assert template_line(exc, tmp_path) is None


def test_jinjas_own_words_are_kept(tmp_path: Path) -> None:
    env = Environment(undefined=StrictUndefined)
    try:
        env.from_string("{{ clinic_name }}").render()
    except UndefinedError as exc:
        assert error_message(exc) == "'clinic_name' is undefined"


def test_the_line_of_a_front_matter_field(tmp_path: Path) -> None:
    path = tmp_path / "10-one.html.j2"
    path.write_text("---\nkey: one\nsubject: One\npreheader: P\n---\nbody\n")
    assert front_matter_line(path, "subject") == 3
    assert front_matter_line(path, "preheader") == 4
    assert front_matter_line(path, "delay_days") == 1  # absent: the top of the file
    assert front_matter_line(tmp_path / "missing.html.j2", "subject") == 1
