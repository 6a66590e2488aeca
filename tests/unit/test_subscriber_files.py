"""Reading an import file: whole-file errors, per-row reasons with line numbers, options."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest

from nurture.people.subscriber_files import CsvImportError, ImportReport, RejectedRow, import_csv, parse_rows

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


def parse(text: str):
    return parse_rows(text, "people.csv")


def refused(data: bytes | str, **options) -> str:
    """The message of a whole-file refusal; no database is needed to get there."""
    with pytest.raises(CsvImportError) as info:
        import_csv(None, io.BytesIO(data.encode() if isinstance(data, str) else data), now=NOW,
                   default_timezone="America/Chicago", **options)
    return str(info.value)


def test_good_rows_are_read_with_the_signup_form_rules():
    rows, rejected = parse(
        "email,first_name,timezone,consent\n"
        " Ana@Example.COM ,Ana,Europe/Lisbon,yes\n"
        "bo@example.com,,,TRUE\n"
        "cy@example.com, Cy ,,1\n"
    )
    assert rejected == []
    assert [(r.line, r.signup.email, r.signup.first_name, r.signup.timezone) for r in rows] == [
        (2, "ana@example.com", "Ana", "Europe/Lisbon"),
        (3, "bo@example.com", None, None),
        (4, "cy@example.com", "Cy", None),
    ]


def test_each_bad_row_is_reported_with_its_line_and_why():
    text = (
        "email,first_name,timezone,consent\r\n"
        "not-an-address,Ann,,yes\r\n"  # 2
        'eve@example.com,"Eve\r\nBcc: x@example.com",,yes\r\n'  # 3-4: a quoted line break
        "no@example.com,No,,\r\n"  # 5
        "said-no@example.com,,,no\r\n"  # 6
        "zone@example.com,,Mars/Olympus,yes\r\n"  # 7
        "ok@example.com,Ok,,yes\r\n"  # 8
        "OK@example.com,Again,,yes\r\n"  # 9
        f"long@example.com,{'n' * 101},,yes\r\n"  # 10
        "maybe@example.com,,,maybe\r\n"  # 11
        "short@example.com,Short\r\n"  # 12
    )
    rows, rejected = parse(text)
    assert [r.signup.email for r in rows] == ["ok@example.com"]
    assert [(r.line, r.email) for r in rejected] == [
        (2, "not-an-address"), (3, "eve@example.com"), (5, "no@example.com"), (6, "said-no@example.com"),
        (7, "zone@example.com"), (9, "OK@example.com"), (10, "long@example.com"), (11, "maybe@example.com"),
        (12, "short@example.com"),
    ]
    reasons = {r.line: r.reason for r in rejected}
    assert "look like an email address" in reasons[2]
    assert "line break" in reasons[3]
    assert reasons[5] == "no consent: the consent column is empty"
    assert reasons[6] == "no consent: the consent column says 'no'"
    assert "IANA" in reasons[7]
    assert reasons[9] == "duplicate of line 8"
    assert "longer than 100" in reasons[10]
    assert "not 'maybe'" in reasons[11]
    assert reasons[12] == "has 2 values; the header has 4 columns"


def test_bom_crlf_blank_lines_column_order_and_header_case_are_tolerated():
    text = "\ufeffConsent, EMAIL \r\n\r\nyes,a@example.com\r\n,\r\n1,b@example.com,,\r\n"
    rows, rejected = parse(text)
    assert rejected == [] and [(r.line, r.signup.email) for r in rows] == [(3, "a@example.com"), (5, "b@example.com")]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("email,first_name,phone,consent\nx@example.com,,1,yes\n",
         "Unknown column(s) in upload.csv: 'phone'. The columns are: email, first_name, timezone, consent."),
        ("email;first_name;consent\nx@example.com;;yes\n", "separated by something other than commas"),
        ("x@example.com,yes\n", "looks like data"),
        ("email,first_name\nx@example.com,X\n", "Missing column(s) in upload.csv: consent."),
        ("email,email,consent\n", "Column(s) named twice in upload.csv: email."),
        ("", "upload.csv is empty"),
        ("\n\n", "upload.csv is empty"),
        ('email,consent\n"x@example.com,yes\n', "not valid CSV at line"),
        (b"email,consent\nj\xe9r\xf4me@example.com,yes\n", "not UTF-8 text (line 2"),
        ("email,consent\n".encode("utf-16"), "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
        (b"PK\x03\x04\x14\x00\x00\x00", "not a CSV file"),
    ],
)
def test_a_bad_file_is_one_clear_error(data, expected):
    assert expected in refused(data)


def test_a_path_that_cannot_be_read_is_one_clear_error(tmp_path):
    with pytest.raises(CsvImportError, match="Cannot read"):
        import_csv(None, tmp_path / "missing.csv", now=NOW, default_timezone="UTC")


def test_confirmed_needs_a_consent_source_and_the_source_needs_confirmed():
    good = "email,consent\nx@example.com,yes\n"
    assert "--confirmed needs --consent-source" in refused(good, confirmed=True)
    assert "--confirmed needs --consent-source" in refused(good, confirmed=True, consent_source="  ")
    assert "limited to 57 characters" in refused(good, confirmed=True, consent_source="x" * 58)
    assert "one line" in refused(good, confirmed=True, consent_source="paper\nform")
    assert "goes with --confirmed" in refused(good, consent_source="paper form")


def test_the_summary_is_one_line():
    report = ImportReport(created=2, existing=1, suppressed=1, rejected=[RejectedRow(3, "x", "why")])
    assert report.summary() == (
        "Imported 2 new (pending, confirmation emails queued), 1 already subscribed, 1 suppressed "
        "(unsubscribed, bounced, complained or erased: not re-added), 1 rejected."
    )
    dry = ImportReport(created=2, dry_run=True, confirmed=True)
    assert dry.summary().startswith("Dry run, nothing written; would import 2 new (confirmed)")
    assert "\n" not in dry.summary()
