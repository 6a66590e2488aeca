"""Each value parser on its own: the normal form back, or a ValueError that says the expected shape."""

from __future__ import annotations

import pytest

from nurture.setting_values import (
    checked_domain,
    comma_list,
    feedback_sender,
    ip_or_network,
    mailbox,
    optional_url,
    parse_rate,
    parse_window,
    redact_url,
)


def test_domains_are_idna_lower_case_with_two_labels() -> None:
    assert checked_domain("Bücher.Example.") == "xn--bcher-kva.example"
    assert checked_domain("localhost") is None
    assert checked_domain("-bad.example") is None


def test_feedback_senders_are_domains_or_addresses() -> None:
    assert feedback_sender(" FBL.Example.NET ") == "fbl.example.net"
    assert feedback_sender("Feedback@fbl.example.net") == "feedback@fbl.example.net"
    with pytest.raises(ValueError, match="not a domain or an address"):
        feedback_sender("x y@fbl.example.net")


def test_proxies_are_addresses_or_networks() -> None:
    assert ip_or_network("10.0.0.0/8") == "10.0.0.0/8"
    assert ip_or_network("2001:db8::1") == "2001:db8::1"
    with pytest.raises(ValueError, match="not an IP address or network"):
        ip_or_network("10.0.0.1/8")  # host bits set: a typo, not a network


def test_comma_lists_skip_blanks_and_check_each_item() -> None:
    assert comma_list("a.example, ,b.example", feedback_sender, "shape") == ("a.example", "b.example")
    assert comma_list(["192.0.2.7"], ip_or_network, "shape") == ("192.0.2.7",)
    with pytest.raises(ValueError, match="shape"):
        comma_list(7, ip_or_network, "shape")


def test_optional_urls() -> None:
    assert optional_url("", ("https",), "shape") is None and optional_url(None, ("https",), "shape") is None
    assert optional_url("imaps://mail.example", ("imap", "imaps"), "shape") == "imaps://mail.example"
    with pytest.raises(ValueError, match="shape"):
        optional_url("https://", ("https",), "shape")


@pytest.mark.parametrize("bad", ["9-17", "17:00-09:00", "09:00-24:01", "09:60-10:00"])
def test_bad_windows(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_window(bad)


def test_windows_and_rates() -> None:
    assert parse_window(" 00:00 - 24:00 ") == (0, 1440)
    assert parse_rate("5/second") == (5, 1.0) and parse_rate("100/hour") == (100, 3600.0)
    for bad in ("0/minute", "5/day", "five/minute"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_mailbox_normal_forms_and_refusals() -> None:
    assert mailbox("Care@Bücher.example") == "Care@xn--bcher-kva.example"
    assert mailbox('"Clinic, Madison" <care@clinic.example>') == '"Clinic, Madison" <care@clinic.example>'
    assert mailbox("Zoë's Clinic <care@clinic.example>") == "Zoë's Clinic <care@clinic.example>"
    for bad, why in [("a@x.example, b@x.example", "one address"), ("Clinic, Madison <care@clinic.example>", "one address"), ("zoë@clinic.example", "ASCII"),
                     ("care@localhost", "domain"), ("care@x.example\r\nBcc: y", "one line")]:
        with pytest.raises(ValueError, match=why):
            mailbox(bad)


def test_redaction_hides_only_the_password() -> None:
    assert redact_url("smtp://user:p@ss/w#rd@relay.example:587") == "smtp://user:***@relay.example:587"
    assert redact_url("smtp://token@relay.example") == "smtp://***@relay.example"
    assert redact_url("sqlite:///subscribers.db") == "sqlite:///subscribers.db"
