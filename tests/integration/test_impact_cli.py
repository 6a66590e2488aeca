"""`nurture templates impact` and `nurture explain` as a user runs them (a process of their own),
over the hand-counted population of tests/impact_population.py, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import select

from nurture.models import OutboxMessage, OutboxState, Subscriber

from conftest import SECRET
from impact_population import NOW, build_population, checksum, edit


def nurture(tmp_path, database_url, templates, *args):
    environ = {**os.environ, "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(templates),
               "NURTURE_DATABASE_URL": database_url, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "nurture", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_templates_impact_and_explain_from_the_command_line(tmp_path, database_url):
    rt, templates = build_population(tmp_path, database_url)
    try:
        how = templates / "nurture" / "20-how-it-may-work.html.j2"
        edit(how, 'subject: "Part 2: how it may work"', 'subject: "Part 2: how it may help"')
        before = checksum(rt)
        done = nurture(tmp_path, database_url, templates, "templates", "impact", "--now", NOW.isoformat())
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "publishing the templates on disk: 2 changed, 2 unchanged"
        assert "- step `how-it-may-work` changed (subject): 6 people will receive the new version over the next " \
               "2 days, first tomorrow" in lines
        as_json = json.loads(nurture(tmp_path, database_url, templates, "templates", "impact", "--json",
                                     "--now", NOW.isoformat()).stdout)
        how_step = next(s for s in as_json["steps"] if s["key"] == "how-it-may-work")
        assert (how_step["kind"], how_step["parts"], how_step["people"], how_step["sent_to"]) == \
            ("changed", ["subject"], 6, 10)
        assert checksum(rt) == before, "the command wrote to the database"

        with rt.sessions() as session:
            email, digest = session.execute(
                select(Subscriber.email, OutboxMessage.template_version).join(OutboxMessage)
                .where(OutboxMessage.key == "seq:nurture:how-it-may-work", OutboxMessage.state == OutboxState.sent)
                .limit(1)).one()
        told = nurture(tmp_path, database_url, templates, "explain", email, "--now", NOW.isoformat())
        assert told.returncode == 0, told.stderr
        assert f"version {digest[:10]}" in told.stdout

        wrong = nurture(tmp_path, database_url, templates, "templates", "impact", "--now", "next tuesday")
        assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr
        assert wrong.stderr.startswith("error: --now: not a time")
    finally:
        rt.close()
