import pytest

from nurture.config import ConfigError, load_settings
from nurture.setting_values import parse_rate, parse_window


def test_defaults_are_embedded_and_work_for_development(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert "development key" in caplog.text
    assert settings.database_url == "sqlite:///subscribers.db"
    assert settings.smtp_url is None and str(settings.outbox_dir) == "outbox"
    assert (tmp_path / ".nurture-dev-secret").exists()
    assert load_settings({}).secret == settings.secret  # the same key on the next start


def test_injected_mapping_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("NURTURE_PORT", "9999")
    assert load_settings({"NURTURE_SECRET_KEY": "k"}).port == 8000


def test_from_maps_to_mail_from():
    assert load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_FROM": "A <a@b.example>"}).mail_from == "A <a@b.example>"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NURTURE_TIMEZONE", "Mars/Olympus"),
        ("NURTURE_PORT", "eighty"),
        ("NURTURE_BASE_URL", "ftp://x"),
        ("NURTURE_SMTP_URL", "http://mail.example"),
        ("NURTURE_SEND_WINDOW", "17:00-09:00"),
        ("NURTURE_SUBSCRIBE_RATE", "lots"),
        ("NURTURE_RESEND_UNKNOWN", "maybe"),
        ("NURTURE_DATABASE_URL", "mysql://x"),
        ("NURTURE_ENV", "staging"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({"NURTURE_SECRET_KEY": "k", name: value})
    message = str(info.value)
    assert message.startswith(name + ":") and "\n" not in message


def test_production_requires_a_secret_key():
    with pytest.raises(ConfigError, match="NURTURE_SECRET_KEY"):
        load_settings({"NURTURE_ENV": "production"})


def test_window_and_rate_parsing():
    assert parse_window("09:00-17:00") == (540, 1020)
    assert parse_rate("20/minute") == (20, 60.0)


def test_missing_templates_are_one_clear_line(tmp_path):
    settings = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_TEMPLATES_DIR": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="^NURTURE_TEMPLATES_DIR: no email templates at"):
        settings.require_templates()


LONG_SECRET = "k" * 32


@pytest.mark.parametrize("secret", ["", "   ", "short", "k" * 31, "é" * 15])
def test_production_refuses_a_secret_key_under_32_bytes(secret):
    # Anyone who can guess the key can forge confirm and unsubscribe links.
    with pytest.raises(ConfigError) as info:
        load_settings({"NURTURE_ENV": "production", "NURTURE_SECRET_KEY": secret})
    message = str(info.value)
    assert message.startswith("NURTURE_SECRET_KEY:") and "32 bytes" in message and "\n" not in message
    assert secret.strip() == "" or secret not in message


def test_production_accepts_a_long_random_secret_and_dev_is_unchanged():
    production = {"NURTURE_ENV": "production", "NURTURE_SECRET_KEY": LONG_SECRET, "NURTURE_BASE_URL": "https://mail.clinic.example"}
    assert load_settings(production).secret == LONG_SECRET
    assert load_settings({"NURTURE_SECRET_KEY": "k"}).secret == "k"  # development keeps short test keys


@pytest.mark.parametrize(
    ("name", "value", "password"),
    [
        ("NURTURE_DATABASE_URL", "mysql://clinic:hunter2-db@db.example/nurture", "hunter2-db"),
        ("NURTURE_SMTP_URL", "http://mailer:hunter2-smtp@mail.example:587", "hunter2-smtp"),
        ("NURTURE_SMTP_URL", "smtq://mailer:p@ss/w#rd?@mail.example", "p@ss/w#rd?"),
        ("NURTURE_SMTP_URL", "smtp://mailer:hunter2[@[::1", "hunter2["),
        ("NURTURE_BOUNCE_IMAP_URL", "http://bounces:hunter2-imap@imap.example/INBOX", "hunter2-imap"),
        ("NURTURE_BASE_URL", "ftp://admin:hunter2-base@clinic.example", "hunter2-base"),
        ("NURTURE_WEBSITE_URL", "gopher://token-only-hunter2@clinic.example", "token-only-hunter2"),
    ],
)
def test_config_errors_never_show_a_password_from_a_url(name, value, password):
    with pytest.raises(ConfigError) as info:
        load_settings({"NURTURE_SECRET_KEY": "k", name: value})
    message = str(info.value)
    assert message.startswith(name + ":") and "\n" not in message
    assert password not in message and "***" in message


def test_a_redacted_url_still_says_where_it_points():
    with pytest.raises(ConfigError) as info:
        load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_SMTP_URL": "http://mailer:secret@mail.example:587"})
    assert "'http://mailer:***@mail.example:587'" in str(info.value)


def test_a_bad_admin_password_value_is_never_echoed():
    with pytest.raises(ConfigError) as info:
        load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_ADMIN_PASSWORD": "hunter2\x00", "NURTURE_PORT": "x"})
    assert "hunter2" not in str(info.value)


def test_the_imap_url_must_be_imap():
    assert load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_BOUNCE_IMAP_URL": "imaps://u:p@imap.example/INBOX"}
                         ).bounce_imap_url == "imaps://u:p@imap.example/INBOX"


def test_trusted_proxies_are_addresses_or_networks():
    assert load_settings({"NURTURE_SECRET_KEY": "k"}).trusted_proxies == ()
    settings = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.7 ,::1,"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.7", "::1")
    for bad in ("*", "proxy.example", "10.0.0.1/8", "300.1.1.1"):
        with pytest.raises(ConfigError) as info:
            load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_TRUSTED_PROXIES": bad})
        assert str(info.value).startswith("NURTURE_TRUSTED_PROXIES:")


# --- NURTURE_FROM and the other mail addresses (issue 11) ---------------------------------------

@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("Clinic <care@clinic.example>", "Clinic <care@clinic.example>"),
        ("care@clinic.example", "care@clinic.example"),
        ('"Zoë, Madison" <care@clinic.example>', '"Zoë, Madison" <care@clinic.example>'),
        ("Zoë Clinic <care@bücher.example>", "Zoë Clinic <care@xn--bcher-kva.example>"),  # IDNA once, here
        ("Dr. Zoë <care@clinic.example>", '"Dr. Zoë" <care@clinic.example>'),  # a special in the name: quoted
    ],
)
def test_from_is_parsed_at_start_into_a_form_every_message_can_encode(given, kept):
    import email
    from datetime import datetime, timezone
    from email import policy

    from nurture.content.rendering import Rendered
    from nurture.sending.messages import build_message

    settings = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_FROM": given})
    assert settings.mail_from == kept
    data = build_message(Rendered("Hi", "<p>x</p>", "x", ""), from_header=settings.mail_from, to="a@example.com",
                         message_id="<1.a@clinic.example>", date=datetime(2026, 12, 1, tzinfo=timezone.utc),
                         unsubscribe_url=None, list_id=None)
    assert data.isascii()  # a non-ASCII name goes out RFC 2047-encoded
    parsed = email.message_from_bytes(data, policy=policy.default)["From"]
    assert (parsed.addresses[0].display_name, parsed.addresses[0].addr_spec) == email.utils.parseaddr(kept)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Zoë, Madison <care@clinic.example>", "double quotes"),  # the unquoted comma of issue 11
        ("a@clinic.example, b@clinic.example", "one address"),
        ("zoë@clinic.example", "ASCII"),
        ("Clinic <care@localhost>", "domain"),
        ("Clinic", "address"),
        ("Clinic <care@clinic.example>\r\nBcc: x@evil.example", "one line"),
    ],
)
def test_a_from_that_cannot_be_sent_is_one_line_at_start(value, says):
    for name in ("NURTURE_FROM", "NURTURE_TRANSACTIONAL_FROM"):
        with pytest.raises(ConfigError) as info:
            load_settings({"NURTURE_SECRET_KEY": "k", name: value})
        message = str(info.value)
        assert message.startswith(f"{name}:") and says in message and "\n" not in message


def test_the_transactional_return_path_is_a_bare_address():
    settings = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_TRANSACTIONAL_FROM": "Clinic <confirm@clinic.example>",
                              "NURTURE_TRANSACTIONAL_RETURN_PATH": "bounces@clinic.example"})
    assert settings.transactional_from == "Clinic <confirm@clinic.example>"
    assert settings.transactional_return_path == "bounces@clinic.example"
    with pytest.raises(ConfigError, match="^NURTURE_TRANSACTIONAL_RETURN_PATH: must be a bare address"):
        load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_TRANSACTIONAL_RETURN_PATH": "Bounces <b@clinic.example>"})
    unset = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_TRANSACTIONAL_FROM": ""})
    assert unset.transactional_from is None and unset.transactional_return_path is None


@pytest.mark.parametrize("base_url", ["http://mail.clinic.example", "http://127.0.0.1:8000"])
def test_production_refuses_a_base_url_that_is_not_https(base_url):
    # RFC 8058: the one-click unsubscribe URL must be HTTPS. "Production" is NURTURE_ENV=production.
    with pytest.raises(ConfigError) as info:
        load_settings({"NURTURE_ENV": "production", "NURTURE_SECRET_KEY": LONG_SECRET, "NURTURE_BASE_URL": base_url})
    message = str(info.value)
    assert message.startswith("NURTURE_BASE_URL:") and "https" in message and "\n" not in message
    assert load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_BASE_URL": base_url}).base_url == base_url  # dev: fine


def test_a_from_domain_is_encoded_as_the_wire_encodes_it_idna_2008_not_python_idna_2003():
    """IDNA 2003 (Python's own codec) turns straße into strasse, another domain; the From must
    name the one the mail really comes from, as addresses.ascii_domain writes it."""
    settings = load_settings({"NURTURE_FROM": "Clinic <care@straße.example>"})
    assert settings.mail_from == "Clinic <care@xn--strae-oqa.example>"
