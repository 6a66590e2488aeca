"""Apply the Alembic migrations shipped inside the package (``nurture db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` to ``revision`` (creates a SQLite file if needed)."""
    command.upgrade(alembic_config(database_url), revision)


class SchemaOutOfDate(Exception):
    """The database is not at the schema this version of nurture needs."""


def revisions(engine: Engine) -> tuple[str | None, str]:
    """The database's schema revision (None: no tables yet) and the one this version needs."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False))).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision(), head


def check_current(engine: Engine) -> None:
    """Raise SchemaOutOfDate, saying what to run, unless the database is at the head revision."""
    current, head = revisions(engine)
    if current != head:
        where = "has no tables yet" if current is None else f"is at schema {current}"
        raise SchemaOutOfDate(f"the database {where}; this version needs {head}: run `nurture db upgrade`")
