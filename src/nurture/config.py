"""Settings from ``NURTURE_*`` environment variables, built once by an entry point and passed in.

Nothing here runs at import time: ``load_settings()`` is called by the CLI and the tests, and a
bad value becomes one :class:`ConfigError` line naming the variable instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import secrets
from email.utils import parseaddr
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from dotenv import dotenv_values
from pydantic_settings import BaseSettings, SettingsConfigDict

from nurture.setting_values import (
    comma_list,
    feedback_sender,
    ip_or_network,
    mailbox,
    optional_url,
    parse_rate,
    parse_window,
    redact_url,
)

PREFIX = "NURTURE_"
# What the consultation email says until the clinic fills in its own facts: true everywhere, no price
# or promise the clinic has not made.
DEFAULT_COST_TEXT = ("Ask us for the current price of a consultation and of a course of treatment; we will give it "
                     "to you in writing before you decide anything.")
DEFAULT_INSURANCE_TEXT = ("Insurance often does not cover ketamine treatment for depression, because that use is "
                          "off-label. Check with your insurer; we can give you the details they ask for.")
DEV_SECRET_FILE = Path(".nurture-dev-secret")
# The sequence new subscribers are put in unless NURTURE_SEQUENCE names another.
DEFAULT_SEQUENCE = "nurture"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True, populate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_other_sources):
        # load_settings() reads the environment (or an injected mapping) itself, so that tests
        # can pass a mapping without the process environment leaking in.
        return (init_settings,)

    env: Literal["dev", "production"] = "dev"
    database_url: str = "sqlite:///subscribers.db"
    base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr | None = None

    # Mail
    smtp_url: str | None = None
    smtp_pool_size: int = Field(4, ge=1, le=64)
    # A large pass may be spread over this many processes (one interpreter caps sending near
    # 1,000/s). One by default: where the relay shares the machine's cores, as in bench_send.py on
    # two cores, a second process takes CPU from the relay and measured no faster.
    send_processes: int = Field(1, ge=1, le=16)
    smtp_timeout: float = Field(30.0, gt=0)
    rate_per_second: float = Field(0.0, ge=0, description="0 means no limit")
    rate_per_hour: int = Field(0, ge=0, description="0 means no limit")
    max_attempts: int = Field(6, ge=1, le=50)
    lease_seconds: float = Field(300.0, ge=1, le=86400, description="how long a claimed message is a worker's own")
    db_patience_seconds: float = Field(60.0, ge=0, le=3600, description="how long a pass waits out a database outage")
    resend_unknown: bool = True
    # The From display name shows on lock screens and in shared inboxes: neutral by default, with no
    # drug, diagnosis or specialty in it, and separate from the clinic's legal name (clinic_name).
    mail_from: str = Field("Clearwater Care Team <care@clearwater-psychiatry.example>", alias="NURTURE_FROM")
    # The confirmation (transactional stream) may come from its own address, and bounce to its own
    # Return-Path; by default it is NURTURE_FROM and that address.
    transactional_from: str | None = None
    transactional_return_path: str | None = None
    outbox_dir: Path = Path("outbox")
    dev_recipient: str | None = None
    dkim_key_file: Path | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None

    bounce_imap_url: str | None = None
    max_bounce_rate: float = Field(0.05, gt=0, le=1, description="pause a run above this share of bounces")
    max_complaint_rate: float = Field(0.003, gt=0, le=1, description="pause sending above this complaint rate")
    # Feedback loops whose reports count without a Message-ID of ours, when DKIM-signed by them.
    trusted_feedback_senders: tuple[str, ...] = ()
    track_clicks: bool = True  # opens are off unless a sequence or broadcast turns them on

    # The clinic
    clinic_name: str = "Clearwater Psychiatry"
    postal_address: str = "200 Lakeview Avenue, Suite 310, Madison, WI 53703, USA"
    clinic_phone: str = "(608) 555-0142"
    website_url: str = "https://clearwater-psychiatry.example"
    consultation_url: str = "https://clearwater-psychiatry.example/consultation"
    # The clinic's own privacy policy, linked from the privacy notice at /privacy when set.
    privacy_policy_url: str | None = None
    timezone: str = "America/Chicago"
    # Practical facts for the consultation email, in the clinic's own words.
    cost_text: str = Field(DEFAULT_COST_TEXT, min_length=1)
    insurance_text: str = Field(DEFAULT_INSURANCE_TEXT, min_length=1)
    consultation_format: Literal["in-person", "telehealth", "either"] = "either"
    # Only a certified Spravato REMS treatment center may give esketamine; the invitation offers it only then.
    esketamine_certified: bool = False
    templates_dir: Path = Path("templates/emails")
    sequence: str = DEFAULT_SEQUENCE

    # Scheduling
    send_window: str = "09:00-17:00"
    send_interval: int = Field(15, ge=1, le=1440, description="minutes between scheduler runs")

    # Web
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    subscribe_rate: str = "20/minute"
    # Reverse proxies whose X-Forwarded-For names the client; from anyone else it is ignored.
    trusted_proxies: tuple[str, ...] = ()
    confirmations_per_day: int = Field(3, ge=1, le=20)
    admin_password: SecretStr | None = None
    # /metrics for a Prometheus scraper that should not hold the admin password (bearer token).
    metrics_token: SecretStr | None = None
    # Shared with the clinic's booking system, which signs POST /hooks/booking with it; unset: that
    # endpoint does not exist (404).
    booking_webhook_secret: SecretStr | None = None
    log_level: str = "INFO"
    # "json": one JSON object per log line, for a log shipper; "text" for people.
    log_format: Literal["text", "json"] = "text"

    @field_validator("base_url", "website_url", "consultation_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://clinic.example")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as America/New_York") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql")):
            raise ValueError("must be sqlite:///file.db or postgresql+psycopg://user@host/db")
        return value

    @field_validator("privacy_policy_url")
    @classmethod
    def _privacy_policy(cls, value: str | None) -> str | None:
        return optional_url(value, ("http", "https"), "must be an http(s) URL such as https://clinic.example/privacy")

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        return optional_url(value, ("smtp", "smtps"),
                             "must look like smtp://user:pass@host:587?starttls=1 or smtps://host:465")

    @field_validator("trusted_feedback_senders", mode="before")
    @classmethod
    def _feedback_senders(cls, value: object) -> tuple[str, ...]:
        """``"fbl.example.net, feedback@arf.mail.yahoo.com"``: lower-case domains (IDNA) or addresses."""
        return comma_list(value, feedback_sender, "must be comma-separated domains or addresses")

    @field_validator("send_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_window(value)
        return value

    @field_validator("subscribe_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("bounce_imap_url")
    @classmethod
    def _imap(cls, value: str | None) -> str | None:
        return optional_url(value, ("imap", "imaps"),
                             "must look like imaps://user:pass@host/INBOX (or imap:// for STARTTLS)")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> tuple[str, ...]:
        """``"10.0.0.0/8, 192.0.2.7"``: addresses or networks (no host names, no ``*``)."""
        return comma_list(value, ip_or_network, "must be IP addresses or networks separated by commas")

    @field_validator("mail_from", "transactional_from")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        return None if value in (None, "") else mailbox(value)

    @field_validator("transactional_return_path")
    @classmethod
    def _return_path(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        name, address = parseaddr(mailbox(value))
        if name:
            raise ValueError("must be a bare address such as bounces@clinic.example, with no display name")
        return address

    @field_validator("secret_key", "metrics_token", "booking_webhook_secret", mode="before")
    @classmethod
    def _blank_secret(cls, value: object) -> object:
        # An empty NURTURE_SECRET_KEY= line means unset, never "sign with the empty key" (nor
        # "any empty bearer token opens /metrics").
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    @property
    def send_window_hours(self) -> tuple[int, int]:
        """The local send window as minutes-since-midnight (start, end)."""
        return parse_window(self.send_window)

    @property
    def subscribe_limit(self) -> tuple[int, float]:
        return parse_rate(self.subscribe_rate)

    @property
    def clinic(self) -> dict[str, str]:
        """The clinic's details as the email templates see them (``clinic.name`` and so on)."""
        return {"name": self.clinic_name, "postal_address": self.postal_address, "phone": self.clinic_phone,
                "website_url": self.website_url, "cost": self.cost_text, "insurance": self.insurance_text,
                "consultation_format": self.consultation_format, "esketamine_certified": self.esketamine_certified}

    def require_templates(self) -> None:
        """Commands that render or plan email need the templates; say so in one line if missing."""
        if not (self.templates_dir / "layout.html.j2").is_file():
            raise ConfigError(
                f"NURTURE_TEMPLATES_DIR: no email templates at {self.templates_dir} "
                "(run from the project folder, or point NURTURE_TEMPLATES_DIR at templates/emails)"
            )

    @property
    def secret(self) -> str:
        assert self.secret_key is not None, "load_settings() always fills secret_key"
        return self.secret_key.get_secret_value()


def load_settings(environ: Mapping[str, str] | None = None, *, env_file: str | None = ".env") -> Settings:
    """Build settings from ``environ`` (default: the process environment and ``.env``).

    Raises ConfigError with one line that names the offending variable.
    """
    if environ is None:
        from_file = dotenv_values(env_file) if env_file and Path(env_file).exists() else {}
        environ = {**{k: v for k, v in from_file.items() if v is not None}, **os.environ}
    values = {key[len(PREFIX):].lower(): val for key, val in environ.items() if key.startswith(PREFIX)}
    if "from" in values:
        values["NURTURE_FROM"] = values.pop("from")
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if not settings.is_dev:
        _check_production_secret(settings.secret_key)
        _check_production_base_url(settings.base_url)
    if settings.secret_key is None:
        settings = settings.model_copy(update={"secret_key": SecretStr(_dev_secret())})
    return settings


MIN_SECRET_BYTES = 32
_MAKE_ONE = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _check_production_secret(secret: SecretStr | None) -> None:
    """Whoever can guess the key can forge confirm, unsubscribe and click links: in production it
    must be long enough not to be guessed."""
    if secret is None:
        raise ConfigError(f"NURTURE_SECRET_KEY: required when NURTURE_ENV=production, at least "
                          f"{MIN_SECRET_BYTES} bytes ({_MAKE_ONE})")
    size = len(secret.get_secret_value().encode())
    if size < MIN_SECRET_BYTES:
        raise ConfigError(f"NURTURE_SECRET_KEY: must be at least {MIN_SECRET_BYTES} bytes when "
                          f"NURTURE_ENV=production, not {size} ({_MAKE_ONE})")


def _check_production_base_url(base_url: str) -> None:
    """The unsubscribe links (and the one-click POST of RFC 8058, which requires HTTPS) go to the
    base URL: in production it must be https."""
    if urlsplit(base_url).scheme != "https":
        raise ConfigError(f"NURTURE_BASE_URL: must be an https:// URL when NURTURE_ENV=production (the one-click "
                          f"unsubscribe of RFC 8058 requires HTTPS), got {redact_url(base_url)!r}")


_SECRET_FIELDS = ("secret", "password", "token")


def _describe(exc: ValidationError) -> str:
    """One line: the variable, what is wrong, and the value given (never a secret or a password,
    including one inside a URL)."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else "?"
    name = field if field.startswith(PREFIX) else PREFIX + field.upper()
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if not isinstance(given, str) or any(word in field.lower() for word in _SECRET_FIELDS):
        return f"{name}: {message}"
    # Any URL may carry a password; an address such as NURTURE_FROM's is shown as it is.
    shown = redact_url(given) if field.lower().endswith("_url") or "://" in given else given
    return f"{name}: {message} (got {shown!r})"


def _dev_secret() -> str:
    """A per-checkout key for development, so tokens survive restarts; never used in production."""
    if DEV_SECRET_FILE.exists():
        return DEV_SECRET_FILE.read_text().strip()
    key = secrets.token_urlsafe(32)
    DEV_SECRET_FILE.write_text(key + "\n")
    DEV_SECRET_FILE.chmod(0o600)
    logging.getLogger("nurture.config").warning(
        "NURTURE_SECRET_KEY is not set: generated a development key in %s (set it in production)", DEV_SECRET_FILE
    )
    return key
