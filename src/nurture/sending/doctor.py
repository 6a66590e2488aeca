"""``nurture doctor``: is this installation ready to send mail that lands?

Checks, each one finding (ok, warning or error, with what to do): the configuration as production
needs it, the database reachable and at this code's schema, the SMTP server taking our connection
and credentials, and the DNS of the domains our mail names: SPF for each envelope (bounce)
domain, the DKIM key published for our selector, DMARC for each From domain, MX for the bounce
domains. It sends nothing and changes nothing.
"""

from __future__ import annotations

from email.utils import parseaddr

from nurture import config
from nurture.config import ConfigError, Settings
from nurture.sending.mail_dns import (
    DnsFailure,
    DnsLookup,
    Finding,
    Level,
    check_dkim,
    check_dmarc,
    check_mx,
    check_spf,
)
from nurture.sending.messages import sender_domain

__all__ = ["Finding", "Level", "run_checks", "config_findings", "database_finding", "dns_findings"]


def run_checks(settings: Settings, *, nameserver: tuple[str, int] | None = None, network: bool = True) -> list[Finding]:
    """Every check, in the order a person fixes things: configuration, database, mail server, DNS.
    ``network=False`` skips the mail server and DNS."""
    findings = [*config_findings(settings), database_finding(settings.database_url)]
    if network:
        findings.append(smtp_finding(settings))
        findings += dns_findings(settings, DnsLookup(nameserver))
    return findings


def config_findings(settings: Settings) -> list[Finding]:
    """What load_settings enforces only in production, reported here in any environment."""
    problems = _production_problems(settings)
    if settings.is_dev:
        env = Finding("environment", Level.warning, "NURTURE_ENV=dev: set NURTURE_ENV=production on the server"
                      + (f" (then: {'; '.join(problems)})" if problems else ""))
    else:
        env = Finding("environment", Level.ok, f"production, base URL {settings.base_url}, secret key of "
                                               f"{len(settings.secret.encode())} bytes")
    name, address = parseaddr(settings.mail_from)
    findings = [env, Finding("From", Level.ok, f"{address}" + (f", shown as {name!r}" if name else ""))]
    if settings.dkim_key_file is not None:
        findings.append(_dkim_key_finding(settings))
    return findings


def _production_problems(settings: Settings) -> list[str]:
    """What config's production checks would refuse (they run at start only in production)."""
    problems = []
    for check, value in ((config._check_production_secret, settings.secret_key),
                         (config._check_production_base_url, settings.base_url)):
        try:
            check(value)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _dkim_key_finding(settings: Settings) -> Finding:
    path = settings.dkim_key_file
    try:
        key = path.read_bytes()
    except OSError as exc:
        return Finding("DKIM key", Level.error, f"NURTURE_DKIM_KEY_FILE {path}: {exc.strerror}")
    if b"PRIVATE KEY" not in key:
        return Finding("DKIM key", Level.error, f"NURTURE_DKIM_KEY_FILE {path} is not a PEM private key")
    domain, from_domain = _dkim_domain(settings), sender_domain(settings.mail_from)
    if from_domain != domain and not from_domain.endswith("." + domain):
        return Finding("DKIM key", Level.warning, f"signing as {domain}, but From is at {from_domain}: DMARC needs "
                                                  "them aligned (set NURTURE_DKIM_DOMAIN to the From domain)")
    return Finding("DKIM key", Level.ok, f"{path}, selector {_dkim_selector(settings)}, domain {domain}")


def database_finding(database_url: str) -> Finding:
    """The database answers and is at this code's schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from nurture.db import make_engine
    from nurture.migrate import revisions
    from nurture.setting_values import redact_url

    where = redact_url(database_url)
    from nurture.backups import BackupError, sqlite_path

    try:
        path = sqlite_path(database_url)
    except BackupError:  # in memory: nothing to look for on disk
        path = None
    if path is not None and not path.is_file():  # connecting would create an empty file
        return Finding("database", Level.error, f"no database file at {path}: run `nurture db upgrade`")
    engine = make_engine(database_url)
    try:
        current, head = revisions(engine)
    except SQLAlchemyError as exc:
        first = (str(exc.orig if hasattr(exc, "orig") else exc).strip().splitlines() or [""])[0][:200]
        return Finding("database", Level.error, f"{where} cannot be reached: {first}")
    finally:
        engine.dispose()
    if current is None:
        return Finding("database", Level.error, f"{where} has no tables: run `nurture db upgrade`")
    if current != head:
        return Finding("database", Level.error, f"{where} is at schema {current}, this version needs {head}: "
                                                "run `nurture db upgrade` (or, if the database is newer, this "
                                                "nurture is older than the one that migrated it)")
    return Finding("database", Level.ok, f"{where}, schema {current}")


def smtp_finding(settings: Settings) -> Finding:
    from nurture.sending.smtp_probe import probe_smtp

    if not settings.smtp_url:
        return Finding("SMTP", Level.warning, f"no NURTURE_SMTP_URL: mail goes to the Maildir {settings.outbox_dir} "
                                              "and leaves nowhere")
    return probe_smtp(settings.smtp_url, min(settings.smtp_timeout, 10.0))


def dns_findings(settings: Settings, lookup: DnsLookup) -> list[Finding]:
    """SPF and MX for each envelope domain, DMARC for each From domain, DKIM for the selector."""
    froms = _unique(sender_domain(a) for a in (settings.mail_from, settings.transactional_from) if a)
    bounces = _unique(sender_domain(a) for a in (settings.mail_from, settings.transactional_return_path
                                                 or settings.transactional_from) if a)
    checks = [*(lambda d=d: check_spf(lookup, d) for d in bounces),
              *(lambda d=d: check_dmarc(lookup, d) for d in froms),
              *(lambda d=d: check_mx(lookup, d) for d in bounces)]
    if settings.dkim_key_file is not None and settings.dkim_key_file.is_file():
        selector, domain, key = _dkim_selector(settings), _dkim_domain(settings), settings.dkim_key_file.read_bytes()
        checks.insert(len(bounces), lambda: check_dkim(lookup, selector, domain, key))
    findings = []
    for check in checks:
        try:
            findings.append(check())
        except DnsFailure as exc:  # the next lookups would wait just as long: one line says it
            findings.append(Finding("DNS", Level.error, f"{exc}: DNS checks stopped (is the resolver reachable?)"))
            break
    if settings.dkim_key_file is None:
        findings.append(Finding("DKIM", Level.warning, "no NURTURE_DKIM_KEY_FILE: mail goes out unsigned, and "
                                                       "Gmail and Yahoo ask bulk senders to sign"))
    return findings


def _dkim_selector(settings: Settings) -> str:
    return settings.dkim_selector or "nurture"  # as runtime.mail_settings signs


def _dkim_domain(settings: Settings) -> str:
    return settings.dkim_domain or sender_domain(settings.mail_from)


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))


def config_error_finding(error: ConfigError) -> Finding:
    """A configuration load_settings refused, as the doctor's one finding."""
    return Finding("configuration", Level.error, str(error))
