"""The circuit breaker: sending pauses when too many messages bounce in a run, or too many people
complained lately, to protect the sending domain's reputation. Rates over fewer than
``breaker_min_sample`` messages say nothing."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from nurture.sending.mail_settings import MailSettings
from nurture.sending.pass_summary import CircuitOpen, PassSummary
from nurture.sending.send_store import SendStore

COMPLAINT_WINDOW = timedelta(days=7)


def check_bounces(summary: PassSummary, settings: MailSettings) -> None:
    """Raises CircuitOpen when this run's bounce rate is over the limit."""
    attempted = summary.attempted
    if attempted >= settings.breaker_min_sample and summary.bounced / attempted > settings.max_bounce_rate:
        raise CircuitOpen(
            f"paused: {summary.bounced} of {attempted} messages in this run bounced "
            f"({summary.bounced / attempted:.1%}, limit {settings.max_bounce_rate:.1%}); "
            "check where these addresses came from, then run again"
        )


def complaint_rate(store: SendStore, now: datetime, settings: MailSettings) -> tuple[int, int]:
    """(complainers, sends) over the last week. Without a complaint there is nothing to judge;
    with some, the sends are counted only as far as the verdict needs, so the check costs the
    same on any list size."""
    since = now - COMPLAINT_WINDOW
    complaints = store.recent_complainers(since=since)
    if not complaints:
        return 0, 0
    # Past this many sends the rate is under the limit whatever the true count.
    enough = max(settings.breaker_min_sample, math.ceil(complaints / settings.max_complaint_rate) + 1)
    return complaints, store.recent_sent(since=since, at_most=enough)


def check_complaints(complaints: int, sent: int, settings: MailSettings) -> None:
    """Raises CircuitOpen when last week's complaint rate (:func:`complaint_rate`) is over the
    limit. Complaints arrive later, by feedback loop: judged before anything is sent."""
    limit = settings.max_complaint_rate
    if sent >= settings.breaker_min_sample and complaints / sent > limit:
        raise CircuitOpen(
            f"paused: {complaints} spam complaints for {sent} emails sent in the last 7 days "
            f"({complaints / sent:.2%}, limit {limit:.2%}); "
            "review the content and the audience before sending more"
        )
