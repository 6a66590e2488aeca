"""Builds the real parts from Settings: engine, renderer, transport, sender. Entry points only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from nurture.clock import utcnow
from nurture.config import Settings
from nurture.content.rendering import Renderer
from nurture.db import Database, make_engine, session_factory
from nurture.links import Links
from nurture.models import Status
from nurture.people.subscribers import mark_status
from nurture.sending.mail_settings import MailSettings
from nurture.sending.messages import Dkim, make_streams, sender_domain
from nurture.sending.ratelimit import Pacer, SharedPacer
from nurture.sending.send_budget import SqlBudget
from nurture.sending.send_store import SqlSendStore
from nurture.sending.sender import Sender
from nurture.sending.sent_versions import SentVersions
from nurture.sending.tracked_links import Tracker
from nurture.sending.transports import MaildirTransport, SmtpConfig, SmtpPool, Transport
from nurture.tokens import Tokens

if TYPE_CHECKING:
    from nurture.people.webhook_delivery import Deliverer
    from nurture.sending_processes import SendingPass


@dataclass
class Runtime:
    settings: Settings
    transport_override: Transport | None = None
    # The limits the shared sending budget holds (per second, per hour); None: the settings'.
    # A child of a spread pass paces at its share of the settings, against the whole budget.
    budget_rates: tuple[float, int] | None = None

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> Database:
        return session_factory(self.engine)

    @cached_property
    def tokens(self) -> Tokens:
        return Tokens(self.settings.secret)

    @cached_property
    def links(self) -> Links:
        return Links(self.settings.base_url, self.tokens)

    @cached_property
    def renderer(self) -> Renderer:
        s = self.settings
        return Renderer(s.templates_dir, clinic=s.clinic, base_url=s.base_url, consultation_url=s.consultation_url,
                        clock=utcnow)

    @cached_property
    def transport(self) -> Transport:
        if self.transport_override is not None:
            return self.transport_override
        s = self.settings
        if s.smtp_url:
            return SmtpPool(SmtpConfig.from_url(s.smtp_url, s.smtp_timeout), size=s.smtp_pool_size)
        return MaildirTransport(s.outbox_dir)

    def mail_settings(self) -> MailSettings:
        s = self.settings
        dkim = None
        if s.dkim_key_file:
            dkim = Dkim.from_file(s.dkim_key_file, s.dkim_selector or "nurture",
                                  s.dkim_domain or sender_domain(s.mail_from))
        return MailSettings(
            from_header=s.mail_from,
            streams=make_streams(from_header=s.mail_from, list_name=s.clinic_name, sequence=s.sequence,
                                 transactional_from=s.transactional_from,
                                 transactional_return_path=s.transactional_return_path),
            secret=s.secret,
            max_attempts=s.max_attempts,
            lease=timedelta(seconds=s.lease_seconds),
            db_patience=timedelta(seconds=s.db_patience_seconds),
            resend_unknown=s.resend_unknown,
            dev_recipient=s.dev_recipient,
            dkim=dkim,
            # SMTP connections, or Maildir writers (their fsyncs overlap). A transport handed in (the
            # tests' in-memory one) gains nothing from threads and keeps a pass's order predictable.
            threads=1 if self.transport_override is not None else s.smtp_pool_size,
            max_bounce_rate=s.max_bounce_rate,
            max_complaint_rate=s.max_complaint_rate,
        )

    @cached_property
    def pacer(self) -> Pacer:
        # One per process: `nurture run` has two senders (web confirmations and the scheduler),
        # which share its grant of the budget. The limits are the relay's, so they hold for every
        # process on the database; with none configured the database is never asked.
        s = self.settings
        per_second, per_hour = self.budget_rates or (s.rate_per_second, s.rate_per_hour)
        if not per_second and not per_hour:
            return Pacer()
        return SharedPacer(SqlBudget(self.sessions), per_second, per_hour, local_per_second=s.rate_per_second,
                           patience=s.db_patience_seconds)

    @cached_property
    def sent_versions(self) -> SentVersions:
        # One per process, like the renderer: each template version's files are read once.
        return SentVersions()

    def sender(self) -> Sender:
        """A new Sender (its own worker id, so one sender's release never touches another's
        claims), sharing this runtime's engine, transport and pacer."""
        from nurture.sending.journey import Planner

        return Sender(
            store=SqlSendStore(self.sessions, mark_bounced=_mark_bounced, planner=Planner.from_settings(self.settings)),
            renderer=self.renderer,
            transport=self.transport,
            links=self.links,
            settings=self.mail_settings(),
            tracker=Tracker(self.settings.base_url, self.tokens) if self.settings.track_clicks else None,
            pacer=self.pacer,
            versions=self.sent_versions,
        )

    def webhook_deliverer(self) -> Deliverer:
        """The webhook worker for the scheduler's job and ``nurture webhooks deliver``."""
        from nurture.people.webhook_delivery import Deliverer

        return Deliverer(self.sessions, clock=utcnow)

    def sending_pass(self) -> SendingPass:
        """Scheduled and command-line passes: a large one is spread over several processes."""
        from nurture.sending_processes import SendingPass

        return SendingPass(self.sender(), self.settings)

    def close(self) -> None:
        if "transport" in self.__dict__:
            self.transport.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


def _mark_bounced(session: Session, subscriber_id: int, now: datetime) -> None:
    """What a bounce means for the person (the rules live with the subscribers), handed to the
    sender's store here so that sending never imports them."""
    mark_status(session, subscriber_id, Status.bounced, now)
