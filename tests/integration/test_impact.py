"""The impact preview against a hand-counted population, on SQLite and PostgreSQL.

Nineteen people reach every stage of the sequence through real sending passes (every three hours
from 28 November to 9 December, so each time zone's send window is met each day), on a copy of the
shipped templates. Then marketing edits the copy, and the preview must say, for each step, what
a reader would see change, how many people get the version on disk, and the first and last
day, as counted by hand below from the planner's rules (delays 0, 2, 5, 8 days; 09:00 local;
one email a day). It must also write nothing.

Who is where at NOW (Wednesday 9 December, 12:00 in Chicago), confirmed at 09:00 Chicago unless said:
- finished (3): confirmed 28 Nov; had all four steps.
- invite next (2): confirmed 3 Dec; had welcome, how, risks (8 Dec); invite on Fri 11 Dec.
- after how (4 Chicago + 1 Tokyo): confirmed 6 Dec (Tokyo: 00:00 on 7 Dec, its local day); had
  welcome, how; risks on 11 Dec (Tokyo: 12 Dec 09:00 JST = Fri 11 Dec in Chicago); invite 14 Dec.
- welcome only (3 Chicago + 1 Auckland): confirmed 8 Dec (Auckland: 04:00 on 9 Dec); how on
  Thu 10 Dec, risks 13 Dec, invite 16 Dec (Auckland's local days are a day ahead: the same
  Chicago dates, in the evening).
- today (2): confirmed 9 Dec; had the welcome; how 11 Dec, risks 14 Dec, invite 17 Dec.
- left (2): confirmed 6 Dec, unsubscribed 7 Dec: had the welcome only. Pending (1): never confirmed.
"""

from __future__ import annotations

import shutil
from datetime import date

from sqlalchemy import func, select, update

from nurture.db import transaction
from nurture.feedback.impact import CHANGED, INVISIBLE, NEW, REMOVED, UNCHANGED, UNKEPT, preview_impact
from nurture.feedback.impact_words import headline, sentence
from nurture.feedback.timeline import build_timeline
from nurture.models import OutboxMessage, OutboxState, Subscriber, TemplateVersion
from nurture.runtime import Runtime
from nurture.sending.journey import Planner

from conftest import TEMPLATES
from impact_population import CHICAGO, NOW, build_population, checksum, chicago_day, edit


def impact_now(rt: Runtime):
    with rt.sessions() as session:
        return preview_impact(session, renderer=rt.renderer, planner=Planner.from_settings(rt.settings), now=NOW)


def test_edits_are_reported_per_step_with_who_gets_the_new_version_and_when(tmp_path, database_url):
    rt, templates = build_population(tmp_path, database_url)
    try:
        sent = {(k.rsplit(":", 1)[-1]): n for k, n in _sent_counts(rt).items()}
        assert sent == {"welcome-history": 18, "how-it-may-work": 10, "risks-side-effects": 5,
                        "consultation-invite": 3}, "the population is not what the hand count assumes"
        before = impact_now(rt)
        assert [(s.key, s.kind) for s in before.steps] == [
            ("welcome-history", UNCHANGED), ("how-it-may-work", UNCHANGED), ("risks-side-effects", UNCHANGED),
            ("consultation-invite", UNCHANGED)]
        assert headline(before).startswith("nothing a reader would see has changed")

        # Marketing edits step 2's subject and body, and only the whitespace and a comment of step 3.
        how = templates / "nurture" / "20-how-it-may-work.html.j2"
        edit(how, 'subject: "Part 2: how it may work"', 'subject: "Part 2: how it may help"')
        edit(how, "{% block body %}", "{% block body %}\n<p>One new paragraph, written today.</p>")
        risks = templates / "nurture" / "30-risks-side-effects.html.j2"
        edit(risks, "{% block body %}", "{% block body %}\n{# reviewed by the medical team #}\n\n   ")
        rows_before = checksum(rt)
        impact = impact_now(rt)
        assert checksum(rt) == rows_before, "the preview wrote to the database"

        steps = {s.key: s for s in impact.steps}
        how_step = steps["how-it-may-work"]
        assert (how_step.kind, how_step.parts) == (CHANGED, ("subject", "body"))
        # welcome-only 3 + Auckland 1 (Thu 10 Dec) + today 2 (Fri 11 Dec).
        assert (how_step.people, how_step.sent_to) == (6, 10)
        assert (chicago_day(how_step.first), chicago_day(how_step.last)) == (date(2026, 12, 10), date(2026, 12, 11))
        # The welcome's closing line names step 2's subject: what its readers get changed too.
        assert (steps["welcome-history"].kind, steps["welcome-history"].parts, steps["welcome-history"].people) == \
            (CHANGED, ("body",), 0)
        risks_step = steps["risks-side-effects"]
        assert risks_step.kind == INVISIBLE
        # after-how 5 (11 Dec) + welcome-only 4 (13 Dec) + today 2 (14 Dec).
        assert (risks_step.people, chicago_day(risks_step.first), chicago_day(risks_step.last)) == \
            (11, date(2026, 12, 11), date(2026, 12, 14))
        invite = steps["consultation-invite"]
        assert invite.kind == UNCHANGED
        # invite-next 2 (11 Dec) + after-how 5 (14 Dec) + welcome-only 4 (16 Dec) + today 2 (17 Dec).
        assert (invite.people, invite.sent_to, chicago_day(invite.first), chicago_day(invite.last)) == \
            (13, 3, date(2026, 12, 11), date(2026, 12, 17))

        words = {s.key: sentence(s, impact, CHICAGO) for s in impact.steps}
        assert words["how-it-may-work"] == ("step `how-it-may-work` changed (subject and body): 6 people will "
                                            "receive the new version over the next 2 days, first tomorrow")
        assert words["risks-side-effects"].startswith("step `risks-side-effects`: no visible change")
        assert words["risks-side-effects"].endswith("11 people will get it over the next 5 days, "
                                                    "first on Friday 11 December")
        assert words["consultation-invite"].startswith(
            f"step `consultation-invite` unchanged (version {invite.last_version}, sent to 3 people): "
            "13 more people will get it over the next 8 days, first on Friday 11 December")
        assert headline(impact) == "publishing the templates on disk: 2 changed, 1 no visible change, 1 unchanged"
    finally:
        rt.close()


def test_a_new_step_and_a_removed_step(tmp_path, database_url):
    rt, templates = build_population(tmp_path, database_url)
    try:
        steps_dir = templates / "nurture"
        how = (steps_dir / "20-how-it-may-work.html.j2").read_text(encoding="utf-8")
        (steps_dir / "15-what-to-expect.html.j2").write_text(
            how.replace("key: how-it-may-work", "key: what-to-expect").replace("delay_days: 2", "delay_days: 1"),
            encoding="utf-8")
        (steps_dir / "30-risks-side-effects.html.j2").unlink()
        rows_before = checksum(rt)
        impact = impact_now(rt)
        assert checksum(rt) == rows_before, "the preview wrote to the database"
        steps = {s.key: s for s in impact.steps}
        assert [s.key for s in impact.steps] == ["welcome-history", "what-to-expect", "how-it-may-work",
                                                 "consultation-invite", "risks-side-effects"]

        new = steps["what-to-expect"]
        assert (new.kind, new.last_version, new.sent_to) == (NEW, None, 0)
        # Not past its place (only the welcome had): welcome-only 3 (due now: their day after the
        # welcome has come) + Auckland 1 (10 Dec 09:00 NZDT, 9 Dec in Chicago) + today 2 (Thu 10 Dec).
        assert (new.people, chicago_day(new.first), chicago_day(new.last)) == (6, date(2026, 12, 9), date(2026, 12, 10))
        assert sentence(new, impact, CHICAGO) == ("new step `what-to-expect`, not sent to anyone yet: 6 people have "
                                                  "not passed its place and will get it today and tomorrow")

        removed = steps["risks-side-effects"]
        assert (removed.kind, removed.sent_to) == (REMOVED, 5)
        # Everyone still in the series who had not had it: after-how 5 + welcome-only 4 + today 2.
        assert removed.people == 11
        assert sentence(removed, impact, CHICAGO) == ("removed step `risks-side-effects` (sent to 5 people): "
                                                      "11 people will no longer get it")
        # "Email 2 of 4" is now "of 4" with other steps: the others changed for their readers.
        assert steps["how-it-may-work"].kind == CHANGED
    finally:
        rt.close()


def test_explain_names_the_version_a_person_received(tmp_path, database_url):
    rt, templates = build_population(tmp_path, database_url)
    try:
        with rt.sessions() as session:
            row = session.scalars(select(OutboxMessage).where(
                OutboxMessage.key == "seq:nurture:how-it-may-work", OutboxMessage.state == OutboxState.sent)
                .order_by(OutboxMessage.id)).first()
            kept = session.get(TemplateVersion, (row.template, row.template_version))
            assert kept is not None and "nurture/20-how-it-may-work.html.j2" in kept.sources
            assert session.scalar(select(func.count()).select_from(TemplateVersion)) == 4  # one per step
            person = session.get(Subscriber, row.subscriber_id).email
            timeline = build_timeline(session, person, now=NOW, planner=Planner.from_settings(rt.settings),
                                      secret=rt.settings.secret, from_header=rt.settings.mail_from)
        entry = next(e for e in timeline.entries if e.what.startswith("seq:nurture:how-it-may-work"))
        assert f"version {row.template_version[:10]}" in entry.detail
        # Rows sent before versions were kept (null after the migration) cannot be compared: said so.
        with transaction(rt.sessions) as session:
            session.execute(update(OutboxMessage).where(OutboxMessage.key == "seq:nurture:consultation-invite")
                            .values(template_version=None))
        invite = next(s for s in impact_now(rt).steps if s.key == "consultation-invite")
        assert (invite.kind, invite.sent_to, invite.people) == (UNKEPT, 3, 13)
    finally:
        rt.close()


def _sent_counts(rt: Runtime) -> dict[str, int]:
    with rt.sessions() as session:
        return dict(session.execute(select(OutboxMessage.key, func.count()).where(
            OutboxMessage.state == OutboxState.sent, OutboxMessage.key.startswith("seq:")).group_by(OutboxMessage.key)).all())


def test_the_shipped_reminder_is_previewed_as_a_step_with_a_condition(tmp_path, database_url):
    rt, templates = build_population(tmp_path, database_url)  # the four numbered steps, sent by hand count
    try:
        shutil.copy(TEMPLATES / "nurture" / "45-invite-reminder.html.j2", templates / "nurture")
        impact = impact_now(rt)
        reminder = {s.key: s for s in impact.steps}["invite-reminder"]
        assert reminder.kind == NEW and reminder.sent_to == 0
        assert reminder.condition == "skip_if: clicked:consultation, only_if: not_clicked:consultation-invite"
        # Everyone still in the series passes its place: finished 3 (due now, if nothing was clicked)
        # + invite-next 2 + after-how 5 + welcome-only 4 + today 2; the condition decides later.
        assert reminder.people == 16
        words = sentence(reminder, impact, CHICAGO)
        assert words.endswith("(at most: it goes only to those its condition `skip_if: clicked:consultation, "
                              "only_if: not_clicked:consultation-invite` lets through when it falls due)")
    finally:
        rt.close()
