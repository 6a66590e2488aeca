"""The floor for the signup endpoint: what FastAPI itself costs for one signup.

    python bench/signup_floor.py --port 8001 --database floor.db [--handler async|sync]

A bare FastAPI app on the framework versions nurture uses: a pydantic model whose address is
checked by email-validator (as nurture's is), and one INSERT into a SQLite file in WAL mode with
synchronous=NORMAL (nurture's pragmas), committed before the 202. Served by uvicorn with the
options `nurture serve` passes (one worker, the same loop and HTTP implementation: uvicorn's
defaults, no access log, no proxy headers). ``bench_signup.py`` runs it beside `nurture serve`
under the same wrk load; nothing else uses it.

``--handler async`` (the default, the faster of the two on this machine) inserts on the event
loop through one connection; ``sync`` is a plain handler in the thread pool, a connection per
thread, as nurture's handlers run.
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
from datetime import datetime, timezone

import uvicorn
from email_validator import EmailNotValidError, validate_email
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA = """CREATE TABLE IF NOT EXISTS signups (
    id INTEGER PRIMARY KEY, email VARCHAR(254) NOT NULL UNIQUE, first_name VARCHAR(100),
    timezone VARCHAR(64), created_at TEXT NOT NULL)"""
INSERT = "INSERT INTO signups (email, first_name, timezone, created_at) VALUES (?, ?, ?, ?)"


class Signup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=254)
    first_name: str | None = Field(default=None, max_length=100)
    timezone: str | None = Field(default=None, max_length=64)
    consent: bool

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return validate_email(value, check_deliverability=False, allow_smtputf8=True).normalized.lower()
        except EmailNotValidError as exc:
            raise ValueError(str(exc)) from None


def connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


def create_floor(path: str, *, handler: str = "async") -> FastAPI:
    connect(path).execute(SCHEMA)
    app = FastAPI(docs_url=None, redoc_url=None)
    accepted = {"status": "accepted", "message": "Check your inbox for an email to confirm your subscription."}

    def insert(connection: sqlite3.Connection, signup: Signup) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(INSERT, (signup.email, signup.first_name, signup.timezone,
                                        datetime.now(timezone.utc).isoformat()))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    if handler == "async":
        shared = connect(path)

        @app.post("/subscribe", status_code=202)
        async def subscribe_async(signup: Signup):
            insert(shared, signup)
            return JSONResponse(accepted, status_code=202)
    else:
        local = threading.local()
        # Writers queue on a Python lock rather than in SQLite's busy handler (which sleeps in
        # growing steps): what nurture's db.py does too, and much the faster of the two here.
        writing = threading.Lock()

        @app.post("/subscribe", status_code=202)
        def subscribe_sync(signup: Signup):
            if not hasattr(local, "connection"):
                local.connection = connect(path)
            with writing:
                insert(local.connection, signup)
            return JSONResponse(accepted, status_code=202)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--handler", choices=("async", "sync"), default="async")
    args = parser.parse_args()
    # The options of `nurture serve` (src/nurture/cli/operate.py), nothing more.
    uvicorn.run(create_floor(args.database, handler=args.handler), host=args.host, port=args.port,
                log_level="warning", access_log=False, proxy_headers=False)


if __name__ == "__main__":
    main()
