"""nurture studio through its HTTP routes, on a copy of the real templates that the tests break on disk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import email
import html
import mailbox
import re
import shutil
from datetime import datetime, timezone
from email import policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from nurture.content.sequences import Sequence, Step, scan_templates
from nurture.sending.journey import Window
from nurture.sending.transports import MemoryTransport, Unreachable
from nurture.web.studio import create_studio_app
from nurture.web.studio_catalogue import templates_stamp
from nurture.web.studio_events import TemplateWatcher
from nurture.web.studio_journey import plan_journey

from conftest import TEMPLATES, make_settings

WELCOME = "nurture/10-welcome-history.html.j2"
MECHANISM = "nurture/20-how-it-may-work.html.j2"
NOW = datetime(2026, 3, 6, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def templates(tmp_path) -> Path:
    directory = tmp_path / "emails"
    shutil.copytree(TEMPLATES, directory)
    return directory


@pytest.fixture
def settings(tmp_path, templates):
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", templates_dir=str(templates))


@pytest.fixture
def client(settings):
    return TestClient(create_studio_app(settings, watch=False, clock=lambda: NOW))


def all_emails(templates: Path) -> list[Step]:
    sequences, newsletters, errors = scan_templates(templates)
    assert errors == []
    steps = [step for seq in sequences.values() for step in seq.steps] + list(newsletters.values())
    return steps


def text_of(response) -> str:
    return html.unescape(response.text)


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().split("\n"), 1) if needle in line)


def break_with_undefined_name(path: Path) -> int:
    """Add {{ nope }} to the first paragraph; returns the line it is on."""
    source = path.read_text()
    line = line_of(path, "<p>Hi {{ first_name }},</p>")
    path.write_text(source.replace("<p>Hi {{ first_name }},</p>", "<p>Hi {{ first_name }}, {{ nope }}</p>", 1))
    return line


def test_the_list_shows_every_email_in_order_with_delay_subject_preheader_and_key(client, templates):
    page = client.get("/")
    assert page.status_code == 200
    body = text_of(page)
    steps = all_emails(templates)
    assert len(steps) >= 5
    positions = []
    for step in steps:
        assert step.subject in body and step.preheader in body
        positions.append(body.index(f">{step.key}<"))
    sequence_positions = positions[: len(steps) - 1]
    assert sequence_positions == sorted(sequence_positions), "sequence steps out of file order"
    for step in steps:
        if step.sequence == "nurture":
            assert f"Day {step.delay_days}" in body
    assert "Please confirm your subscription" in body  # the system email is listed too
    assert "All templates valid" in body


def test_each_email_renders_with_its_subject(client, templates):
    for step in all_emails(templates) + [Step("system", "confirm", 0, 0, "Please confirm your subscription", "",
                                              "system/confirm.html.j2")]:
        preview = client.get(f"/render/{step.template}")
        assert preview.status_code == 200, step.template
        assert step.subject in text_of(preview)
        assert "script-src" not in preview.headers["content-security-policy"]  # no scripts in previews at all
        page = client.get(f"/email/{step.template}")
        assert page.status_code == 200
        shown = re.search(r'<h1 class="subject" id="subject">([^<]+)</h1>', page.text).group(1)
        assert html.unescape(shown) == step.subject


def test_plain_text_and_raw_source(client, templates):
    page = text_of(client.get(f"/email/{MECHANISM}"))
    plain = client.get(f"/text/{MECHANISM}")
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
    assert "Hi Alex," in plain.text and "<p>" not in plain.text
    assert plain.text.strip()[:200] in page  # the Plain text tab holds the same text
    raw = client.get(f"/raw/{MECHANISM}")
    assert raw.headers["content-type"].startswith("message/rfc822")
    message = email.message_from_bytes(raw.content, policy=policy.default)
    assert message["Subject"] == "Part 2: how it may work"
    assert message["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/unsubscribe/")
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert "Subject: Part 2: how it may work" in page and "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in page
    confirm = email.message_from_bytes(client.get("/raw/system/confirm.html.j2").content, policy=policy.default)
    assert confirm["List-Unsubscribe"] is None  # not marketing


def test_an_undefined_name_saved_on_disk_shows_as_file_and_line(client, templates):
    assert "All templates valid" in client.get(f"/email/{MECHANISM}").text
    line = break_with_undefined_name(templates / MECHANISM)
    page = client.get(f"/email/{MECHANISM}")
    assert page.status_code == 200
    body = text_of(page)
    assert f"{MECHANISM}:{line}: 'nope' is undefined" in body
    assert "Traceback" not in body
    assert "1 error" in body  # the badge in the bar
    assert "This email does not render" in body
    preview = client.get(f"/render/{MECHANISM}")
    assert preview.status_code == 422 and f"{MECHANISM}:{line}: 'nope' is undefined" in text_of(preview)
    # The last version that rendered stays visible, greyed out, until the line is fixed.
    assert client.get(f"/render/{MECHANISM}?last_good=1").status_code == 200
    # Another email is unaffected but the bar still counts the problem.
    other = text_of(client.get(f"/email/{WELCOME}"))
    assert "This email does not render" not in other and "1 error" in other


def test_a_missing_endblock_is_a_syntax_error_with_its_line(client, templates):
    path = templates / WELCOME
    source = path.read_text()
    path.write_text(source.replace("{% endblock %}", "", 1))
    body = text_of(client.get(f"/email/{WELCOME}"))
    assert re.search(rf"{re.escape(WELCOME)}:\d+: {{% block body %}} is never closed", body), body[:2000]
    overview = text_of(client.get("/"))
    assert re.search(rf"{re.escape(WELCOME)}:\d+", overview) and "1 error" in overview


def test_broken_front_matter_is_listed_with_its_error_not_a_500(client, templates):
    path = templates / MECHANISM
    path.write_text(path.read_text().replace("delay_days: 2", "delay_days: two", 1))
    index = text_of(client.get("/"))
    assert f"{MECHANISM}:5: delay_days must be a whole number" in index
    page = client.get(f"/email/{MECHANISM}")
    assert page.status_code == 200
    assert f"{MECHANISM}:5: delay_days must be a whole number" in text_of(page)
    journey = text_of(client.get("/journey?zone=UTC&date=2026-03-06&time=10:00"))
    assert "how-it-may-work" not in journey.split('id="journey-table"')[1]  # held back, like the sender does


def test_send_test_refuses_a_bad_address_with_a_clear_message(client, tmp_path):
    answer = client.post(f"/send-test/{MECHANISM}", data={"to": "not-an-address"}, headers={"accept": "application/json"})
    assert answer.status_code == 400
    assert answer.json() == {"ok": False, "message": "That doesn't look like an email address: "
                             "An email address must have an @-sign."}
    page = client.post(f"/send-test/{MECHANISM}", data={"to": ""})
    assert page.status_code == 400 and "Please enter your email address." in text_of(page)
    assert not (tmp_path / "outbox" / "new").exists() or not list((tmp_path / "outbox" / "new").iterdir())


def test_send_test_puts_a_test_copy_in_the_maildir_outbox(client, tmp_path):
    answer = client.post(f"/send-test/{MECHANISM}", data={"to": "Marketing@Clinic.Example"},
                         headers={"accept": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True and "marketing@clinic.example" in answer.json()["message"]
    assert str(tmp_path / "outbox") in answer.json()["message"]  # says where it went
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    (data,) = [box.get_bytes(key) for key in box.keys()]
    message = email.message_from_bytes(data, policy=policy.default)
    assert message["Subject"] == "[TEST] Part 2: how it may work"
    assert message["To"] == "marketing@clinic.example"
    # Without JavaScript the form posts normally and gets the page back with the outcome.
    page = client.post(f"/send-test/{MECHANISM}", data={"to": "marketing@clinic.example"})
    assert page.status_code == 200 and "Test sent to marketing@clinic.example" in text_of(page)


def test_send_test_reports_a_mail_server_outage_and_a_broken_template(settings, templates):
    transport = MemoryTransport(replies=[Unreachable("cannot reach SMTP server mail.example:587")])
    client = TestClient(create_studio_app(settings, transport=transport, watch=False))
    answer = client.post(f"/send-test/{MECHANISM}", data={"to": "a@clinic.example"}, headers={"accept": "application/json"})
    assert answer.status_code == 502 and "cannot reach SMTP server" in answer.json()["message"]
    line = break_with_undefined_name(templates / MECHANISM)
    answer = client.post(f"/send-test/{MECHANISM}", data={"to": "a@clinic.example"}, headers={"accept": "application/json"})
    assert answer.status_code == 422 and f"{MECHANISM}:{line}:" in answer.json()["message"]
    assert transport.sent == []


def test_journey_dates_in_the_subscribers_zone_across_the_start_of_daylight_saving(client):
    page = client.get("/journey", params={"zone": "America/New_York", "date": "2026-03-06", "time": "10:00"})
    assert page.status_code == 200
    rows = {m.group(1): re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(2))).strip()
            for m in re.finditer(r'<tr data-key="([^"]+)"[^>]*>(.*?)</tr>', page.text, re.S)}
    assert list(rows) == ["welcome-history", "how-it-may-work", "risks-side-effects", "consultation-invite",
                          "invite-reminder"]
    assert "Friday, 2026-03-06 10:00 EST" in rows["welcome-history"]
    assert "Sunday, 2026-03-08 09:00 EDT" in rows["how-it-may-work"]  # clocks went forward at 02:00 that day
    assert "Wednesday, 2026-03-11 09:00 EDT" in rows["risks-side-effects"]
    assert "Saturday, 2026-03-14 09:00 EDT" in rows["consultation-invite"]
    assert "Tuesday, 2026-03-17 09:00 EDT" in rows["invite-reminder"]  # if they clicked nothing in the invitation


def test_journey_defaults_to_today_in_the_clinics_zone_and_refuses_nonsense_politely(client, settings):
    page = text_of(client.get("/journey"))
    assert f'<option value="{settings.timezone}" selected>' in page
    assert 'value="2026-03-06"' in page and 'value="09:00"' in page  # NOW is 09:00 in Chicago
    bad = client.get("/journey", params={"zone": "Mars/Olympus", "date": "2026-02-30"})
    assert bad.status_code == 400
    assert "“Mars/Olympus” is not a time zone" in text_of(bad) and "“2026-02-30” is not a date" in text_of(bad)


def test_plan_journey_keeps_one_marketing_email_a_day():
    steps = tuple(Step("s", key, i, delay, key, "", f"s/{i}.html.j2") for i, (key, delay) in
                  enumerate([("a", 0), ("b", 0), ("c", 1), ("d", 3)]))
    zone = ZoneInfo("Europe/London")
    rows = plan_journey(Sequence("s", steps), confirmed_at=datetime(2026, 6, 1, 21, 30, tzinfo=timezone.utc),
                        zone=zone, window=Window())
    assert [(r.at.strftime("%m-%d %H:%M"), r.pushed) for r in rows] == [
        ("06-01 22:30", False), ("06-02 09:00", True), ("06-03 09:00", True), ("06-04 09:00", False)]


def test_only_loopback_hosts_and_same_origin_posts(client):
    assert client.get("/", headers={"host": "evil.example"}).status_code == 403  # DNS rebinding
    assert client.get("/", headers={"host": "127.0.0.1:8001"}).status_code == 200
    cross = client.post(f"/send-test/{MECHANISM}", data={"to": "a@clinic.example"},
                        headers={"origin": "https://evil.example"})
    assert cross.status_code == 403


def test_unknown_or_outside_paths_are_404(client):
    assert client.get("/email/nurture/99-nope.html.j2").status_code == 404
    assert "It may have been renamed or removed" in client.get("/email/nurture/99-nope.html.j2").text
    for url in ("/render/../config.py", "/render/layout.html.j2", "/text/%2e%2e/%2e%2e/etc/passwd", "/raw/nope"):
        assert client.get(url).status_code == 404, url


def test_the_stamp_changes_when_a_template_is_saved_and_the_watcher_notices(templates):
    before = templates_stamp(templates)
    (templates / "notes.txt").write_text("not a template")
    (templates / "nurture" / ".10-welcome-history.html.j2.swp").write_text("editor swap file")
    assert templates_stamp(templates) == before

    async def scenario() -> tuple[str, list[str]]:
        watcher = TemplateWatcher(templates)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await asyncio.sleep(0.3)  # the watcher is set up
        path = templates / WELCOME
        path.write_text(path.read_text() + "\n")
        await asyncio.wait_for(watcher.wait(before, timeout=5), 6)
        stop.set()
        await asyncio.wait_for(task, 6)
        return watcher.stamp, watcher.changed

    # In a thread of its own: a Playwright session (the browser tests) may own this thread's loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        after, changed = pool.submit(asyncio.run, scenario()).result(timeout=30)
    assert after != before and after == templates_stamp(templates)
    assert changed == [WELCOME]  # named by the file event, not found by the fallback polling


def test_a_runtime_error_in_a_template_is_a_message_with_its_line(client, templates):
    path = templates / WELCOME
    line = line_of(path, "<p>Hi {{ first_name }},</p>")
    path.write_text(path.read_text().replace("<p>Hi {{ first_name }},</p>", "<p>Hi {{ 1 / 0 }}</p>", 1))
    page = client.get(f"/email/{WELCOME}")
    assert page.status_code == 200
    assert f"{WELCOME}:{line}: ZeroDivisionError: division by zero" in text_of(page)


def test_a_step_inserted_on_disk_appears_in_its_place(client, templates):
    source = (templates / MECHANISM).read_text()
    inserted = source.replace("key: how-it-may-work", "key: check-in").replace("delay_days: 2", "delay_days: 1") \
                     .replace('subject: "Part 2: how it may work"', "subject: A quick check-in")
    (templates / "nurture" / "15-check-in.html.j2").write_text(inserted)
    body = text_of(client.get("/"))
    order = [body.index(f">{key}<") for key in ("welcome-history", "check-in", "how-it-may-work")]
    assert order == sorted(order)
    # The studio numbers the files marketing edits, the conditional reminder too.
    assert "email 2 of 6" in text_of(client.get("/email/nurture/15-check-in.html.j2"))


# ------------------------------------------------------------------ errors a person can act on

def _problems(page: str) -> list[str]:
    return [html.unescape(f"{where} {message}") for where, message in
            re.findall(r'<code class="where">(.*?)</code><span class="msg">(.*?)</span>', page)]


def test_an_unclosed_block_is_reported_where_it_was_opened(client, templates):
    path = templates / MECHANISM
    source = path.read_text()
    opened = next(n for n, text in enumerate(source.split("\n"), 1) if "{% block body %}" in text)
    path.write_text(source.replace("{% endblock %}", "", 1))
    expected = f"{MECHANISM}:{opened}: {{% block body %}} is never closed: add {{% endblock %}} where it should end"
    assert expected in html.unescape(client.get(f"/email/{MECHANISM}").text)
    assert expected.replace(": {%", " {%", 1) in _problems(client.get("/").text)


def test_an_unknown_variable_suggests_the_nearest_known_one(client, templates):
    path = templates / WELCOME
    path.write_text(path.read_text().replace("{{ first_name }}", "{{ frist_name }}", 1))
    page = html.unescape(client.get(f"/email/{WELCOME}").text)
    assert "'frist_name' is undefined: did you mean first_name?" in page
    assert any("'frist_name' is undefined: did you mean first_name?" in p for p in _problems(client.get("/").text))
    # Nothing near enough: no guess.
    path.write_text(path.read_text().replace("{{ frist_name }}", "{{ zzzqqq }}", 1))
    assert "did you mean" not in html.unescape(client.get(f"/email/{WELCOME}").text)


def test_a_bad_delay_does_not_renumber_the_list(client, templates):
    path = templates / MECHANISM
    path.write_text(path.read_text().replace("delay_days: 2", "delay_days: two", 1))
    page = client.get("/").text
    numbers = re.findall(r'<span class="num" aria-hidden="true">(.*?)</span>', page)
    assert numbers[:4] == ["1", "2", "3", "4"]
    assert "delay_days must be a whole number of days (0 or more), got &#39;two&#39;" in page
    emails = re.findall(r'href="/email/(nurture/[^"]+)"', page)
    assert emails[:5] == sorted(p.relative_to(templates).as_posix() for p in (templates / "nurture").glob("*.html.j2"))


def test_a_preview_without_a_first_name(client):
    page = client.get(f"/email/{WELCOME}?name=none").text
    assert "sample subscriber with no first name" in page and f"/render/{WELCOME}?v=" in page
    assert "&amp;name=none" in page
    assert "Hi Alex" not in page  # the plain-text tab too
    nameless = client.get(f"/render/{WELCOME}?name=none").text
    assert "Alex" not in nameless and "Hi there" in nameless
    assert "Hi Alex" in client.get(f"/render/{WELCOME}").text
