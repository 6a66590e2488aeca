"""The studio is a local tool with no login: it answers only requests that name a loopback host
(a web page cannot reach it through DNS rebinding) and refuses a POST from another origin."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi.responses import PlainTextResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "testserver"})  # testserver: Starlette's TestClient


class LocalOnly:
    """Refuse a request that does not name a loopback host (DNS rebinding) and a POST from another
    origin (a web page posting a send-test form); no caching of anything the studio serves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host_header = headers.get("host", "")
        refusal = None
        if host_header.rsplit(":", 1)[0].strip("[]").lower() not in LOOPBACK:
            refusal = "nurture studio answers on 127.0.0.1 only"
        elif scope["method"] == "POST" and headers.get("origin") and urlsplit(headers["origin"]).netloc != host_header:
            refusal = "a page on another site cannot post to the studio"
        if refusal:
            await PlainTextResponse(refusal, status_code=403)(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.setdefault("Cache-Control", "no-store")
                out.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_no_store)
