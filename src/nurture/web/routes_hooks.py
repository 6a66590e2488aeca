"""``POST /hooks/booking``: the clinic's booking system says a person booked a consultation.

Parse, call, answer. The raw body is read first and its signature checked over those exact
bytes (``Nurture-Signature: t=<unix>,v1=<hex>``, HMAC-SHA256 of ``"<t>.<body>"`` with
NURTURE_BOOKING_WEBHOOK_SECRET, five minutes either way; :mod:`nurture.webhook_signing`)
before anything is parsed, so an unsigned request learns nothing and records nothing. Then the
JSON: ``{"email": ..., "id": ..., "booked_at": ...}`` (``booked_at`` optional, ISO-8601 with an
offset; other fields are ignored, as a booking system's payload carries more than we need).

Replays: the booking's ``id`` is recorded once. A delivery repeated within the window (the booking
system retrying after a lost answer, or someone replaying what they captured) is answered 200 with
``"duplicate": true`` and records nothing: the sender needs a success to stop retrying, and a
replay gains nothing. Outside the window the timestamp makes it a 401.

Without a secret configured the endpoint does not exist (404). Every answer is JSON.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from nurture.db import transaction
from nurture.people.goals import Booking, GoalRecorded, check_external_id, parse_booked_at, record_booking
from nurture.people.validation import InvalidInput, normalise_email
from nurture.webhook_signing import SIGNATURE_HEADER, BadSignature, check
from nurture.web.bodies import BadRequest, parse_json, read_raw
from nurture.web.site import Site


def hooks_router(site: Site) -> APIRouter:
    router = APIRouter()

    @router.post("/hooks/booking", summary="A consultation was booked (signed webhook from the booking system)")
    async def booking(request: Request):
        secret = site.settings.booking_webhook_secret
        if secret is None:
            return _error(404, "There is no page at this address.")
        now = site.clock()
        try:
            body = await read_raw(request)
            check(secret.get_secret_value(), body, request.headers.get(SIGNATURE_HEADER), now)
            parsed = _booking(request, body, now)
        except BadSignature as exc:
            return _error(401, str(exc), headers={"WWW-Authenticate": SIGNATURE_HEADER})
        except BadRequest as exc:
            return _error(exc.status, exc.message, exc.field)
        except InvalidInput as exc:
            return _error(422, exc.message, exc.field)
        done = await run_in_threadpool(_record, site, parsed, now)
        return JSONResponse({"recorded": done.new, "duplicate": not done.new, "matched": done.matched,
                             "goal_id": done.goal.id})

    return router


def _booking(request: Request, body: bytes, now: datetime) -> Booking:
    """The booking a signed body reports, or BadRequest / InvalidInput saying what is wrong."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest(415, "Send the booking as JSON (application/json).")
    data = parse_json(body)
    if "email" not in data:
        raise BadRequest(422, "The booking has no email.", "email")
    if "id" not in data:
        raise BadRequest(422, "The booking has no id (the booking system's own id for it).", "id")
    booked_at = data.get("booked_at")
    if booked_at is not None and not isinstance(booked_at, str):
        raise BadRequest(422, "booked_at must be an ISO-8601 string.", "booked_at")
    return Booking(email=normalise_email(data["email"]),
                   booked_at=parse_booked_at(booked_at, now=now) if booked_at else now,
                   source="webhook", external_id=check_external_id(data["id"]))


def _record(site: Site, booking: Booking, now: datetime) -> GoalRecorded:
    with transaction(site.runtime.sessions) as session:
        return record_booking(session, booking, now=now)


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message} | ({"field": field} if field else {}), status_code=status,
                        headers=headers)
