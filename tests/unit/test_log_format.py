"""Log lines: JSON one object a line, text for people, and in both no full address or password
at INFO and above."""

from __future__ import annotations

import io
import json
import logging

import pytest

from nurture.log_format import JsonFormatter, TextFormatter, configure, in_pass, mask


@pytest.mark.parametrize("given, shown", [
    ("550 5.1.1 <zoë@bücher.example>: no such user", "550 5.1.1 <z***@bücher.example>: no such user"),
    ("to ann.lee+news@example.com, bo@mail.example.org", "to a***@example.com, b***@mail.example.org"),
    ("smtp://care:hunter2@relay.example:587?starttls=1", "smtp://care:***@relay.example:587?starttls=1"),
    ("imaps://bounces:p%40ss@imap.example/INBOX", "imaps://bounces:***@imap.example/INBOX"),
    ("outbox row 12 failed: timed out", "outbox row 12 failed: timed out"),
])
def test_mask_keeps_the_first_character_and_the_domain_and_drops_passwords(given, shown):
    assert mask(given) == shown


def record(level: int, message: str, *args, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("nurture.sending.sender", level, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_json_line_has_time_level_logger_event_and_the_ids_given_with_extra():
    line = json.loads(JsonFormatter().format(record(logging.WARNING, "row %s to %s refused", 7, "zoë@bücher.example",
                                                    outbox_id=7, subscriber_id=3)))
    assert line["level"] == "WARNING" and line["logger"] == "nurture.sending.sender"
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    assert line["event"] == "row 7 to z***@bücher.example refused"
    assert line["outbox_id"] == 7 and line["subscriber_id"] == 3
    assert "zoë@" not in json.dumps(line, ensure_ascii=False)


def test_an_extra_field_holding_an_address_is_masked_too():
    line = json.loads(JsonFormatter().format(record(logging.INFO, "hello", recipient="ann@example.com")))
    assert line["recipient"] == "a***@example.com"


def test_every_line_of_a_pass_carries_its_id():
    with in_pass("abc123"):
        inside = json.loads(JsonFormatter().format(record(logging.INFO, "sent")))
    outside = json.loads(JsonFormatter().format(record(logging.INFO, "sent")))
    assert inside["pass_id"] == "abc123" and "pass_id" not in outside


def test_debug_lines_keep_the_address_for_the_person_at_the_machine():
    assert "ann@example.com" in TextFormatter().format(record(logging.DEBUG, "render %s", "ann@example.com"))
    text = TextFormatter().format(record(logging.ERROR, "render %s", "ann@example.com"))
    assert "ann@example.com" not in text and "a***@example.com" in text and " ERROR nurture.sending.sender: " in text


def test_a_traceback_stays_in_the_json_object_masked():
    try:
        raise ValueError("bad address ann@example.com")
    except ValueError:
        rec = logging.LogRecord("nurture", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info())
    line = json.loads(JsonFormatter().format(rec))
    assert "Traceback" in line["event"] and "a***@example.com" in line["event"] and "ann@" not in line["event"]


def test_configure_installs_one_handler_and_routes_uvicorn_through_it(monkeypatch):
    root = logging.getLogger()
    before = list(root.handlers), root.level
    # As an earlier server in the same process may leave it (uvicorn sets its own logger's level).
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "level", logging.WARNING)
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "disabled", True)
    try:
        configure("INFO", "json")
        configure("INFO", "json")  # again: replaced, not doubled
        ours = [h for h in root.handlers if getattr(h, "_nurture", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        stream = io.StringIO()
        ours[0].setStream(stream)
        logging.getLogger("uvicorn.error").info("Started server process")
        assert json.loads(stream.getvalue())["logger"] == "uvicorn.error"
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_nurture", False)]:
            root.removeHandler(handler)
        root.handlers[:] = before[0]
        root.setLevel(before[1])
