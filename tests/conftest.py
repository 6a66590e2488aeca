"""Shared fixtures: real SQLite files, the real PostgreSQL server, a real aiosmtpd server.

PostgreSQL tests use a fresh schema each, so they run against the shared `test` database without
stepping on each other. Where NURTURE_REQUIRE_POSTGRES=1 (CI), a missing server fails the test
instead of skipping it.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text

from nurture.config import load_settings
from nurture.migrate import upgrade
from nurture.runtime import Runtime
from nurture.sending.transports import MemoryTransport

sys.path.insert(0, str(Path(__file__).parent))  # tests/smtpd.py, tests/browser helpers

# Property tests count examples, not seconds: on a busy 2-core CI machine generation can be slow,
# and that says nothing about the code under test. A test's own @settings that names
# suppress_health_check replaces this list rather than adding to it, so such a test spreads
# ``*settings.default.suppress_health_check`` into its own (a cold run once failed too_slow).
hypothesis_settings.register_profile("nurture", deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.load_profile("nurture")

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates" / "emails"
POSTGRES_URL = os.environ.get("NURTURE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "test-secret-key-not-for-production"


def _postgres_or_skip() -> None:
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("NURTURE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here and unreachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL} (set NURTURE_REQUIRE_POSTGRES=1 to fail instead)")


@pytest.fixture
def postgres_url():
    """A migrated, empty schema of its own in the PostgreSQL `test` database."""
    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request):
    """Both databases: the test runs once on a SQLite file, once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def make_settings(tmp_path: Path, database_url: str, **overrides: str):
    environ = {
        "NURTURE_DATABASE_URL": database_url,
        "NURTURE_SECRET_KEY": SECRET,
        "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
        "NURTURE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NURTURE_BASE_URL": "http://127.0.0.1:8000",
        **{f"NURTURE_{k.upper()}": v for k, v in overrides.items()},
    }
    return load_settings(environ)


@pytest.fixture
def settings(tmp_path, database_url):
    return make_settings(tmp_path, database_url)


@pytest.fixture
def memory_transport():
    return MemoryTransport()


@pytest.fixture
def runtime(settings, memory_transport):
    rt = Runtime(settings, transport_override=memory_transport)
    yield rt
    rt.close()


@pytest.fixture
def sqlite_runtime(tmp_path, sqlite_url):
    """A runtime on a SQLite file only, with an in-memory transport: for unit tests of one module."""
    rt = Runtime(make_settings(tmp_path, sqlite_url), transport_override=MemoryTransport())
    yield rt
    rt.close()


@pytest.fixture
def smtp_server():
    """A real aiosmtpd server on loopback; ``smtp_server.handler`` holds what it received."""
    from smtp_sink import SmtpServer

    with SmtpServer() as server:
        yield server
