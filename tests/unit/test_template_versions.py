"""The inline-once cache: a version is the content of an email's files, the campaign and the year."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nurture.content.recipient_slots import RecipientSlots
from nurture.content.template_versions import Compiled, TemplateVersions, fingerprint


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    (tmp_path / "email.j2").write_text("hello")
    (tmp_path / "layout.j2").write_text("layout")
    return [tmp_path / "email.j2", tmp_path / "layout.j2"]


class Builder:
    def __init__(self) -> None:
        self.builds: list[tuple[str, int]] = []

    def __call__(self, template: str, year: int) -> Compiled:
        self.builds.append((template, year))
        line = RecipientSlots(("first_name",)).split_line(f"v{len(self.builds)}")
        return Compiled(line, line, line, line, frozenset())


def get(versions: TemplateVersions, files: list[Path], build: Builder, *, year: int = 2026,
        campaign: dict | None = None) -> Compiled:
    return versions.get("email.j2", year=year, campaign=campaign or {"clinic": "A"}, files=lambda _t: files,
                        build=build)


def test_a_version_is_built_once(tmp_path: Path, files: list[Path]) -> None:
    versions, build = TemplateVersions(tmp_path, recheck_seconds=0), Builder()
    first = get(versions, files, build)
    assert get(versions, files, build) is first
    assert build.builds == [("email.j2", 2026)]


def test_touching_a_file_costs_no_rebuild_but_changing_it_does(tmp_path: Path, files: list[Path]) -> None:
    versions, build = TemplateVersions(tmp_path, recheck_seconds=0), Builder()
    get(versions, files, build)
    os.utime(files[1], ns=(1, 1))
    get(versions, files, build)
    assert len(build.builds) == 1
    files[1].write_text("layout, edited")
    get(versions, files, build)
    assert len(build.builds) == 2
    files[1].write_text("layout")  # back to a version seen before: no build
    get(versions, files, build)
    assert len(build.builds) == 2


def test_a_new_year_is_a_new_version(tmp_path: Path, files: list[Path]) -> None:
    versions, build = TemplateVersions(tmp_path, recheck_seconds=3600), Builder()
    get(versions, files, build)
    get(versions, files, build, year=2027)  # at once, even within the recheck interval
    get(versions, files, build, year=2026)  # seen before
    assert build.builds == [("email.j2", 2026), ("email.j2", 2027)]


def test_within_the_recheck_interval_the_files_are_not_looked_at(tmp_path: Path, files: list[Path]) -> None:
    versions, build = TemplateVersions(tmp_path, recheck_seconds=3600), Builder()
    get(versions, files, build)
    files[0].write_text("changed")
    get(versions, files, build)
    assert len(build.builds) == 1


def test_the_fingerprint_covers_paths_contents_folders_and_salt(tmp_path: Path, files: list[Path]) -> None:
    base = fingerprint(tmp_path, files, ["email.j2", 2026])
    assert fingerprint(tmp_path, files, ["email.j2", 2026]) == base
    assert fingerprint(tmp_path, files, ["email.j2", 2027]) != base
    assert fingerprint(tmp_path, files[:1], ["email.j2", 2026]) != base
    with_folder = fingerprint(tmp_path, [*files, tmp_path], [])
    (tmp_path / "new-step.j2").write_text("x")
    assert fingerprint(tmp_path, [*files, tmp_path], []) != with_folder  # a step added to the folder
