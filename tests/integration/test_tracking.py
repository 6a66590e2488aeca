"""Click tracking redirects only to the message's own links; opens only when turned on."""

from __future__ import annotations

import email
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email import policy

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from nurture.db import transaction
from nurture.models import Event, OutboxMessage
from nurture.sending import outbox
from nurture.sending.tracked_links import links_in
from nurture.sending.transports import MemoryTransport
from nurture.web import create_app

from factories import confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


CONSULT = "nurture/40-consultation-invite.html.j2"


@pytest.fixture
def sent_html(runtime, memory_transport):
    """The consultation invitation (the email with the call to action) as a reader received it."""
    subscriber_id = confirmed(runtime.sessions, "reader@example.com", T0)
    with transaction(runtime.sessions) as session:
        outbox.enqueue(session, subscriber_id=subscriber_id, key="seq:nurture:consultation-invite",
                       template=CONSULT, due_at=T0, now=T0)
    runtime.sender().run_pass(T0, key_prefix="seq:nurture:consultation")
    [(_f, _t, data)] = memory_transport.sent
    message = email.message_from_bytes(data, policy=policy.default)
    return message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


@pytest.fixture
def client(runtime):
    with TestClient(create_app(runtime, dispatch=False, clock=lambda: T0 + timedelta(hours=1))) as test_client:
        yield test_client


def events(runtime, kind):
    with runtime.sessions() as session:
        return session.scalars(select(Event).where(Event.kind == kind)).all()


def test_links_go_through_the_tracker_except_unsubscribe(sent_html, runtime):
    html_part, text_part = sent_html
    links = links_in(html_part)
    tracked = [u for u in links if u.startswith("http://127.0.0.1:8000/c/")]
    assert tracked, links
    assert any("/unsubscribe/" in u for u in links)  # the unsubscribe link stays direct
    assert "/o/" not in html_part  # opens are off by default


def test_a_click_redirects_to_the_original_link_and_is_recorded(sent_html, runtime, client):
    html_part, _ = sent_html
    original = runtime.renderer.render(CONSULT, runtime.renderer.sample_recipient())
    first_tracked = next(u for u in links_in(html_part) if "/c/" in u)
    response = client.get(first_tracked.replace("http://127.0.0.1:8000", ""), follow_redirects=False)
    assert response.status_code == 302
    target = response.headers["location"]
    assert target in links_in(original.html) and target == runtime.settings.consultation_url
    [event] = events(runtime, "clicked")
    assert event.detail == target and event.outbox_id is not None


def test_every_tracked_link_leads_only_to_a_link_of_that_message(sent_html, runtime, client):
    html_part, _ = sent_html
    allowed = set(links_in(html_part))
    for url in [u for u in links_in(html_part) if "/c/" in u]:
        target = client.get(url.replace("http://127.0.0.1:8000", ""), follow_redirects=False).headers["location"]
        assert target.startswith(("https://", "http://127.0.0.1:8000/")) and "/c/" not in target
    assert allowed


def test_forged_or_altered_click_tokens_get_404(sent_html, runtime, client):
    html_part, _ = sent_html
    url = next(u for u in links_in(html_part) if "/c/" in u)
    token = url.rsplit("/", 1)[1]
    forged = runtime.tokens.sign("unsubscribe", [1, 0, "x"])
    altered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    other_purpose = runtime.tokens.sign("open", 1)
    for bad in (forged, altered, other_purpose, "nonsense", runtime.tokens.sign("click", ["x"])):
        assert client.get(f"/c/{bad}", follow_redirects=False).status_code == 404
    assert events(runtime, "clicked") == []


def test_a_signed_token_for_a_url_not_in_the_message_goes_to_the_clinic_site(sent_html, runtime, client):
    # Even a genuinely signed token whose URL is not in that message leads nowhere else.
    with runtime.sessions() as session:
        outbox_id = session.scalar(select(OutboxMessage.id).where(OutboxMessage.key.startswith("seq:")))
    token = runtime.tokens.sign("click", [outbox_id, 0, "0000000000"])
    response = client.get(f"/c/{token}", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == runtime.settings.website_url


def test_open_pixel_only_when_turned_on(tmp_path, database_url, memory_transport):
    from nurture.runtime import Runtime

    from conftest import make_settings

    rt = Runtime(make_settings(tmp_path, database_url), transport_override=memory_transport)
    confirmed(rt.sessions, "reader@example.com", T0)
    sender = rt.sender()
    with rt.sessions() as session, session.begin():
        sender.store.planner(session, T0)
        for row in session.scalars(select(OutboxMessage).where(OutboxMessage.key.startswith("seq:"))):
            row.track_opens = True
    sender.run_pass(T0)
    html_part = email.message_from_bytes(memory_transport.sent[-1][2], policy=policy.default).get_body(
        ("html",)).get_content()
    pixel = re.search(r'src="http://127\.0\.0\.1:8000(/o/[^"]+)"', html_part).group(1)
    with TestClient(create_app(rt, dispatch=False)) as client:
        response = client.get(pixel)
        assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
        assert client.get("/o/forged").status_code == 404
    assert len(events(rt, "opened")) == 1
    rt.close()


# ------------------------------------------------------- mail already sent, things changed since

def tracked_links(html_part: str) -> list[str]:
    return [u.replace("http://127.0.0.1:8000", "") for u in links_in(html_part) if "/c/" in u]


@pytest.fixture
def own_templates(tmp_path):
    """A copy of the templates, which marketing may rename or delete after a send."""
    from conftest import TEMPLATES

    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    return copy


def sent_with(tmp_path, database_url, memory_transport, templates, **settings):
    """Send the consultation email from one process; return its HTML and the settings to start
    another process (the web endpoint, after a restart) with."""
    from nurture.runtime import Runtime

    from conftest import make_settings

    config = make_settings(tmp_path, database_url, templates_dir=str(templates), **settings)
    sending = Runtime(config, transport_override=memory_transport)
    subscriber_id = confirmed(sending.sessions, "reader@example.com", T0)
    with transaction(sending.sessions) as session:
        outbox.enqueue(session, subscriber_id=subscriber_id, key="seq:nurture:consultation-invite",
                       template=CONSULT, due_at=T0, now=T0)
    sending.sender().run_pass(T0, key_prefix="seq:nurture:consultation")
    sending.close()
    [(_f, _t, data)] = memory_transport.sent
    return email.message_from_bytes(data, policy=policy.default).get_body(("html",)).get_content(), config


@contextmanager
def web(config):
    from nurture.runtime import Runtime

    rt = Runtime(config, transport_override=MemoryTransport())
    try:
        with TestClient(create_app(rt, dispatch=False, clock=lambda: T0 + timedelta(days=30))) as client:
            yield rt, client
    finally:
        rt.close()


@pytest.mark.parametrize("change", ["renamed", "deleted", "broken"])
def test_a_click_after_marketing_renamed_or_removed_the_template_still_lands_and_counts(
    tmp_path, database_url, memory_transport, own_templates, change
):
    html_part, config = sent_with(tmp_path, database_url, memory_transport, own_templates)
    template = own_templates / CONSULT
    if change == "renamed":
        template.rename(template.with_name("45-consultation.html.j2"))
    elif change == "deleted":
        template.unlink()
    else:
        template.write_text(template.read_text().replace("{% endblock %}", "{% endblok %}", 1))
    links = tracked_links(html_part)
    with web(config) as (rt, client):
        targets = [client.get(link, follow_redirects=False) for link in links]
        assert [r.status_code for r in targets] == [302] * len(links)
        landed = [r.headers["location"] for r in targets]
        # The clinic's own consultation link is still recognised by its hash; any other link
        # goes to the clinic's website, never to an address the token did not sign.
        assert config.consultation_url in landed
        assert set(landed) <= {config.consultation_url, config.website_url}
        assert [e.detail for e in events(rt, "clicked")] == landed
        assert all(e.outbox_id is not None for e in events(rt, "clicked"))


def test_clicks_still_land_when_click_tracking_was_turned_off_after_the_send(
    tmp_path, database_url, memory_transport, own_templates
):
    html_part, config = sent_with(tmp_path, database_url, memory_transport, own_templates)
    with web(config.model_copy(update={"track_clicks": False})) as (rt, client):
        responses = [client.get(link, follow_redirects=False) for link in tracked_links(html_part)]
        assert {r.status_code for r in responses} == {302}
        assert config.consultation_url in {r.headers["location"] for r in responses}
        assert events(rt, "clicked") == []  # turned off means not recorded


def test_a_click_for_an_erased_person_or_a_deleted_message_goes_to_the_clinic_site(
    tmp_path, database_url, memory_transport, own_templates
):
    from nurture.people import data_rights

    html_part, config = sent_with(tmp_path, database_url, memory_transport, own_templates)
    links = tracked_links(html_part)

    def landings(client):
        responses = [client.get(link, follow_redirects=False) for link in links]
        assert {r.status_code for r in responses} == {302}
        return [r.headers["location"] for r in responses]

    with web(config) as (rt, client):
        with transaction(rt.sessions) as session:
            data_rights.erase(session, "reader@example.com", now=T0 + timedelta(days=1))
        erased = landings(client)
        gone = client.get(f"/c/{rt.tokens.sign('click', [987654, 0, '0000000000'])}", follow_redirects=False)
        with transaction(rt.sessions) as session:
            session.execute(delete(OutboxMessage))
        deleted = landings(client)
        assert gone.status_code == 302 and gone.headers["location"] == config.website_url
        for landed in (erased, deleted):
            # The message cannot be rebuilt: the clinic's own consultation link is still known by
            # its hash, every other link goes to the clinic's website.
            assert config.consultation_url in landed and set(landed) <= {config.consultation_url, config.website_url}
        assert events(rt, "clicked") == []  # nobody left to count them for


def test_a_click_that_cannot_be_matched_to_the_message_never_leaves_the_clinics_own_links():
    from nurture.sending.tracked_links import _url_hash, destination

    own = ("https://clinic.example/consultation", "https://clinic.example")
    article = "https://journal.example/ketamine"
    assert destination([article], 0, _url_hash(article), own=own, default=own[1]) == article
    assert destination([], 0, _url_hash(own[0]), own=own, default=own[1]) == own[0]  # template gone
    assert destination([], 0, _url_hash(article), own=own, default=own[1]) == own[1]  # unknown now
    assert destination([article], 0, _url_hash("https://evil.example"), own=own, default=own[1]) == own[1]
