"""The studio's impact panel: what the templates on disk would change for the people already in
the sequence, against the versions last sent (:mod:`nurture.feedback.impact`, the same answer as
`nurture templates impact`).

It is the one studio page that reads the database (``NURTURE_DATABASE_URL``). It only reads: no
migration, no planning, and a SQLite file that does not exist is not created. The page is worked
out in a thread, off the event loop, and reloads by itself when a template is saved, like the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.content.rendering import Renderer
from nurture.content.sequences import TemplateFormatError
from nurture.db import make_engine
from nurture.feedback.impact import Impact, preview_impact
from nurture.feedback.impact_words import headline, sentence
from nurture.migrate import SchemaOutOfDate, check_current
from nurture.sending.journey import Planner

__all__ = ["ImpactReader", "impact_router"]


@dataclass(frozen=True)
class ImpactView:
    """What the panel shows: the impact and its sentences, or why there is none."""

    impact: Impact | None
    headline: str
    sentences: dict[str, list[tuple[bool, str]]]  # per step: its sentence as (is a key, text) parts
    problem: str | None = None


def _parts(said: str) -> list[tuple[bool, str]]:
    """A sentence as the page shows it: capitalised, the `keys` apart (shown as code)."""
    said = said[:1].upper() + said[1:] + "."
    return [(index % 2 == 1, text) for index, text in enumerate(said.split("`")) if text]


class ImpactReader:
    """Reads the impact from the configured database; its engine is made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def _database(self) -> Engine | None:
        url = make_url(self.settings.database_url)
        if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
            return None  # never create the file: nothing was ever sent from it
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.settings.database_url)
            return self._engine

    def read(self, renderer: Renderer, now: datetime) -> ImpactView:
        where = make_url(self.settings.database_url).render_as_string(hide_password=True)
        engine = self._database()
        if engine is None:
            return ImpactView(None, "", {}, f"There is no database at {where} yet, so nothing has been sent: "
                                               "every email reaches people as it is now.")
        try:
            check_current(engine)
            with Session(engine) as session:  # closed without a commit: it only reads
                impact = preview_impact(session, renderer=renderer, planner=Planner.from_settings(self.settings),
                                        now=now)
        except SchemaOutOfDate as exc:
            return ImpactView(None, "", {}, f"The database at {where} is not ready: {exc}.")
        except TemplateFormatError as exc:
            return ImpactView(None, "", {}, f"The sequence cannot be read: {exc}")
        except SQLAlchemyError as exc:
            return ImpactView(None, "", {}, f"The database at {where} cannot be read: {type(exc).__name__}.")
        zone = ZoneInfo(self.settings.timezone)
        said = headline(impact)
        return ImpactView(impact, said[:1].upper() + said[1:] + ".",
                          {s.key: _parts(sentence(s, impact, zone)) for s in impact.steps})

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def impact_router(renderer: Renderer, reader: ImpactReader, pages, clock: Callable[[], datetime]) -> APIRouter:
    """``GET /impact``: the panel."""
    router = APIRouter()

    @router.get("/impact", response_class=HTMLResponse)
    def impact():  # a plain def: FastAPI runs it in a thread, off the event loop
        view = reader.read(renderer, clock())
        zone = ZoneInfo(reader.settings.timezone)
        return pages.page("impact.html", current=None, view="impact", result=view, zone=zone,
                          zone_name=reader.settings.timezone, **pages.state())

    return router
