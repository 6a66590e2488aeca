"""Which version of an email a message was built from: the files' hash, read once per version per
process, and recorded on the row the sender sends (the in-memory store here; both databases in
tests/integration/test_impact.py)."""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from nurture.content.rendering import Renderer
from nurture.models import OutboxState
from nurture.runtime import Runtime
from nurture.sending.memory_store import MemoryStore
from nurture.sending.sender import Sender
from nurture.sending.sent_versions import SentVersions, version_of_files
from nurture.sending.transports import MemoryTransport

from conftest import TEMPLATES, make_settings

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
WELCOME = "nurture/10-welcome-history.html.j2"


@pytest.fixture
def templates(tmp_path) -> Path:
    copy = tmp_path / "emails"
    shutil.copytree(TEMPLATES, copy)
    return copy


def renderer_for(templates: Path) -> Renderer:
    return Renderer(templates, clinic={}, base_url="http://127.0.0.1:8000", year=2026, recheck_seconds=0)


def test_a_version_is_the_text_of_every_file_the_email_is_made_of(templates):
    renderer = renderer_for(templates)
    version = version_of_files(WELCOME, templates, renderer.dependencies(WELCOME))
    names = [name for name, _ in version.sources]
    assert names == sorted(names)
    assert {WELCOME, "layout.html.j2", "nurture/_whats-next.j2", "nurture/20-how-it-may-work.html.j2"} <= set(names)
    assert "nurture" not in names  # the folder itself is not a file: its listing is the set of siblings
    assert version.files()[WELCOME] == (templates / WELCOME).read_text(encoding="utf-8")
    again = version_of_files(WELCOME, templates, renderer.dependencies(WELCOME))
    assert again.digest == version.digest and len(version.digest) == 64 and version.short == version.digest[:10]
    other = version_of_files("nurture/20-how-it-may-work.html.j2", templates,
                             renderer.dependencies("nurture/20-how-it-may-work.html.j2"))
    assert other.digest != version.digest  # the same files, another email: another version
    sibling = templates / "nurture" / "40-consultation-invite.html.j2"
    sibling.write_text(sibling.read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert version_of_files(WELCOME, templates, renderer.dependencies(WELCOME)).digest != version.digest


class CountingRenderer:
    """The two things SentVersions asks of a renderer, counted."""

    def __init__(self, real: Renderer) -> None:
        self.real, self.templates_dir, self.reads = real, real.templates_dir, 0

    def version(self, template: str) -> str:
        return self.real.version(template)

    def dependencies(self, template: str):
        self.reads += 1
        return self.real.dependencies(template)


def test_the_files_are_read_once_per_version_not_per_message(templates):
    renderer = CountingRenderer(renderer_for(templates))
    versions = SentVersions()
    first = [versions.of(renderer, WELCOME) for _ in range(50)]
    assert renderer.reads == 1 and len({v.digest for v in first}) == 1
    path = templates / WELCOME
    path.write_text(path.read_text(encoding="utf-8").replace("a little history", "some history"), encoding="utf-8")
    edited = versions.of(renderer, WELCOME)
    assert renderer.reads == 2 and edited.digest != first[0].digest
    assert "some history" in edited.files()[WELCOME]


def test_the_sender_records_the_version_each_sent_message_was_built_from(tmp_path, templates):
    runtime = Runtime(make_settings(tmp_path, "sqlite:///never-opened.db", templates_dir=str(templates)))
    store, transport = MemoryStore(), MemoryTransport()
    sender = Sender(store=store, renderer=runtime.renderer, transport=transport, links=runtime.links,
                    settings=replace(runtime.mail_settings(), threads=1), worker="here", clock=lambda: T0,
                    rng=random.Random(1))
    ids = [store.enqueue(store.add_person(f"p{n}@example.com"), "seq:nurture:welcome-history", T0, template=WELCOME)
           for n in range(3)]
    broken = store.enqueue(store.add_person("q@example.com"), "seq:nurture:gone", T0, template="nurture/99-gone.html.j2")
    sender.run_pass(T0)
    expected = version_of_files(WELCOME, templates, runtime.renderer.dependencies(WELCOME))
    assert {store.rows[i].state for i in ids} == {OutboxState.sent}
    assert {store.rows[i].template_version for i in ids} == {expected.digest}
    assert store.versions == {(WELCOME, expected.digest): expected}  # kept once, for three messages
    assert store.rows[broken].template_version is None  # never built: no version
