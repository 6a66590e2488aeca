import pytest

from nurture.config import ConfigError, load_settings, parse_rate, parse_window


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
