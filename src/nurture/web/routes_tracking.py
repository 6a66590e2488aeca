"""The tracked link (``/c/{token}``) and the open pixel (``/o/{token}``): parse the token out of
the URL, let :class:`nurture.tracking.Landings` decide and record, answer."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from nurture.feedback.tracking import Landings
from nurture.tokens import InvalidToken
from nurture.web.bodies import BadRequest
from nurture.web.site import Site

# A transparent 1x1 GIF.
_PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def tracking_router(site: Site, landings: Landings) -> APIRouter:
    router = APIRouter()

    @router.get("/c/{token}", summary="A tracked link: redirects to a link of that email")
    def click(token: str):
        try:
            target = landings.click(token, site.clock())
        except InvalidToken:
            raise BadRequest(404, "This link is not valid.") from None
        return RedirectResponse(target, status_code=302, headers={"Referrer-Policy": "no-referrer"})

    @router.get("/o/{token}", summary="Open pixel (only in emails that turned it on)")
    def opened(token: str):
        try:
            landings.open(token, site.clock())
        except InvalidToken:
            raise BadRequest(404, "Not found.") from None
        return Response(_PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    return router

