"""Commands that look after an installation: backups of the database, and the doctor that checks
configuration, database, mail server and the sending domain's DNS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nurture.cli.common import Fail, app, console, out, safe_url, settings
from nurture.cli.operate import db_app


@db_app.command("backup")
def db_backup(
    file: Annotated[Path, typer.Argument(help="where to write the backup (a SQLite file)")],
    force: Annotated[bool, typer.Option("--force", help="replace FILE if it exists")] = False,
) -> None:
    """Copy the SQLite database to FILE while nurture keeps running (on PostgreSQL: how to pg_dump)."""
    from nurture.backups import BackupError, backup_sqlite, pg_dump_command, sqlite_path

    s = settings()
    try:
        database = sqlite_path(s.database_url)
        if database is None:
            raise Fail("nurture does not copy a PostgreSQL database itself; back it up with: "
                       f"{pg_dump_command(s.database_url, str(file))} (give the password for *** through "
                       "PGPASSWORD or ~/.pgpass)")
        done = backup_sqlite(database, file, force=force)
    except BackupError as exc:
        raise Fail(str(exc)) from None
    console.print(f"backed up {safe_url(s.database_url)} to {done.path} ({done.size / 1e6:,.1f} MB in "
                  f"{done.seconds:.1f} s); `nurture db restore {done.path}` puts it back", highlight=False)


@db_app.command("restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="a backup made by `nurture db backup`")],
    force: Annotated[bool, typer.Option("--force", help="replace the database even while a process has it "
                                                        "open (those processes must then be restarted)")] = False,
) -> None:
    """Replace the SQLite database with the backup FILE (stop nurture first)."""
    from nurture.backups import BackupError, pg_restore_command, restore_sqlite, sqlite_path

    s = settings()
    try:
        database = sqlite_path(s.database_url)
        if database is None:
            raise Fail("restore works on SQLite only; put a pg_dump file back into PostgreSQL with: "
                       f"{pg_restore_command(s.database_url, str(file))}")
        done = restore_sqlite(file, database, force=force)
    except BackupError as exc:
        raise Fail(str(exc)) from None
    console.print(f"restored {file} into {done.path} (schema {done.revision})", highlight=False)
    if done.forced:
        console.print("the database was in use: restart every nurture process now (they still write to the "
                      "old file)", highlight=False)
    if done.needs_upgrade:
        console.print(f"this version needs schema {done.head}: run `nurture db upgrade`", highlight=False)


@app.command()
def doctor(
    dns_server: Annotated[Optional[str], typer.Option(
        "--dns-server", metavar="HOST[:PORT]", help="ask this DNS server instead of the system's resolvers")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="skip the mail server and DNS checks")] = False,
) -> None:
    """Check configuration, database, mail server and the sending domain's DNS (SPF, DKIM, DMARC, MX)."""
    from nurture.config import ConfigError
    from nurture.sending.doctor import Level, config_error_finding, run_checks
    from nurture.sending.mail_dns import parse_nameserver

    try:
        nameserver = parse_nameserver(dns_server) if dns_server else None
    except ValueError as exc:
        raise Fail(f"--dns-server: {exc}") from None
    try:
        results = run_checks(settings(), nameserver=nameserver, network=not offline)
    except ConfigError as exc:  # nothing else can be checked without a configuration
        results = [config_error_finding(exc)]
    marks = {Level.ok: "[green]ok     [/]", Level.warning: "[yellow]warning[/]", Level.error: "[red]error  [/]"}
    for result in results:
        out.print(f"{marks[result.level]} {result.name}: {result.detail}", highlight=False)
    errors = sum(r.level is Level.error for r in results)
    warnings = sum(r.level is Level.warning for r in results)
    out.print(f"{errors} error(s), {warnings} warning(s)", highlight=False)
    if errors:
        raise typer.Exit(1)
