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

from nurture.content.rendering import Rendered
from nurture.sending.messages import Dkim, HeaderInjection, build_message, message_id

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


# --- streams, bulk-sender headers, DKIM oversigning (issue 11) -----------------------------------

from nurture.sending.messages import campaign, make_streams  # noqa: E402

STREAMS = make_streams(from_header="Clinic Care <care@clinic.example>", list_name="Clinic", sequence="nurture")


def stream_build(key, *, streams=STREAMS, **kwargs):
    stream = streams.for_key(key)
    return build(from_header=stream.from_header, list_id=stream.list_id,
                 unsubscribe_url=UNSUB if stream.list_id else None, unsubscribe_mailbox=stream.unsubscribe_mailbox,
                 extra_headers=stream.message_headers(key), **kwargs)


def test_list_unsubscribe_offers_the_https_url_and_a_mailto_carrying_the_same_token():
    data = stream_build("seq:nurture:welcome")
    message = email.message_from_bytes(data, policy=policy.default)
    assert message["List-Unsubscribe"] == (f"<{UNSUB}>, <mailto:care@clinic.example?subject=unsubscribe%20abc.def>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Folded at its space, so no line is long enough for a parser to refold it.
    assert all(len(line) <= 78 for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"))


def test_each_stream_has_its_own_list_id_and_feedback_id_and_the_confirmation_neither():
    sequence, newsletter, confirm = (email.message_from_bytes(stream_build(key), policy=policy.default)
                                     for key in ("seq:nurture:welcome", "bcast:12", "sys:confirm:1"))
    assert sequence["List-Id"] == "Clinic <nurture.clinic.example>"
    assert newsletter["List-Id"] == "Clinic newsletter <newsletter.clinic.example>"
    assert sequence["Feedback-ID"] == "nurture.welcome:sequence:clinic.example"
    assert newsletter["Feedback-ID"] == "newsletter.12:newsletter:clinic.example"
    assert sequence["Auto-Submitted"] is None and newsletter["Auto-Submitted"] is None
    assert confirm["Auto-Submitted"] == "auto-generated"
    assert confirm["List-Id"] is None and confirm["Feedback-ID"] is None and confirm["List-Unsubscribe"] is None
    assert campaign("seq:nurture:how-it-works") == "nurture.how-it-works"


def test_transactional_mail_may_have_its_own_from_and_return_path():
    streams = make_streams(from_header="Clinic Care <care@clinic.example>", list_name="Clinic", sequence="nurture",
                           transactional_from="Clinic <confirm@clinic.example>",
                           transactional_return_path="bounces@clinic.example")
    assert streams.for_key("sys:confirm:2").from_header == "Clinic <confirm@clinic.example>"
    assert streams.for_key("sys:confirm:2").return_path == "bounces@clinic.example"
    assert streams.for_key("seq:nurture:x").return_path == "care@clinic.example"
    assert STREAMS.for_key("sys:confirm:1").return_path == "care@clinic.example"  # by default: the From


def test_a_non_ascii_clinic_name_is_encoded_in_list_id_but_the_id_is_not():
    streams = make_streams(from_header="care@clinic.example", list_name="Clínica Zoë", sequence="nurture")
    data = stream_build("seq:nurture:welcome", streams=streams)
    assert data.isascii()
    assert email.message_from_bytes(data, policy=policy.default)["List-Id"] == "Clínica Zoë <nurture.clinic.example>"


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key_file), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key_file), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name, timeout=5):
        assert name == b"s2026._domainkey.clinic.example."
        return record

    return Dkim.from_file(key_file, "s2026", "clinic.example"), dns


def _h_tag(data: bytes) -> list[str]:
    header = email.message_from_bytes(data, policy=policy.default)["DKIM-Signature"]
    return [h.strip().lower() for h in re.search(r"h=([^;]+)", re.sub(r"\s+", "", header)).group(1).split(":")]


def test_dkim_oversigns_from_subject_and_both_list_unsubscribe_headers(signing):
    signer, dns = signing
    signed = _h_tag(stream_build("seq:nurture:welcome", dkim=signer))
    for name in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post"):
        assert signed.count(name) == 2, name  # present once, named twice
    assert {"feedback-id", "list-id", "to", "date", "message-id"} <= set(signed)
    confirm = _h_tag(stream_build("sys:confirm:1", dkim=signer))
    assert confirm.count("list-unsubscribe") == 1  # absent, named once: none can be added
    assert "auto-submitted" in confirm and "reply-to" not in confirm and "cc" not in confirm


def test_dkim_signs_and_oversigns_reply_to_and_cc_when_present(signing):
    signer, dns = signing
    data = stream_build("seq:nurture:welcome", dkim=signer)
    data = build(extra_headers={"Reply-To": "Front desk <desk@clinic.example>", "Cc": "records@clinic.example"},
                 dkim=signer)
    signed = _h_tag(data)
    assert signed.count("reply-to") == 2 and signed.count("cc") == 2
    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data.replace(b"desk@clinic.example", b"desk@evil.example"), dnsfunc=dns)


@pytest.mark.parametrize("key", ["seq:nurture:welcome", "bcast:12", "sys:confirm:1"])
def test_dkim_verifies_as_sent_and_after_a_parse_and_reserialise(signing, key):
    signer, dns = signing
    rendered = Rendered(subject="Zoë’s note about a rather long subject line that needs encoding and folding",
                        html="<p>" + "é" * 500 + "</p>", text="ü" * 500, preheader="")
    data = stream_build(key, rendered=rendered, dkim=signer)
    assert dkim.verify(data, dnsfunc=dns)
    for flavour in (policy.default, policy.SMTP, policy.compat32):
        again = email.message_from_bytes(data, policy=flavour).as_bytes(policy=policy.SMTP)
        assert dkim.verify(again, dnsfunc=dns), flavour


@pytest.mark.parametrize("header", [b"From: Evil <boss@evil.example>\r\n", b"Subject: Urgent: pay now\r\n",
                                    b"List-Unsubscribe: <https://evil.example/x>\r\n"])
def test_a_prepended_second_copy_of_an_oversigned_header_breaks_the_signature(signing, header):
    signer, dns = signing
    data = stream_build("seq:nurture:welcome", dkim=signer)
    signature_end = data.index(b"\r\nFrom: ") + 2  # after the DKIM-Signature, before our headers
    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data[:signature_end] + header + data[signature_end:], dnsfunc=dns)
