"""Whether the configured SMTP server takes our connection: connect, EHLO, STARTTLS when the URL
asks for it, AUTH with the configured credentials, QUIT. No message is sent."""

from __future__ import annotations

import smtplib
import ssl

from nurture.sending.mail_dns import Finding, Level
from nurture.sending.transports import SmtpConfig


def probe_smtp(smtp_url: str, timeout: float) -> Finding:
    """One finding for the server at ``smtp_url``: the first step that failed, or every step taken."""
    c = SmtpConfig.from_url(smtp_url, timeout)
    name = f"SMTP {c.host}:{c.port}"
    steps: list[str] = []
    step = "connect"
    conn: smtplib.SMTP | None = None
    try:
        if c.implicit_tls:
            conn = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=ssl.create_default_context())
            steps.append("TLS")
        else:
            conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        step = "EHLO"
        code, _ = conn.ehlo()
        if code != 250:
            return Finding(name, Level.error, f"EHLO answered {code}: the server does not speak ESMTP to us")
        steps.append("EHLO")
        if c.starttls:
            step = "STARTTLS"
            conn.starttls(context=ssl.create_default_context())
            conn.ehlo()
            steps.append("STARTTLS")
        elif not c.implicit_tls and conn.has_extn("starttls"):
            steps.append("STARTTLS offered but not used (add ?starttls=1 to NURTURE_SMTP_URL)")
        if c.username:
            step = "AUTH"
            conn.login(c.username, c.password or "")
            steps.append(f"AUTH as {c.username}")
        step = "QUIT"
        conn.quit()
        conn = None
    except smtplib.SMTPAuthenticationError as exc:
        return Finding(name, Level.error, f"AUTH as {c.username} refused ({exc.smtp_code} {_text(exc.smtp_error)}): "
                                          "check the user and password in NURTURE_SMTP_URL")
    except smtplib.SMTPNotSupportedError as exc:
        return Finding(name, Level.error, f"{step} not offered by the server ({exc}): check NURTURE_SMTP_URL's "
                                          "port and options")
    except (OSError, smtplib.SMTPException) as exc:
        return Finding(name, Level.error, f"{step} failed: {_text(exc) or type(exc).__name__} (is the relay running, "
                                          "and NURTURE_SMTP_URL's host and port right?)")
    finally:
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
    level = Level.warning if any("not used" in s for s in steps) else Level.ok
    return Finding(name, level, ", ".join(steps) + "; no message sent")


def _text(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())[:200]
