"""The `nurture` command as an operator runs it: a real process, a real SQLite file, a Maildir."""

from __future__ import annotations

import mailbox
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nurture.db import make_engine, session_factory

from conftest import SECRET, TEMPLATES
from factories import confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def nurture(workdir, *args, env=None, check=True):
    environ = {**os.environ, "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
               "COLUMNS": "200", **(env or {})}
    environ.pop("NURTURE_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "nurture", *args], cwd=workdir, env=environ,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def one_line_error(done, code):
    assert done.returncode == code
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_fresh_folder_upgrade_send_due_explain(workdir):
    assert "created the database: sqlite:///subscribers.db" in nurture(workdir, "db", "upgrade").stderr
    assert "database is up to date: sqlite:///subscribers.db" in nurture(workdir, "db", "upgrade").stderr
    assert (workdir / "subscribers.db").exists()
    confirmed(session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}")), "ann@example.com", T0)
    first = nurture(workdir, "send-due", "--now", T0.isoformat()).stdout
    assert "sent 1," in first
    assert "sent 0," in nurture(workdir, "send-due", "--now", (T0 + timedelta(hours=1)).isoformat()).stdout
    assert "sent 1," in nurture(workdir, "send-due", "--now", (T0 + timedelta(days=2)).isoformat()).stdout
    assert len(mailbox.Maildir(workdir / "outbox")) == 2
    from nurture.db import transaction
    from nurture.models import Event, OutboxMessage
    with transaction(sessions := session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}"))) as session:
        row = session.query(OutboxMessage).filter(OutboxMessage.key == "seq:nurture:how-it-may-work").one()
        session.add(Event(kind="clicked", created_at=T0 + timedelta(days=2, minutes=30), outbox_id=row.id,
                          subscriber_id=row.subscriber_id, detail="https://clearwater-psychiatry.example/learn"))
    story = nurture(workdir, "explain", "ANN@example.com", "--now", (T0 + timedelta(days=2, hours=1)).isoformat())
    assert "seq:nurture:welcome-history · sent" in story.stdout
    assert "clicked · seq:nurture:how-it-may-work" in story.stdout
    assert "https://clearwater-psychiatry.example/learn" in story.stdout
    assert "next: risks-side-effects, scheduled for " in story.stdout and " at 09:00 CST their time (" in story.stdout
    sessions.kw["bind"].dispose()


def test_bad_input_is_one_line_and_a_non_zero_exit(workdir):
    nurture(workdir, "db", "upgrade")
    one_line_error(nurture(workdir, "send-due", "--now", "tomorrow", check=False), 1)
    one_line_error(nurture(workdir, "explain", "nobody@example.com", check=False), 1)
    one_line_error(nurture(workdir, "explain", "not an address", check=False), 1)
    one_line_error(nurture(workdir, "db", "upgrade", env={"NURTURE_TIMEZONE": "Mars/Olympus"}, check=False), 2)
    one_line_error(nurture(workdir, "broadcast", "create", "no-such-issue", check=False), 1)
    one_line_error(nurture(workdir, "broadcast", "cancel", "99", check=False), 1)
    one_line_error(nurture(workdir, "templates", "preview", "nope", check=False), 1)
    one_line_error(nurture(workdir, "send-due", env={"NURTURE_TEMPLATES_DIR": str(workdir / "none")},
                           check=False), 2)
    unreachable = nurture(workdir, "send-due", env={"NURTURE_SMTP_URL": "smtp://127.0.0.1:9"}, check=False)
    assert unreachable.returncode == 0  # nothing due: no connection needed


def test_send_due_with_the_mail_server_down_fails_clearly_and_keeps_the_mail(workdir):
    nurture(workdir, "db", "upgrade")
    confirmed(session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}")), "ann@example.com", T0)
    line = one_line_error(nurture(workdir, "send-due", "--now", T0.isoformat(),
                                  env={"NURTURE_SMTP_URL": "smtp://127.0.0.1:9"}, check=False), 1)
    assert "unreachable" in line
    assert "sent 1," in nurture(workdir, "send-due", "--now", T0.isoformat()).stdout


def test_templates_validate_catches_a_broken_copy(workdir):
    assert "templates OK" in nurture(workdir, "templates", "validate").stderr
    broken = workdir / "emails"
    shutil.copytree(TEMPLATES, broken)
    step = broken / "nurture" / "20-how-it-may-work.html.j2"
    step.write_text(step.read_text().replace("{% endblock %}", "", 1))
    done = nurture(workdir, "templates", "validate", env={"NURTURE_TEMPLATES_DIR": str(broken)}, check=False)
    assert done.returncode == 1
    assert "20-how-it-may-work.html.j2:" in done.stderr


def test_templates_preview_text_and_eml(workdir):
    text = nurture(workdir, "templates", "preview", "risks-side-effects", "--format", "text").stdout
    assert "988" in text and "Hi Alex" in text
    meant = one_line_error(nurture(workdir, "templates", "preview", "welcome", check=False), 1)
    assert "no email with the key 'welcome'" in meant and "did you mean welcome-history?" in meant
    eml = nurture(workdir, "templates", "preview", "welcome-history", "--format", "eml").stdout
    assert "List-Unsubscribe:" in eml and "Content-Type: multipart/alternative" in eml


def test_broadcast_commands_end_to_end(workdir):
    nurture(workdir, "db", "upgrade")
    assert nurture(workdir, "broadcast", "list").stdout.strip() == \
        "no broadcasts yet (`nurture broadcast create KEY` makes one)"
    for name in ("ann", "bob"):
        confirmed(session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}")), f"{name}@example.com",
                  T0 - timedelta(days=30))
    # cy had the welcome an hour ago: one marketing email a day, so the newsletter waits for their next day.
    from nurture.db import transaction
    from nurture.models import OutboxMessage, OutboxState
    sessions = session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}"))
    cy = confirmed(sessions, "cy@example.com", T0 - timedelta(hours=1))
    with transaction(sessions) as session:
        session.add(OutboxMessage(subscriber_id=cy, key="seq:nurture:welcome-history", template="t",
                                  state=OutboxState.sent, due_at=T0 - timedelta(hours=1), attempts=1, unknowns=0,
                                  created_at=T0 - timedelta(hours=1), sent_at=T0 - timedelta(hours=1)))
    created = nurture(workdir, "broadcast", "create", "2026-12-winter", "--audience", "all",
                      "--at", (T0 + timedelta(days=1)).isoformat(), "--now", T0.isoformat()).stdout
    assert "to 3 people" in created
    assert "scheduled" in nurture(workdir, "broadcast", "list").stdout
    sent = nurture(workdir, "broadcast", "send", "1", "--now", T0.isoformat()).stdout
    assert "sent 2," in sent
    assert "1 deferred to tomorrow 09:00 their local time: they had a sequence email today" in sent
    assert "sent 0," in nurture(workdir, "broadcast", "send", "1", "--now", T0.isoformat()).stdout
    assert len(mailbox.Maildir(workdir / "outbox")) == 2
    assert "cancelled" in nurture(workdir, "broadcast", "cancel", "1").stdout


def test_stats_table_and_json_agree_with_the_database(workdir):
    import json

    nurture(workdir, "db", "upgrade")
    sessions = session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}"))
    for name in ("ann", "bob", "cat"):
        confirmed(sessions, f"{name}@example.com", T0)
    nurture(workdir, "send-due", "--now", T0.isoformat())
    data = json.loads(nurture(workdir, "stats", "--json").stdout)
    assert (data["signups"], data["confirmed"]) == (3, 3)
    assert [s["sent"] for s in data["steps"]] == [3, 0, 0, 0, 0]  # the four and the reminder
    table = nurture(workdir, "stats").stdout
    assert "signups 3 · confirmed 3 (100.0%)" in table and "welcome-history" in table
    one_line_error(nurture(workdir, "stats", "--since", "last week", check=False), 1)


def test_subscriber_import_export_erase_commands(workdir):
    import json

    nurture(workdir, "db", "upgrade")
    (workdir / "people.csv").write_text("email,first_name,timezone,consent\nann@example.com,Ann,Europe/Paris,yes\n"
                                        "broken,Bob,,yes\n")
    first = nurture(workdir, "subscribers", "import", "people.csv")
    assert "line 3: broken:" in first.stderr and "1 new" in first.stdout
    assert "0 new" in nurture(workdir, "subscribers", "import", "people.csv").stdout
    assert "ann@example.com" in nurture(workdir, "subscribers", "export").stdout
    personal = json.loads(nurture(workdir, "subscribers", "export-personal", "ann@example.com").stdout)
    assert personal["consent"][0]["kind"] == "signup"
    assert "erased" in nurture(workdir, "subscribers", "erase", "ann@example.com").stdout
    one_line_error(nurture(workdir, "subscribers", "erase", "ann@example.com", check=False), 1)
    one_line_error(nurture(workdir, "subscribers", "import", "missing.csv", check=False), 1)
    one_line_error(nurture(workdir, "subscribers", "export-personal", "nobody@example.com", check=False), 1)


def test_bounces_ingest_command(workdir):
    nurture(workdir, "db", "upgrade")
    sessions = session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}"))
    confirmed(sessions, "no.such.person@gmail.com", T0)
    nurture(workdir, "send-due", "--now", T0.isoformat())
    # A bounce counts only when it names a Message-ID we sent: the welcome's, read from the outbox.
    sent = mailbox.Maildir(workdir / "outbox", create=False)
    [ours] = [sent.get_message(key)["Message-ID"] for key in sent.keys()
              if "no.such.person@gmail.com" in sent.get_message(key)["To"]]
    fixture = (TEMPLATES.parent.parent / "tests" / "fixtures" / "bounces" / "gmail_hard_511.eml").read_bytes()
    returned = mailbox.Maildir(workdir / "returned", create=True)
    for own_id, original in ((b"<b1@example.com>", ours.encode()), (b"<b2@example.com>", b"<none@example.com>")):
        returned.add(fixture.replace(b"@@MESSAGE_ID@@", original).replace(b"@@BOUNCE_ID@@", own_id)
                     .replace(b"@@DATE@@", b"Tue, 01 Dec 2026 15:30:00 +0000"))
    summary = nurture(workdir, "bounces", "ingest", "returned").stdout
    assert "hard 1" in summary and "unverified 1" in summary, summary
    story = nurture(workdir, "explain", "no.such.person@gmail.com").stdout
    assert "bounced" in story
    one_line_error(nurture(workdir, "bounces", "ingest", "no-such-folder", check=False), 1)
    one_line_error(nurture(workdir, "bounces", "ingest", check=False), 1)


def test_send_due_with_a_broken_template_keeps_its_mail_and_says_so_loudly(workdir):
    broken = workdir / "emails"
    shutil.copytree(TEMPLATES, broken)
    step = broken / "nurture" / "10-welcome-history.html.j2"
    step.write_text(step.read_text(encoding="utf-8").replace("<p>Hi {{ first_name }},</p>",
                                                             "<p>Hi {{ first_name }}, {{ 1 / 0 }}</p>"),
                    encoding="utf-8")
    nurture(workdir, "db", "upgrade")
    engine = make_engine(f"sqlite:///{workdir / 'subscribers.db'}")
    confirmed(session_factory(engine), "ann@example.com", T0)
    done = nurture(workdir, "send-due", "--now", T0.isoformat(), env={"NURTURE_TEMPLATES_DIR": str(broken)},
                   check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "sent 0, retried 1" in done.stdout  # kept for a later attempt, not lost
    [banner] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "1 template(s) could not be rendered" in banner and "10-welcome-history.html.j2" in banner
    story = nurture(workdir, "explain", "ann@example.com", "--now", T0.isoformat()).stdout
    assert "render error" in story and "ZeroDivisionError" in story


def test_a_broken_template_holds_its_own_mail_loudly_and_resumes_when_fixed(workdir):
    """{{ frist_name }} saved into the welcome: its messages wait (the confirmation of a new
    signup still goes), send-due exits 1 naming file:line relative to the templates folder, and
    once the file is fixed the held messages go at their next attempt."""
    templates = workdir / "emails"
    shutil.copytree(TEMPLATES, templates)
    welcome = templates / "nurture" / "10-welcome-history.html.j2"
    good = welcome.read_text()
    welcome.write_text(good.replace("{{ first_name }}", "{{ frist_name }}"))
    env = {"NURTURE_TEMPLATES_DIR": str(templates)}
    nurture(workdir, "db", "upgrade", env=env)
    sessions = session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}"))
    confirmed(sessions, "ann@example.com", T0)
    from nurture.db import transaction
    from nurture.people import subscribers
    from nurture.people.validation import Signup

    from factories import REQUEST
    with transaction(sessions) as session:  # someone else, still to confirm: another template
        subscribers.subscribe(session, Signup("bo@example.com", None, "America/Chicago", None, False), now=T0,
                              request=REQUEST, default_timezone="America/Chicago", confirmations_per_day=3)

    broken = nurture(workdir, "send-due", "--now", T0.isoformat(), env=env, check=False)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    error = broken.stderr.strip().splitlines()[-1]  # after the sender's log line for the row
    assert error.startswith("error: 1 template(s) could not be rendered")
    assert "nurture/10-welcome-history.html.j2:10: 'frist_name' is undefined" in error
    assert str(templates) not in error  # relative, as an editor names it
    assert "sent 1, retried 1," in broken.stdout  # the confirmation went; the welcome waits
    assert "as of Tue 01 Dec 2026 09:00 CST (2026-12-01 15:00 UTC)" in broken.stdout

    story = nurture(workdir, "explain", "ann@example.com", "--now", T0.isoformat(), env=env).stdout
    assert "render error: nurture/10-welcome-history.html.j2:10:" in story and str(templates) not in story

    welcome.write_text(good)
    later = (T0 + timedelta(hours=1)).isoformat()  # past the first retry (15 min +-20%)
    fixed = nurture(workdir, "send-due", "--now", later, env=env)
    assert "sent 1, retried 0," in fixed.stdout
    assert len(mailbox.Maildir(workdir / "outbox")) == 2


def test_now_may_be_relative_and_a_naive_now_is_said_to_be_utc(workdir):
    nurture(workdir, "db", "upgrade")
    naive = nurture(workdir, "send-due", "--now", "2026-12-03T09:05")
    assert "--now 2026-12-03T09:05 has no time zone: read as UTC" in naive.stderr
    assert "as of Thu 03 Dec 2026 03:05 CST (2026-12-03 09:05 UTC)" in naive.stdout
    relative = nurture(workdir, "send-due", "--now", "+2 days 09:05")
    day = datetime.now(timezone.utc).astimezone(ZoneInfo("America/Chicago")).date() + timedelta(days=2)
    assert f"as of {day:%a %d %b %Y} 09:05 C" in relative.stdout
    assert "not a time" in one_line_error(nurture(workdir, "send-due", "--now", "+2 fortnights", check=False), 1)


def test_outbox_last_prints_the_newest_message_decoded_and_its_links_whole(workdir):
    assert "no message in" in one_line_error(nurture(workdir, "outbox", "last", check=False), 1)
    nurture(workdir, "db", "upgrade")
    sessions = session_factory(make_engine(f"sqlite:///{workdir / 'subscribers.db'}"))
    from nurture.db import transaction
    from nurture.people import subscribers
    from nurture.people.validation import Signup

    from factories import REQUEST
    with transaction(sessions) as session:
        subscribers.subscribe(session, Signup("bo@example.com", "Bo", "America/Chicago", None, False), now=T0,
                              request=REQUEST, default_timezone="America/Chicago", confirmations_per_day=3)
    nurture(workdir, "send-due", "--now", T0.isoformat())
    shown = nurture(workdir, "outbox", "last").stdout
    assert "To: bo@example.com" in shown and "Subject: " in shown
    # Decoded, not quoted-printable: no =3D, no soft line break (a line ending in "=" that is not a rule).
    assert "=3D" not in shown and not [l for l in shown.splitlines() if l.endswith("=") and l.strip("=")]
    links = nurture(workdir, "outbox", "last", "--links", "--save", "confirm.eml").stdout.split()
    confirm = [url for url in links if "/confirm/" in url]
    assert len(confirm) == 1 and confirm[0].startswith("http://127.0.0.1:8000/confirm/")
    raw = (workdir / "confirm.eml").read_bytes()
    assert raw.startswith(b"") and b"Subject:" in raw and b"Message-ID:" in raw
    # The link is the one the app accepts: it opens the confirmation page, not a 404.
    from fastapi.testclient import TestClient

    from nurture.runtime import Runtime
    from nurture.web import create_app

    from conftest import make_settings
    runtime = Runtime(make_settings(workdir, f"sqlite:///{workdir / 'subscribers.db'}"))
    try:
        with TestClient(create_app(runtime, dispatch=False)) as client:
            assert client.get(confirm[0].removeprefix("http://127.0.0.1:8000")).status_code == 200
    finally:
        runtime.close()
