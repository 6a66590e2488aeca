"""/admin through the real app: off without a password, basic auth, the figures equal to the
report and to plain SQL counts, the subscriber search, escaping. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nurture.content.sequences import load_sequences
from nurture.db import transaction
from nurture.feedback import funnel_figures
from nurture.models import Event, OutboxMessage, Subscriber
from nurture.runtime import Runtime
from nurture.sending.transports import MemoryTransport
from nurture.web import create_app
from nurture.web.admin import mount_admin

import reports_scene
from conftest import make_settings
from factories import confirmed
from reports_scene import EXPECTED_ALL, EXPECTED_SINCE, NOW

PASSWORD = "s3cret pass"
AUTH = ("admin", PASSWORD)


def make_client(runtime: Runtime) -> TestClient:
    clock = lambda: NOW  # noqa: E731
    app = create_app(runtime, dispatch=False, clock=clock)
    if not any(getattr(route, "path", None) == "/admin" for route in app.routes):  # until app.py mounts it
        mount_admin(app, runtime, clock=clock)
    return TestClient(app, client=("203.0.113.9", 4321))


@pytest.fixture
def admin_runtime(tmp_path, database_url):
    runtime = Runtime(make_settings(tmp_path, database_url, admin_password=PASSWORD),
                      transport_override=MemoryTransport())
    yield runtime
    runtime.close()


@pytest.fixture
def client(admin_runtime):
    with make_client(admin_runtime) as test_client:
        yield test_client


@pytest.fixture
def scene(admin_runtime):
    return reports_scene.build(admin_runtime.sessions)


class Figures(HTMLParser):
    """Every data-figure on the page: name -> the set of values shown under that name."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.values: dict[str, set[int]] = {}
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self._open.append(dict(attrs).get("data-figure"))
        self._text = ""

    def handle_endtag(self, tag):
        name = self._open.pop() if self._open else None
        if name:
            self.values.setdefault(name, set()).add(int(self._text.strip().replace(",", "")))

    def handle_data(self, data):
        self._text = getattr(self, "_text", "") + data

    def one(self) -> dict[str, int]:
        assert all(len(v) == 1 for v in self.values.values()), self.values  # chart, tiles and tables agree
        return {k: next(iter(v)) for k, v in self.values.items()}


# ------------------------------------------------------------------------------------- access

def test_without_a_password_the_dashboard_is_off(runtime):
    assert runtime.settings.admin_password is None
    with make_client(runtime) as client:
        response = client.get("/admin", auth=AUTH)
    assert response.status_code == 404
    assert "The dashboard is off" in response.text and "NURTURE_ADMIN_PASSWORD" in response.text
    assert "www-authenticate" not in response.headers


def test_an_empty_password_does_not_open_it(tmp_path, database_url):
    runtime = Runtime(make_settings(tmp_path, database_url, admin_password=""), transport_override=MemoryTransport())
    try:
        with make_client(runtime) as client:
            assert client.get("/admin", auth=("admin", "")).status_code == 404
    finally:
        runtime.close()


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize("headers", [
    {},
    _basic(b"admin:wrong"),
    _basic(b"root:" + PASSWORD.encode()),
    _basic(b"admin"),  # no colon
    _basic(b"admin:" + PASSWORD.encode() + b"x"),
    _basic(b"\xff\xfe:\xff"),  # not UTF-8
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Bearer " + PASSWORD},
    {"Authorization": "Basic"},
], ids=["none", "wrong-password", "wrong-user", "no-colon", "longer", "not-utf8", "garbled", "bearer", "empty"])
def test_anything_but_the_right_credentials_is_401_with_a_challenge(client, headers):
    response = client.get("/admin", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert "data-figure" not in response.text


def test_the_right_credentials_open_it_with_strict_headers(client):
    response = client.get("/admin", auth=AUTH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert ' style="' not in response.text and "<script" not in response.text  # nothing the CSP would block
    assert 'href="/static/admin.css"' in response.text
    assert client.get("/static/admin.css").status_code == 200


def test_guessing_is_throttled_even_for_a_right_guess(client):
    for _ in range(10):
        assert client.get("/admin", auth=("admin", "guess")).status_code == 401
    response = client.get("/admin", auth=AUTH)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0


# ------------------------------------------------------------------------------------- figures

def test_the_page_shows_the_reports_figures_and_the_databases_counts(client, admin_runtime, scene):
    shown = Figures(client.get("/admin", auth=AUTH).text).one()
    sequence = load_sequences(admin_runtime.settings.templates_dir)["nurture"]
    with admin_runtime.sessions() as session:
        funnel = funnel_figures.funnel(session, since=None, sequence=sequence,
                                consultation_url=admin_runtime.settings.consultation_url,
                                trackable=funnel_figures.trackable_links(admin_runtime.renderer, (s.template for s in sequence.steps),
                                                                  track_clicks=True))
        assert shown["signups"] == funnel.signups == session.scalar(select(func.count()).select_from(Subscriber))
        assert shown["confirmed"] == funnel.confirmed == session.scalar(select(func.count(Subscriber.confirmed_at)))
        assert shown["goal"] == funnel.goal == EXPECTED_ALL["goal"]
        for step in funnel.steps:
            key = f"seq:nurture:{step.key}"
            sent = session.scalar(select(func.count()).where(OutboxMessage.key == key,
                                                             OutboxMessage.sent_at.is_not(None)))
            assert shown[f"step:{step.key}:sent"] == step.sent == sent
            for name in ("not_yet_due", "stopped", "clickers", "unsubscribed", "bounced", "goal_clickers"):
                if name == "clickers" and step.key not in ("consultation-invite", "invite-reminder"):
                    # The first three emails have no link but the unsubscribe ones: no clicks to count.
                    assert step.trackable is False and f"step:{step.key}:clickers" not in shown
                    continue
                assert shown[f"step:{step.key}:{name}"] == getattr(step, name) == EXPECTED_ALL["steps"][step.key][name]
        waiting = session.scalar(select(func.count()).where(OutboxMessage.state.in_(("queued", "retry"))))
    assert shown["waiting"] == waiting
    for name, figures in EXPECTED_ALL["broadcasts"].items():
        bid = scene.broadcasts[name]
        for figure, value in figures.items():
            if figure != "openers" or name == "recent":  # the older issue did not track opens
                assert shown[f"bcast:{bid}:{figure}"] == value
    assert shown["signups-30-days"] == 8  # the week's cohort and e; "old" signed up 40 days ago


def test_a_period_shows_the_cohort_of_that_period(client, scene):
    shown = Figures(client.get("/admin?days=7", auth=AUTH).text).one()
    assert (shown["signups"], shown["confirmed"], shown["goal"]) == (
        EXPECTED_SINCE["signups"], EXPECTED_SINCE["confirmed"], EXPECTED_SINCE["goal"])
    assert shown["step:welcome-history:sent"] == EXPECTED_SINCE["steps"]["welcome-history"]["sent"]
    assert f"bcast:{scene.broadcasts['older']}:sent" not in shown  # a month ago: outside the week


@pytest.mark.parametrize("days", ["abc", "-1", "8", "99999999999999999999"])
def test_an_odd_period_falls_back_to_all_time_with_a_note(client, days):
    response = client.get("/admin", params={"days": days}, auth=AUTH)
    assert response.status_code == 200
    assert "showing all time" in response.text


def test_an_empty_database_renders(client):
    response = client.get("/admin", auth=AUTH)
    assert response.status_code == 200
    assert "The queue is empty." in response.text and "Nothing sent yet." in response.text


def test_missing_sequence_templates_leave_a_note_not_an_error(tmp_path, database_url):
    runtime = Runtime(make_settings(tmp_path, database_url, admin_password=PASSWORD,
                                    templates_dir=str(tmp_path / "nowhere")), transport_override=MemoryTransport())
    try:
        reports_scene.build(runtime.sessions)
        confirmed(runtime.sessions, "waiting@example.com", NOW)  # nothing queued: the plan needs the templates
        with make_client(runtime) as client:
            response = client.get("/admin?email=waiting@example.com", auth=AUTH)
        assert response.status_code == 200
        assert "No templates for the sequence" in response.text
        assert "The timeline needs the sequence templates, which cannot be read" in response.text
    finally:
        runtime.close()


# ------------------------------------------------------------------------------------- search

def test_search_shows_a_subscribers_timeline(client, scene):
    response = client.get("/admin", params={"email": "  C@Example.com "}, auth=AUTH)
    assert response.status_code == 200
    text = response.text
    assert '<span class="address">c@example.com</span>' in text
    assert "seq:nurture:welcome-history · sent" in text
    assert "Nothing more will be sent:</strong> the address bounced" in text
    assert "consent signup" in text and "consent confirm" in text


def test_search_says_what_comes_next(client, scene):
    text = client.get("/admin", params={"email": "f@example.com"}, auth=AUTH).text
    # how-it-may-work is queued for f (due on the 21st): that message is what comes next.
    assert "<strong>Next:</strong> how-it-may-work on Saturday 21 November, 03:00 their time" in text


@pytest.mark.parametrize("email, message", [
    ("nobody@example.com", "No subscriber has the address nobody@example.com."),
    ("not-an-address", "That doesn&#39;t look like an email address"),
    ("a@b.c\nBcc: x@y.z", "line break or control character"),
    ("x" * 5000 + "@example.com", "longer than"),
    ("=?utf-8?q?a?=@example.com", "doesn&#39;t look like an email address"),
])
def test_unknown_or_malformed_addresses_get_a_clear_message(client, scene, email, message):
    response = client.get("/admin", params={"email": email}, auth=AUTH)
    assert response.status_code == 200
    assert 'role="alert"' in response.text and message in response.text
    assert 'class="panel timeline"' not in response.text


def test_a_hostile_address_and_hostile_data_are_escaped(client, admin_runtime, scene):
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>@example.com'
    with transaction(admin_runtime.sessions) as session:
        session.add(Event(kind="bounced", created_at=NOW, subscriber_id=scene.ids["c"],
                          detail="<b onmouseover=alert(3)>550</b>"))
    text = client.get("/admin", params={"email": hostile}, auth=AUTH).text
    assert "<script>" not in text and "<img src=x" not in text and "<b onmouseover" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown back, as text
    assert "&lt;b onmouseover=alert(3)&gt;550&lt;/b&gt;" in text


# ------------------------------------------------------------------------------ a broken template

def test_a_broken_template_is_a_banner_until_its_held_mail_goes(tmp_path, database_url):
    """The banner names the file and line (relative, as the editor does), how many messages it
    holds, then says it renders again once fixed, and is gone when those messages have gone."""
    import shutil
    from datetime import timedelta

    from conftest import TEMPLATES

    templates = tmp_path / "emails"
    shutil.copytree(TEMPLATES, templates)
    welcome = templates / "nurture" / "10-welcome-history.html.j2"
    good = welcome.read_text()
    welcome.write_text(good.replace("{{ first_name }}", "{{ frist_name }}"))
    runtime = Runtime(make_settings(tmp_path, database_url, admin_password=PASSWORD, templates_dir=str(templates)),
                      transport_override=MemoryTransport())
    try:
        confirmed(runtime.sessions, "ann@example.com", NOW)
        assert runtime.sender().run_pass(NOW).broken
        with make_client(runtime) as client:
            page = client.get("/admin", auth=AUTH).text
            assert 'role="alert" data-broken="nurture/10-welcome-history.html.j2"' in page
            assert "nurture/10-welcome-history.html.j2:10: &#39;frist_name&#39; is undefined" in page
            assert str(templates) not in page
            assert "1 message held" in page

            welcome.write_text(good)
            page = client.get("/admin", auth=AUTH).text
            assert "nurture/10-welcome-history.html.j2 renders again." in page

            summary = runtime.sender().run_pass(NOW + timedelta(hours=1))
            assert summary.sent == 1 and not summary.broken
            assert "data-broken" not in client.get("/admin", auth=AUTH).text
    finally:
        runtime.close()


# ------------------------------------------------------------------------- actions on one person

def _form(client, email: str, action: str) -> dict[str, str]:
    """The hidden fields of one action's form on the person's timeline, as a browser would send them."""
    import re

    page = client.get("/admin", params={"email": email}, auth=AUTH).text
    forms = re.findall(r'<form method="post" action="/admin/action">(.*?)</form>', page, re.S)
    for form in forms:
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form))
        if fields.get("action") == action:
            return fields
    raise AssertionError(f"no {action} form for {email}")


def _ledger(runtime, email):
    from nurture.models import ConsentEvent
    from nurture.people.address_hashes import find_by_email

    with runtime.sessions() as session:
        person = find_by_email(session, email)
        rows = session.execute(select(ConsentEvent.kind, ConsentEvent.source).where(
            ConsentEvent.subscriber_id == person.id).order_by(ConsentEvent.id)).all()
        return person.status.value, [tuple(r) for r in rows]


def test_resend_a_confirmation_is_queued_and_in_the_ledger_as_the_admins(client, admin_runtime):
    from nurture.people import subscribers
    from nurture.people.validation import Signup

    from factories import REQUEST

    with transaction(admin_runtime.sessions) as session:
        subscribers.subscribe(session, Signup("pat@example.com", None, "America/Chicago", None, False), now=NOW,
                              request=REQUEST, default_timezone="America/Chicago", confirmations_per_day=3)
    fields = _form(client, "pat@example.com", "resend-confirmation")
    answer = client.post("/admin/action", data=fields, auth=AUTH, follow_redirects=False)
    assert answer.status_code == 303 and "done=resent" in answer.headers["location"]
    assert "A new confirmation email is on its way" in client.get(answer.headers["location"], auth=AUTH).text
    assert _ledger(admin_runtime, "pat@example.com") == ("pending", [("signup", "tests"), ("resend-confirm", "admin:admin")])
    with admin_runtime.sessions() as session:
        keys = set(session.scalars(select(OutboxMessage.key)))
    assert {"sys:confirm:1", "sys:confirm:2"} <= keys
    # The daily cap holds for the admin too (3 a day): the third resend is refused.
    client.post("/admin/action", data=_form(client, "pat@example.com", "resend-confirmation"), auth=AUTH)
    capped = client.post("/admin/action", data=_form(client, "pat@example.com", "resend-confirmation"), auth=AUTH,
                         follow_redirects=False)
    assert "done=capped" in capped.headers["location"]


def test_unsubscribe_a_person_is_in_the_ledger_as_the_admins(client, admin_runtime):
    confirmed(admin_runtime.sessions, "lee@example.com", NOW)
    fields = _form(client, "lee@example.com", "unsubscribe")
    answer = client.post("/admin/action", data=fields, auth=AUTH, follow_redirects=False)
    assert answer.status_code == 303 and "done=unsubscribed" in answer.headers["location"]
    status, ledger = _ledger(admin_runtime, "lee@example.com")
    assert status == "unsubscribed" and ledger[-1] == ("withdraw", "admin:admin")
    page = client.get(answer.headers["location"], auth=AUTH).text
    assert "Unsubscribed from everything" in page and 'value="unsubscribe"' not in page  # nothing left to do


def test_an_action_needs_the_password_its_own_token_and_this_origin(client, admin_runtime):
    confirmed(admin_runtime.sessions, "kim@example.com", NOW)
    confirmed(admin_runtime.sessions, "ivy@example.com", NOW)
    fields = _form(client, "kim@example.com", "unsubscribe")
    assert client.post("/admin/action", data=fields).status_code == 401
    forged = client.post("/admin/action", data={**fields, "email": "ivy@example.com"}, auth=AUTH)
    assert forged.status_code == 403 and "out of date" in forged.text
    assert client.post("/admin/action", data={**fields, "token": "x"}, auth=AUTH).status_code == 403
    elsewhere = client.post("/admin/action", data=fields, auth=AUTH, headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    hidden = client.post("/admin/action", data=fields, auth=AUTH, headers={"Origin": "null"})  # a no-referrer page
    assert hidden.status_code == 403
    assert _ledger(admin_runtime, "kim@example.com")[0] == "confirmed"
    assert _ledger(admin_runtime, "ivy@example.com")[0] == "confirmed"


def test_an_action_token_lasts_an_hour_by_the_apps_clock(client, admin_runtime):
    """Signed and read with the clock the app is given (not the wall clock), so its age is what
    the dashboard's own time says."""
    from datetime import timedelta

    from nurture.web.admin import ACTION_TOKEN_SECONDS

    confirmed(admin_runtime.sessions, "old@example.com", NOW)
    fields = _form(client, "old@example.com", "unsubscribe")
    stale = admin_runtime.tokens.sign_timed("admin-action", ["unsubscribe", "old@example.com"],
                                            NOW - timedelta(seconds=ACTION_TOKEN_SECONDS + 60))
    refused = client.post("/admin/action", data={**fields, "token": stale}, auth=AUTH)
    assert refused.status_code == 403 and "out of date" in refused.text
    assert _ledger(admin_runtime, "old@example.com")[0] == "confirmed"
    fresh = admin_runtime.tokens.sign_timed("admin-action", ["unsubscribe", "old@example.com"],
                                            NOW - timedelta(seconds=ACTION_TOKEN_SECONDS - 60))
    assert client.post("/admin/action", data={**fields, "token": fresh}, auth=AUTH).status_code == 200
    assert _ledger(admin_runtime, "old@example.com")[0] == "unsubscribed"
