"""Reading what a client posted: a form (urlencoded or multipart) or JSON, at most 16 KiB.

Strict on purpose, since the result is consent evidence: a field sent twice (in any of the three
forms) is refused rather than resolved by "last one wins", text must be UTF-8, a form carries no
files, and JSON nested past any sensible depth is refused with a message instead of a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_BODY = 16 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class BadRequest(Exception):
    """A request the client must change; ``status`` is the 4xx to answer with."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


async def read_body(request: Request, *, allow_empty: bool = False) -> tuple[bool, dict]:
    """(is JSON, the fields) of a form or JSON body; anything else is a BadRequest."""
    body = await _capped(request)
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if not body and allow_empty:
        return False, {}
    if kind == "application/json":
        return True, parse_json(body)
    if kind == "application/x-www-form-urlencoded":
        return False, parse_urlencoded(body)
    if kind == "multipart/form-data":
        return False, parse_multipart(body, content_type)
    raise BadRequest(415, "Send a form (application/x-www-form-urlencoded or multipart/form-data) "
                          "or JSON (application/json).")


async def read_raw(request: Request) -> bytes:
    """The body as sent, at most MAX_BODY: for a signature over its exact bytes."""
    return await _capped(request)


async def _capped(request: Request) -> bytes:
    """The body, refused as soon as it passes MAX_BODY, whether or not a length was declared."""
    too_large = BadRequest(413, f"The request body is larger than {MAX_BODY // 1024} KiB.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise too_large
    return bytes(body)


def parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body, object_pairs_hook=_unique)
    except RecursionError:
        # A 16 KiB body can nest thousands of levels deep, past the parser's recursion limit.
        raise BadRequest(400, "The JSON is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "The JSON body must be an object.")
    return data


def parse_urlencoded(body: bytes) -> dict[str, str]:
    try:
        return _unique(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise BadRequest(400, "The form is not valid UTF-8.") from None


def parse_multipart(body: bytes, content_type: str) -> dict[str, str]:
    """The text fields of a multipart/form-data body (RFC 7578), as mailbox providers send the
    RFC 8058 one-click unsubscribe. A file part is refused: nothing here takes files."""
    _kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest(400, "The multipart form has no boundary.")
    collector = _Parts()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise BadRequest(400, "The multipart form is malformed.") from None
    if not collector.complete:
        raise BadRequest(400, "The multipart form is incomplete.")
    return _unique(collector.fields)


class _Parts:
    """Collects (name, text) pairs from python-multipart's callbacks."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.complete = False
        self._header_name = self._header_value = b""
        self._disposition = b""
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._append("_header_name", data[start:end]),
            "on_header_value": lambda data, start, end: self._append("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_part_data": lambda data, start, end: self._data.extend(data[start:end]),
            "on_part_end": self._end,
            "on_end": self._finished,
        }

    def _append(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _begin(self) -> None:
        self._disposition = b""
        self._data = bytearray()

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _end(self) -> None:
        _kind, options = parse_options_header(self._disposition)
        if b"filename" in options:
            raise BadRequest(422, "This form takes no files.")
        if b"name" not in options:
            raise BadRequest(400, "A part of the multipart form has no field name.")
        self.fields.append((_text(options[b"name"]), _text(self._data)))

    def _finished(self) -> None:
        self.complete = True


def _text(data: bytes | bytearray) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "The form is not valid UTF-8.") from None


def _unique(pairs: Iterable[tuple[str, object]]) -> dict:
    """The pairs as a dict; a name given twice is refused (which value would the person mean?)."""
    data: dict = {}
    for key, value in pairs:
        if key in data:
            raise BadRequest(422, f"The field {key[:64]} was sent twice.", key[:64])
        data[key] = value
    return data
