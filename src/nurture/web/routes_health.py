"""``/healthz``: liveness, answered by the event loop itself (it is alive if this answers)."""

from __future__ import annotations

from fastapi import APIRouter


def health_router() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", summary="Liveness")
    async def healthz():
        return {"status": "ok"}

    return router
