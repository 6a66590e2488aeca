"""MIME bytes: structure, encodings, RFC 8058 headers, header-injection safety, DKIM."""

from __future__ import annotations

import base64
import email
import re
import subprocess
from datetime import datetime, timezone
from email import policy

import dkim
import pytest

from nurture.messages import Dkim, HeaderInjection, build_message, message_id
from nurture.rendering import Rendered

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
UNSUB = "https://clinic.example/unsubscribe/abc.def"


def build(rendered=None, **kwargs):
    rendered = rendered or Rendered(subject="Where ketamine came from", html="<p>Hello</p>", text="Hello",
                                    preheader="")
    args = dict(from_header="Clinic <care@clinic.example>", to="reader@example.com",
                message_id="<1.abc@clinic.example>", date=NOW, unsubscribe_url=UNSUB,
                list_id="Clinic <nurture.clinic.example>")
    return build_message(rendered, **(args | kwargs))


def test_multipart_alternative_text_first_utf8_quoted_printable_crlf():
    data = build(Rendered(subject="Zoë’s note", html="<p>" + "é" * 2000 + "</p>", text="ü" * 3000, preheader=""))
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    message = email.message_from_bytes(data, policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parts[0].get_content().rstrip() == "ü" * 3000
    assert message["Subject"] == "Zoë’s note"
    assert re.search(rb"^Subject: =\?utf-8\?", data, re.M)  # RFC 2047 on the wire


def test_rfc8058_headers_and_list_id():
    message = email.message_from_bytes(build(), policy=policy.default)
    assert message["List-Unsubscribe"] == f"<{UNSUB}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Clinic <nurture.clinic.example>"
    assert message["Message-ID"] == "<1.abc@clinic.example>"


def test_system_mail_has_no_list_headers():
    message = email.message_from_bytes(build(unsubscribe_url=None, list_id=None), policy=policy.default)
    assert message["List-Unsubscribe"] is None and message["List-Id"] is None


def test_message_id_is_stable_per_row_and_differs_between_rows():
    first = message_id(5, "seq:nurture:welcome", secret="s", domain="clinic.example")
    assert first == message_id(5, "seq:nurture:welcome", secret="s", domain="clinic.example")
    assert first != message_id(6, "seq:nurture:welcome", secret="s", domain="clinic.example")
    assert re.fullmatch(r"<5\.[0-9a-f]{16}@clinic\.example>", first)


@pytest.mark.parametrize(
    "evil",
    ["Bob\r\nBcc: victim@example.com", "Bob\nX-Injected: 1", "=?utf-8?q?Bob=0D=0ABcc=3A_victim=40example.com?="],
)
def test_newlines_in_any_field_never_create_a_header(evil):
    for field in ("subject", "to"):
        if field == "subject":
            attempt = lambda: build(Rendered(subject=evil, html="<p>x</p>", text="x", preheader=""))  # noqa: E731
        else:
            attempt = lambda: build(to=f"{evil}@example.com")  # noqa: E731
        try:
            data = attempt()
        except HeaderInjection:
            continue  # refused outright: fine
        message = email.message_from_bytes(data, policy=policy.default)
        assert message["Bcc"] is None and message["X-Injected"] is None
        assert len(message.get_all("To")) == 1


def test_dkim_signature_covers_both_list_unsubscribe_headers_and_verifies(tmp_path):
    key_file = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key_file), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key_file), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    signer = Dkim.from_file(key_file, "s2026", "clinic.example")
    data = build(dkim=signer)
    header = email.message_from_bytes(data, policy=policy.default)["DKIM-Signature"]
    signed = {h.strip().lower() for h in re.search(r"h=([^;]+)", re.sub(r"\s+", "", header)).group(1).split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject", "message-id"} <= signed

    def dns(name, timeout=5):
        assert name == b"s2026._domainkey.clinic.example."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    tampered = data.replace(UNSUB.encode(), b"https://evil.example/x")
    assert not dkim.verify(tampered, dnsfunc=dns)


def _to_line(data: bytes) -> bytes:
    return data.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0]


def test_an_international_domain_is_written_as_a_labels():
    data = build(to="dora@bücher.example.com")
    assert _to_line(data) == b"dora@xn--bcher-kva.example.com"
    assert data.isascii()  # nothing in the message needs SMTPUTF8


def test_a_utf8_local_part_is_written_as_utf8_never_as_an_encoded_word():
    data = build(to="zoë@bücher.example.com")
    assert _to_line(data) == "zoë@xn--bcher-kva.example.com".encode()  # RFC 6532
    message = email.message_from_bytes(data, policy=policy.SMTPUTF8)
    assert b"=?" not in _to_line(data)
    assert message["Message-ID"] == "<1.abc@clinic.example>"


@pytest.mark.parametrize("to", ["zoë@example.com\r\nBcc: x@evil.example", "=?utf-8?q?a?=@example.com",
                                "a@example.com, b@example.com"])
def test_an_international_address_cannot_smuggle_a_header(to):
    with pytest.raises(HeaderInjection):
        build(to=to)
