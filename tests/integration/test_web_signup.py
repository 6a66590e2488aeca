"""The public endpoint through the real app, on a real SQLite file and on PostgreSQL."""

from __future__ import annotations

import email
import re
from datetime import datetime, timedelta, timezone
from email import policy

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import func, select

from nurture.models import ConsentEvent, OutboxMessage, Status, Subscriber
from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS
from nurture.web import create_app

from factories import Clock

START = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)



@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def client(runtime, clock):
    app = create_app(runtime, clock=clock)
    with TestClient(app, client=("203.0.113.7", 5555)) as test_client:
        yield test_client


def sent_mail(client, transport, count):
    assert client.app.state.dispatcher.wait_idle(10)
    assert len(transport.sent) == count, [m[1] for m in transport.sent]
    return [email.message_from_bytes(data, policy=policy.default) for _, _, data in transport.sent]


def confirm_link(message) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(r"http://127\.0\.0\.1:8000(/confirm/[A-Za-z0-9_.\-]+)", text).group(1)


def rows(runtime, model):
    with runtime.sessions() as session:
        return session.scalars(select(model).order_by(model.id)).all()


def signup(client, address="reader@example.com", **extra):
    body = {"email": address, "consent": True, "timezone": "Europe/Berlin", **extra}
    return client.post("/subscribe", json=body, headers={"user-agent": "pytest-browser/1.0"})


def test_signup_page_has_the_form_and_consent_wording(client):
    page = client.get("/")
    assert page.status_code == 200
    for needle in ['name="email"', 'name="first_name"', 'name="consent"', 'name="website"', 'id="timezone"',
                   str(escape(CONSENT_WORDINGS[CONSENT_VERSION]))[:60], "988"]:
        assert needle in page.text


def test_json_signup_records_consent_and_mails_a_confirmation_within_seconds(client, runtime, memory_transport):
    response = signup(client, "Reader@Example.COM", first_name="Zoë")
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    [subscriber] = rows(runtime, Subscriber)
    assert (subscriber.email, subscriber.status, subscriber.timezone) == ("reader@example.com", Status.pending,
                                                                          "Europe/Berlin")
    [event] = rows(runtime, ConsentEvent)
    assert (event.kind, event.ip, event.user_agent, event.source) == ("signup", "203.0.113.7", "pytest-browser/1.0",
                                                                     "json-api")
    assert (event.wording, event.wording_version) == (CONSENT_WORDINGS[CONSENT_VERSION], CONSENT_VERSION)
    [message] = sent_mail(client, memory_transport, 1)
    assert message["To"] == "reader@example.com"
    body = message.get_body(("plain",)).get_content()
    assert "Zoë" not in body and "Zoë" not in message.get_body(("html",)).get_content()
    assert "/confirm/" in body
    assert message["List-Unsubscribe"] is None  # not marketing


def test_form_signup_shows_check_your_inbox(client, runtime):
    response = client.post("/subscribe", data={"email": "form@example.com", "consent": "yes",
                                               "consent_version": CONSENT_VERSION, "timezone": "", "website": ""})
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    [subscriber] = rows(runtime, Subscriber)
    assert subscriber.timezone == runtime.settings.timezone  # the server-side fallback


def test_confirm_get_changes_nothing_post_confirms_idempotently(client, runtime, memory_transport, clock):
    signup(client)
    link = confirm_link(sent_mail(client, memory_transport, 1)[0])
    page = client.get(link)
    assert page.status_code == 200 and "<form method=\"post\"" in page.text
    assert rows(runtime, Subscriber)[0].status is Status.pending
    clock.advance(minutes=3)
    assert client.post(link).status_code == 200
    assert client.post(link).status_code == 200
    [subscriber] = rows(runtime, Subscriber)
    assert subscriber.status is Status.confirmed and subscriber.confirmed_at == START + timedelta(minutes=3)
    kinds = [e.kind for e in rows(runtime, ConsentEvent)]
    assert kinds == ["signup", "confirm"]
    # The welcome step goes out right after confirming, not at the next scheduler run.
    assert client.app.state.dispatcher.wait_idle(10)
    keys = [m.key for m in rows(runtime, OutboxMessage)]
    assert keys[0] == "sys:confirm:1" and keys[1].startswith("seq:nurture:")


def test_responses_do_not_reveal_whether_an_address_is_known(client, runtime, memory_transport):
    first = signup(client, "known@example.com")
    again = signup(client, "known@example.com")
    other = signup(client, "unknown@example.com")
    assert first.json() == again.json() == other.json()
    assert first.status_code == again.status_code == other.status_code == 202
    form_a = client.post("/subscribe", data={"email": "known@example.com", "consent": "on"})
    form_b = client.post("/subscribe", data={"email": "new@example.com", "consent": "on"})
    # The result page echoes what was typed, and nothing else differs.
    assert "known@example.com" in form_a.text and "new@example.com" in form_b.text
    assert form_a.text.replace("known@example.com", "X") == form_b.text.replace("new@example.com", "X")


def test_pending_resignup_resends_at_most_every_ten_minutes_and_a_few_times_a_day(
    client, runtime, memory_transport, clock
):
    signup(client)
    signup(client)
    sent_mail(client, memory_transport, 1)
    clock.advance(minutes=11)
    signup(client)
    sent_mail(client, memory_transport, 2)
    for _ in range(5):
        clock.advance(minutes=11)
        signup(client)
    sent_mail(client, memory_transport, runtime.settings.confirmations_per_day)
    # Every confirmation link in the mailbox still works.
    first_link = confirm_link(email.message_from_bytes(memory_transport.sent[0][2], policy=policy.default))
    assert client.post(first_link).status_code == 200
    assert rows(runtime, Subscriber)[0].status is Status.confirmed


def test_unsubscribe_page_then_post_records_withdrawal(client, runtime, memory_transport):
    signup(client)
    client.post(confirm_link(sent_mail(client, memory_transport, 1)[0]))
    token = runtime.tokens.unsubscribe(rows(runtime, Subscriber)[0].id)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and "Stop everything" in page.text
    assert rows(runtime, Subscriber)[0].status is Status.confirmed
    done = client.post(f"/unsubscribe/{token}", data={"scope": "all"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert rows(runtime, Subscriber)[0].status is Status.unsubscribed
    assert [e.kind for e in rows(runtime, ConsentEvent)] == ["signup", "confirm", "withdraw"]


def test_rfc8058_one_click_returns_200_without_redirect_or_cookie(client, runtime, memory_transport):
    signup(client)
    client.post(confirm_link(sent_mail(client, memory_transport, 1)[0]))
    token = runtime.tokens.unsubscribe(rows(runtime, Subscriber)[0].id)
    for _ in range(2):
        response = client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                                headers={"content-type": "application/x-www-form-urlencoded"},
                                follow_redirects=False)
        assert response.status_code == 200
        assert "set-cookie" not in response.headers and "location" not in response.headers
    assert rows(runtime, Subscriber)[0].status is Status.unsubscribed
    assert [e.kind for e in rows(runtime, ConsentEvent)].count("withdraw") == 1


def test_partial_unsubscribe_keeps_the_other_list(client, runtime, memory_transport):
    signup(client)
    client.post(confirm_link(sent_mail(client, memory_transport, 1)[0]))
    token = runtime.tokens.unsubscribe(rows(runtime, Subscriber)[0].id)
    client.post(f"/unsubscribe/{token}", data={"scope": "newsletter"})
    subscriber = rows(runtime, Subscriber)[0]
    assert (subscriber.status, subscriber.wants_series, subscriber.wants_newsletter) == (Status.confirmed, True, False)
    assert client.post(f"/unsubscribe/{token}", data={"scope": "everything"}).status_code == 422


def test_resignup_after_unsubscribe_starts_a_fresh_double_opt_in(client, runtime, memory_transport, clock):
    signup(client)
    client.post(confirm_link(sent_mail(client, memory_transport, 1)[0]))
    assert client.app.state.dispatcher.wait_idle(10)
    client.post(f"/unsubscribe/{runtime.tokens.unsubscribe(rows(runtime, Subscriber)[0].id)}")
    clock.advance(minutes=1)
    before = len(memory_transport.sent)
    signup(client)
    assert client.app.state.dispatcher.wait_idle(10)
    assert rows(runtime, Subscriber)[0].status is Status.pending
    assert len(memory_transport.sent) == before + 1
    assert "/confirm/" in email.message_from_bytes(memory_transport.sent[-1][2], policy=policy.default).get_body(
        ("plain",)).get_content()


def test_confirm_token_expires_after_72_hours_with_an_offer_of_a_new_link(client, runtime, memory_transport, clock):
    signup(client)
    link = confirm_link(sent_mail(client, memory_transport, 1)[0])
    clock.advance(hours=73)
    page = client.get(link)
    assert page.status_code == 410 and "new link" in page.text
    renewed = client.post(link)
    assert renewed.status_code == 200 and "Check your inbox" in renewed.text
    # POST/redirect/GET, as after a signup: reloading the answer never asks for a link again.
    assert [r.status_code for r in renewed.history] == [303] and renewed.url.path == "/check-inbox"
    assert rows(runtime, Subscriber)[0].email in renewed.text
    assert client.get("/check-inbox").status_code == 200 and len(sent_mail(client, memory_transport, 2)) == 2
    assert rows(runtime, Subscriber)[0].status is Status.pending
    fresh = confirm_link(sent_mail(client, memory_transport, 2)[1])
    assert client.post(fresh).status_code == 200
    assert rows(runtime, Subscriber)[0].status is Status.confirmed


def test_tokens_are_purpose_bound(client, runtime, memory_transport):
    signup(client)
    confirm_token = confirm_link(sent_mail(client, memory_transport, 1)[0]).rsplit("/", 1)[1]
    unsubscribe_token = runtime.tokens.unsubscribe(rows(runtime, Subscriber)[0].id)
    assert client.post(f"/unsubscribe/{confirm_token}").status_code == 404
    assert client.post(f"/confirm/{unsubscribe_token}").status_code == 404
    assert client.post("/confirm/garbage").status_code == 404
    assert rows(runtime, Subscriber)[0].status is Status.pending


def test_honeypot_gets_the_normal_answer_and_stores_nothing(client, runtime, memory_transport):
    response = signup(client, website="http://spam.example")
    assert response.status_code == 202
    assert rows(runtime, Subscriber) == [] and rows(runtime, ConsentEvent) == []
    assert client.app.state.dispatcher.wait_idle(5) and memory_transport.sent == []


def test_rate_limit_per_ip_answers_429_with_retry_after(tmp_path, database_url, memory_transport, clock):
    from nurture.runtime import Runtime

    from conftest import make_settings

    rt = Runtime(make_settings(tmp_path, database_url, subscribe_rate="3/minute"), transport_override=memory_transport)
    with TestClient(create_app(rt, clock=clock, dispatch=False)) as limited:
        codes = [signup(limited, f"r{i}@example.com").status_code for i in range(5)]
    rt.close()
    assert codes == [202, 202, 202, 429, 429]


def test_form_with_a_time_zone_the_server_does_not_know_falls_back_to_the_clinics(client, runtime):
    # The zone comes from the browser's JavaScript; the person could not correct it.
    response = client.post("/subscribe", data={"email": "tz@example.com", "consent": "on", "timezone": "Mars/Olympus"})
    assert response.status_code == 200
    assert rows(runtime, Subscriber)[0].timezone == runtime.settings.timezone


def test_internationalised_domain_is_stored_normalised(client, runtime):
    assert signup(client, "Anna@BÜCHER.de").status_code == 202
    assert signup(client, "anna@xn--bcher-kva.de").status_code == 202
    [subscriber] = rows(runtime, Subscriber)
    assert subscriber.email == "anna@bücher.de"


BAD_JSON = [
    ({"email": "not-an-address", "consent": True}, "email"),
    ({"email": "a" * 250 + "@example.com", "consent": True}, "email"),
    ({"email": "x@example.com\r\nBcc: victim@example.com", "consent": True}, "email"),
    ({"email": "x@example.com", "first_name": "n" * 101, "consent": True}, "first_name"),
    ({"email": "x@example.com", "first_name": "Bo\x07b", "consent": True}, "first_name"),
    ({"email": "x@example.com", "first_name": "Bob\nSmith", "consent": True}, "first_name"),
    ({"email": "x@example.com"}, "consent"),
    ({"email": "x@example.com", "consent": False}, "consent"),
    ({"email": "x@example.com", "consent": "maybe"}, "consent"),
    ({"email": "x@example.com", "consent": True, "timezone": "Mars/Olympus"}, "timezone"),
    ({"email": "x@example.com", "consent": True, "admin": True}, "admin"),
    ({"email": 42, "consent": True}, "email"),
]


@pytest.mark.parametrize(("body", "field"), BAD_JSON)
def test_bad_json_input_gets_a_clear_422_and_stores_nothing(client, runtime, body, field):
    response = client.post("/subscribe", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field and response.json()["error"]
    assert rows(runtime, Subscriber) == []


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b"<xml/>", "application/xml", 415),
        (b"email=a@example.com", "text/plain", 415),
        (b"", "", 415),
        (b"email=" + b"a" * 17000, "application/x-www-form-urlencoded", 413),
        (b"email=a%40example.com&email=b%40example.com&consent=on", "application/x-www-form-urlencoded", 422),
        (b"email=%ff%fe&consent=on", "application/x-www-form-urlencoded", 400),
    ],
)
def test_malformed_bodies_get_a_clear_4xx(client, runtime, content, content_type, status):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/subscribe", content=content, headers=headers)
    assert response.status_code == status
    assert response.status_code < 500
    assert rows(runtime, Subscriber) == []


def test_form_errors_re_render_the_page_escaped(client, runtime):
    response = client.post("/subscribe", data={"email": "<script>alert(1)</script>", "first_name": "<b>x</b>"})
    assert response.status_code == 422
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;" in response.text and "&lt;b&gt;x&lt;/b&gt;" in response.text
    assert 'role="alert"' in response.text


def test_health_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert "/subscribe" in spec["paths"] and "/unsubscribe/{token}" in spec["paths"]
    assert client.get("/no-such-page").status_code == 404


def test_nothing_is_half_written_when_the_database_refuses(client, runtime):
    """A failure after the subscriber and ledger rows are added rolls the whole signup back."""
    from sqlalchemy import event

    def broken(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            raise RuntimeError("disk full")

    event.listen(runtime.engine, "before_cursor_execute", broken)
    try:
        with pytest.raises(RuntimeError):
            signup(client)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", broken)
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        assert session.scalar(select(func.count()).select_from(ConsentEvent)) == 0


# ------------------------------------------------------------------------- multipart/form-data

def multipart(fields: list[tuple[str, str]], boundary: str = "nurture-test-boundary") -> tuple[bytes, dict]:
    """A multipart/form-data body as browsers and mailbox providers send it."""
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def confirmed_token(client, runtime, memory_transport) -> str:
    signup(client)
    client.post(confirm_link(sent_mail(client, memory_transport, 1)[0]))
    return runtime.tokens.unsubscribe(rows(runtime, Subscriber)[0].id)


def test_rfc8058_one_click_sent_as_multipart_unsubscribes(client, runtime, memory_transport):
    # RFC 8058 section 3.1: the POST body SHOULD be multipart/form-data; Gmail and others send that.
    token = confirmed_token(client, runtime, memory_transport)
    body, headers = multipart([("List-Unsubscribe", "One-Click")])
    response = client.post(f"/unsubscribe/{token}", content=body, headers=headers, follow_redirects=False)
    assert response.status_code == 200 and "location" not in response.headers
    assert rows(runtime, Subscriber)[0].status is Status.unsubscribed
    [withdrawal] = [e for e in rows(runtime, ConsentEvent) if e.kind == "withdraw"]
    assert withdrawal.source == "one-click"


def test_multipart_forms_work_like_urlencoded_ones(client, runtime, memory_transport):
    body, headers = multipart([("email", "multi@example.com"), ("consent", "on"), ("website", "")])
    assert client.post("/subscribe", content=body, headers=headers).status_code == 200
    token = runtime.tokens.unsubscribe(rows(runtime, Subscriber)[0].id)
    body, headers = multipart([("scope", "newsletter")])
    assert client.post(f"/unsubscribe/{token}", content=body, headers=headers).status_code == 200
    subscriber = rows(runtime, Subscriber)[0]
    assert (subscriber.email, subscriber.wants_series, subscriber.wants_newsletter) == (
        "multi@example.com", True, False)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (multipart([("email", "a@example.com"), ("email", "b@example.com"), ("consent", "on")])[0],
         "multipart/form-data; boundary=nurture-test-boundary", 422),
        (b'--b\r\nContent-Disposition: form-data; name="email"; filename="list.csv"\r\n'
         b"Content-Type: text/csv\r\n\r\na@example.com\r\n--b--\r\n", "multipart/form-data; boundary=b", 422),
        (b"--b\r\nnot a part at all", "multipart/form-data; boundary=b", 400),
        (b"email=a%40example.com&consent=on", "multipart/form-data", 400),  # no boundary
        (b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\n\xff\xfe@example.com\r\n--b--\r\n',
         "multipart/form-data; boundary=b", 400),
    ],
    ids=["field-twice", "file", "garbled", "no-boundary", "not-utf8"],
)
def test_malformed_multipart_bodies_get_a_clear_4xx_and_store_nothing(client, runtime, content, content_type,
                                                                       status):
    response = client.post("/subscribe", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert rows(runtime, Subscriber) == []


# --------------------------------------------------------------------------------- hostile JSON

def test_deeply_nested_json_is_a_clear_400_not_a_crash(client, runtime):
    depth = 5000  # well inside the 16 KiB limit, far past Python's recursion limit
    for content in ('{"email": ' + "[" * depth + "]" * depth + ', "consent": true}', "[" * depth + "]" * depth):
        response = client.post("/subscribe", content=content.encode(), headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert "nested" in response.json()["error"]
    assert rows(runtime, Subscriber) == []


def test_a_json_key_given_twice_is_refused_like_a_form_field_given_twice(client, runtime):
    content = b'{"email": "twice@example.com", "consent": false, "consent": true}'
    response = client.post("/subscribe", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"error": "The field consent was sent twice.", "field": "consent"}
    assert rows(runtime, Subscriber) == [] and rows(runtime, ConsentEvent) == []


def test_a_json_body_without_a_length_is_still_capped(client, runtime):
    def chunks():
        yield b'{"email": "big@example.com", "consent": true, "first_name": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    response = client.post("/subscribe", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert rows(runtime, Subscriber) == []


# ---------------------------------------------------------------------------- forwarded headers

def ledger_ips(runtime) -> list[str | None]:
    return [event.ip for event in rows(runtime, ConsentEvent)]


def test_forwarded_for_from_an_untrusted_client_is_ignored(client, runtime):
    # The client fixture's peer (203.0.113.7) is not a trusted proxy: NURTURE_TRUSTED_PROXIES is unset.
    signup(client, "one@example.com", timezone="UTC")
    client.post("/subscribe", json={"email": "two@example.com", "consent": True},
                headers={"x-forwarded-for": "198.51.100.20", "x-real-ip": "198.51.100.21"})
    assert ledger_ips(runtime) == ["203.0.113.7", "203.0.113.7"]


def proxied_client(tmp_path, database_url, memory_transport, clock, **settings):
    from nurture.runtime import Runtime

    from conftest import make_settings

    rt = Runtime(make_settings(tmp_path, database_url, **settings), transport_override=memory_transport)
    return rt, TestClient(create_app(rt, clock=clock, dispatch=False), client=("10.1.2.3", 40000))


def test_forwarded_for_from_a_trusted_proxy_is_the_client_for_the_ledger_and_the_limit(
    tmp_path, database_url, memory_transport, clock
):
    rt, proxied = proxied_client(tmp_path, database_url, memory_transport, clock,
                                 trusted_proxies="10.0.0.0/8", subscribe_rate="2/minute")
    with proxied:
        def via(address, forwarded):
            return proxied.post("/subscribe", json={"email": address, "consent": True},
                                headers={"x-forwarded-for": forwarded})

        codes = [via("a@example.com", "198.51.100.1").status_code,
                 via("b@example.com", "203.0.113.50, 198.51.100.1").status_code,  # a client's own claim is skipped
                 via("c@example.com", "198.51.100.1").status_code,
                 via("d@example.com", "198.51.100.2").status_code]
    try:
        assert codes == [202, 202, 429, 202]
        assert ledger_ips(rt) == ["198.51.100.1", "198.51.100.1", "198.51.100.2"]
    finally:
        rt.close()


def test_the_admin_lockout_follows_the_same_rule(tmp_path, database_url, memory_transport, clock):
    rt, proxied = proxied_client(tmp_path, database_url, memory_transport, clock,
                                 trusted_proxies="10.1.2.3", admin_password="right password")
    try:
        with proxied:
            for _ in range(10):
                assert proxied.get("/admin", auth=("admin", "guess"),
                                   headers={"x-forwarded-for": "198.51.100.66"}).status_code == 401
            # The guesser is locked out; another person behind the same proxy is not.
            right = ("admin", "right password")
            locked = proxied.get("/admin", auth=right, headers={"x-forwarded-for": "198.51.100.66"})
            other = proxied.get("/admin", auth=right, headers={"x-forwarded-for": "198.51.100.67"})
        assert (locked.status_code, other.status_code) == (429, 200)
    finally:
        rt.close()

    rt, direct = proxied_client(tmp_path, database_url, memory_transport, clock, admin_password="right password")
    try:
        with direct:
            for i in range(10):  # a different made-up address each time changes nothing
                direct.get("/admin", auth=("admin", "guess"), headers={"x-forwarded-for": f"198.51.100.{i}"})
            response = direct.get("/admin", auth=("admin", "right password"),
                                  headers={"x-forwarded-for": "198.51.100.99"})
        assert response.status_code == 429
    finally:
        rt.close()


def test_the_objects_frozen_for_the_app_s_life_are_handed_back_to_the_collector(runtime, clock):
    """The app keeps what start-up made out of the garbage collector's way while it runs, and
    gives it back when it stops, so an app that goes away (as in tests) leaves nothing uncollectable."""
    import gc

    with TestClient(create_app(runtime, clock=clock, dispatch=False)) as running:
        assert running.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
