"""The loader hides front matter without moving lines; an email's files are what it is made of."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import Environment

from nurture.content.template_loader import FrontMatterLoader, TemplateSourceError, template_files


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    write(tmp_path, "layout.html.j2", "{% block body %}{% endblock %}{% include 'footer.j2' %}")
    write(tmp_path, "footer.j2", "footer")
    write(tmp_path, "series/10-one.html.j2", "---\nkey: one\nsubject: One\n---\n{% extends 'layout.html.j2' %}")
    write(tmp_path, "series/20-two.html.j2", "---\nkey: two\nsubject: Two\n---\n{% extends 'layout.html.j2' %}")
    write(tmp_path, "system/confirm.html.j2", "---\nkey: confirm\nsubject: C\n---\n{% extends 'layout.html.j2' %}")
    return tmp_path


def env(root: Path) -> Environment:
    return Environment(loader=FrontMatterLoader(str(root)))


def test_front_matter_is_blanked_and_lines_stay_where_they_were(templates: Path) -> None:
    write(templates, "series/30-bad.html.j2", "---\nkey: bad\nsubject: Bad\n---\n\n{{ 1 + }}\n")
    source, _, _ = env(templates).loader.get_source(env(templates), "series/30-bad.html.j2")
    assert "subject" not in source and source.count("\n") == 6
    with pytest.raises(Exception) as caught:
        env(templates).get_template("series/30-bad.html.j2")
    assert caught.value.lineno == 6


def test_a_step_is_made_of_its_chain_its_siblings_and_its_folder(templates: Path) -> None:
    files = template_files(env(templates), templates, "series/10-one.html.j2")
    names = [str(p.relative_to(templates)) for p in files]
    assert names[0] == "series/10-one.html.j2"
    assert set(names) == {"series/10-one.html.j2", "layout.html.j2", "footer.j2", "series/20-two.html.j2", "series"}


def test_a_system_email_has_no_siblings(templates: Path) -> None:
    names = {str(p.relative_to(templates)) for p in template_files(env(templates), templates, "system/confirm.html.j2")}
    assert names == {"system/confirm.html.j2", "layout.html.j2", "footer.j2"}


def test_a_computed_template_name_and_a_syntax_error_are_located(templates: Path) -> None:
    write(templates, "series/30-dyn.html.j2", "---\nkey: d\nsubject: D\n---\n{% extends name %}")
    with pytest.raises(TemplateSourceError, match="fixed strings") as caught:
        template_files(env(templates), templates, "series/30-dyn.html.j2")
    assert caught.value.path.name == "30-dyn.html.j2"
    write(templates, "series/40-syntax.html.j2", "---\nkey: s\nsubject: S\n---\n\n{% if %}")
    with pytest.raises(TemplateSourceError, match="template syntax error") as caught:
        template_files(env(templates), templates, "series/40-syntax.html.j2")
    assert caught.value.line == 6


def test_a_missing_file_is_left_for_the_build_to_report(templates: Path) -> None:
    assert template_files(env(templates), templates, "nowhere.html.j2") == [templates / "nowhere.html.j2"]
