"""The migrations build exactly the schema models.py describes, on SQLite and PostgreSQL.

A model changed without its migration (or the other way round) would pass every test that
builds tables from the migrations yet fail on a database created by an older release, or the
other way round; alembic's own comparison catches both.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from nurture.models import Base


def _differences(database_url: str) -> list:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_models_schema(database_url):
    assert _differences(database_url) == []
