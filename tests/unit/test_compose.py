"""compose(): the one message builder. The sender, the studio and `nurture templates preview` build
the same email the same way; marketing mail and the confirmation differ only as their kind says."""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email import policy

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nurture.cli import app as cli_app
from nurture.config import load_settings
from nurture.content.rendering import Renderer
from nurture.links import Links
from nurture.message_key import Kind
from nurture.runtime import Runtime
from nurture.sending.compose import compose, outbox_draft, preview_draft, preview_stream, render
from nurture.sending.messages import sender_domain
from nurture.sending.outbox import Claim
from nurture.sending.sender import Sender
from nurture.sending.tracked_links import Tracker
from nurture.tokens import Tokens
from nurture.web.studio import create_studio_app

from conftest import SECRET, TEMPLATES

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
ENV = {"NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES), "NURTURE_DATABASE_URL": "sqlite://"}
SETTINGS = load_settings(ENV)
STREAMS = Runtime(SETTINGS).mail_settings().streams
# (template, its key in the CLI, the outbox key the sender gives it)
EMAILS = [
    ("nurture/10-welcome-history.html.j2", "welcome-history", "seq:nurture:welcome-history"),
    ("newsletter/2026-12-winter.html.j2", "2026-12-winter", "bcast:4"),
    ("system/confirm.html.j2", "confirm", "sys:confirm:1"),
]


class SampleLinks(Links):
    """The sample recipient's links (Renderer.sample_recipient), so the sender's message can be set
    beside a preview's: the same values in, the same email out."""

    def confirm(self, subscriber_id: int, round_: int, now: datetime) -> str:
        return f"{self.base_url}/confirm/sample-token"

    def unsubscribe(self, subscriber_id: int) -> str:
        return f"{self.base_url}/unsubscribe/sample-token"


def sender(*, links: Links | None = None, tracker: Tracker | None = None) -> Sender:
    """The sender as the entry points build it (it never touches the database to build a message)."""
    built = Runtime(SETTINGS).sender()
    return replace(built, links=links or built.links, tracker=tracker)


def claim(template: str, key: str, *, outbox_id: int = 9, track_opens: bool = False) -> Claim:
    return Claim(id=outbox_id, key=key, template=template, attempts=1, unknowns=0, track_opens=track_opens,
                 subscriber_id=5, email="test@example.com", first_name="Alex", timezone="America/Chicago")


def parse(data: bytes):
    return email.message_from_bytes(data, policy=policy.default)


def parts(message) -> tuple[str, str]:
    """The text and HTML parts, decoded (line ends as Python's: the CLI's stdout is text)."""
    return tuple(message.get_body((kind,)).get_content().replace("\r\n", "\n") for kind in ("plain", "html"))


def studio_message(template: str) -> bytes:
    client = TestClient(create_studio_app(SETTINGS, watch=False, clock=lambda: NOW))
    response = client.get(f"/raw/{template}")
    assert response.status_code == 200
    return response.content


def cli_message(cli_key: str) -> bytes:
    done = CliRunner().invoke(cli_app, ["templates", "preview", cli_key, "--format", "eml"], env=ENV)
    assert done.exit_code == 0, done.output
    return done.stdout.encode("ascii")


@pytest.mark.parametrize(("template", "cli_key", "key"), EMAILS)
def test_the_studio_the_cli_and_the_sender_build_the_same_email(template, cli_key, key):
    studio, cli = parse(studio_message(template)), parse(cli_message(cli_key))
    sent = parse(sender(links=SampleLinks(SETTINGS.base_url, Tokens(SECRET))).build(claim(template, key), NOW))
    assert parts(studio) == parts(cli) == parts(sent)
    for header in ("Subject", "From", "To", "List-Unsubscribe-Post"):
        assert studio[header] == cli[header] == sent[header], header
    marketing = Kind.of_template(template).is_marketing
    if marketing:
        # The previews carry the one-click URL; the real message adds the mailto: of its stream.
        assert studio["List-Unsubscribe"] == cli["List-Unsubscribe"] == f"<{SETTINGS.base_url}/unsubscribe/sample-token>"
        assert sent["List-Unsubscribe"].startswith(studio["List-Unsubscribe"] + ", <mailto:")
        assert sent["List-Id"] and sent["Feedback-ID"]
    else:
        assert studio["List-Unsubscribe"] is cli["List-Unsubscribe"] is sent["List-Unsubscribe"] is None
        assert sent["Auto-Submitted"] == "auto-generated"
    # What only the real message has: its list headers, and a Message-ID that is the row's.
    assert studio["List-Id"] is cli["List-Id"] is None and studio["Feedback-ID"] is cli["Feedback-ID"] is None
    assert re.fullmatch(r"<studio\.[a-z0-9-]+\.\d+\.[0-9a-f]{8}@.+>", studio["Message-ID"])
    assert re.fullmatch(r"<preview\.[a-z0-9-]+\.\d+@.+>", cli["Message-ID"])
    assert sent["Message-ID"].startswith("<9.")


@pytest.mark.parametrize(("template", "_cli_key", "key"), EMAILS)
def test_the_sender_composes_through_compose_the_same_bytes_on_every_attempt(template, _cli_key, key):
    the_sender = sender()
    row = claim(template, key)
    draft = outbox_draft(row, links=the_sender.links, secret=SECRET, domain=the_sender.settings.domain, now=NOW)
    direct = compose(draft, renderer=the_sender.renderer, stream=STREAMS.for_key(key), now=NOW)
    assert the_sender.build(row, NOW) == direct == the_sender.build(row, NOW)
    rendered, values = the_sender.content(row, NOW)
    assert rendered == render(draft, the_sender.renderer) and values == dict(draft.values)


def test_links_are_tracked_on_marketing_mail_only_and_never_on_a_preview():
    tracker = Tracker(SETTINGS.base_url, Tokens(SECRET))
    tracked, untracked = sender(tracker=tracker), sender()
    step = ("nurture/40-consultation-invite.html.j2", "seq:nurture:consultation-invite")  # links to the clinic
    html = parts(parse(tracked.build(claim(*step), NOW)))[1]
    assert f"{SETTINGS.base_url}/c/" in html
    assert "/unsubscribe/" in html  # the unsubscribe link works without us: never rewritten
    confirm = ("system/confirm.html.j2", "sys:confirm:1")
    assert tracked.build(claim(*confirm), NOW) == untracked.build(claim(*confirm), NOW)
    assert "/c/" not in parts(parse(tracked.build(claim(*confirm), NOW)))[1]

    renderer = Renderer(TEMPLATES, clinic=SETTINGS.clinic, base_url=SETTINGS.base_url,
                        consultation_url=SETTINGS.consultation_url)
    preview = preview_draft(step[0], to="test@example.com", sample=renderer.sample_recipient(), origin="preview",
                            label="consultation-invite", now=NOW, from_header=SETTINGS.mail_from)
    stream = preview_stream(SETTINGS.mail_from)
    assert compose(preview, renderer=renderer, stream=stream, now=NOW, tracker=tracker) == \
        compose(preview, renderer=renderer, stream=stream, now=NOW)


def test_open_tracking_follows_the_row():
    tracker = Tracker(SETTINGS.base_url, Tokens(SECRET))
    row = ("nurture/40-consultation-invite.html.j2", "seq:nurture:consultation-invite")
    with_pixel = parts(parse(sender(tracker=tracker).build(claim(*row, track_opens=True), NOW)))[1]
    without = parts(parse(sender(tracker=tracker).build(claim(*row), NOW)))[1]
    assert f"{SETTINGS.base_url}/o/" in with_pixel and "/o/" not in without


def test_a_test_copy_has_its_subject_marked_and_nothing_else_changed():
    renderer = Renderer(TEMPLATES, clinic=SETTINGS.clinic, base_url=SETTINGS.base_url,
                        consultation_url=SETTINGS.consultation_url)
    made = {test: parse(compose(preview_draft("system/confirm.html.j2", to="ann@example.com",
                                              sample=renderer.sample_recipient(), origin="studio", label="confirm",
                                              now=NOW, from_header=SETTINGS.mail_from, nonce="abcd1234", test=test),
                                renderer=renderer, stream=preview_stream(SETTINGS.mail_from), now=NOW))
            for test in (False, True)}
    assert made[True]["Subject"] == "[TEST] " + made[False]["Subject"]
    assert parts(made[True]) == parts(made[False])
    assert made[True]["Message-ID"] == made[False]["Message-ID"] == \
        f"<studio.confirm.{int(NOW.timestamp())}.abcd1234@{sender_domain(SETTINGS.mail_from)}>"


@dataclass
class _Row:
    id: int = 1
    key: str = "seq:nurture"
    template: str = "nurture/10-welcome-history.html.j2"
    email: str = "test@example.com"
    first_name: str | None = None
    subscriber_id: int = 1
    track_opens: bool = False


def test_a_row_with_a_key_that_is_not_ours_cannot_be_composed():
    with pytest.raises(ValueError, match="not an outbox key"):
        outbox_draft(_Row(), links=Runtime(SETTINGS).links, secret=SECRET, domain="example.com", now=NOW)
