"""Signed, purpose-bound tokens for links in emails.

One salt per purpose, so a confirm token can never be replayed as an unsubscribe token (or the
reverse). Confirm tokens expire after 72 hours; unsubscribe tokens never do, because the link in
a year-old email must still work.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)

CONFIRM_MAX_AGE_SECONDS = 72 * 3600


class InvalidToken(Exception):
    """The token was forged, altered, or made for another purpose."""


class ExpiredToken(InvalidToken):
    """A genuine token that is too old; ``payload`` is still readable, to offer a new link."""

    def __init__(self, payload: object) -> None:
        super().__init__("token expired")
        self.payload = payload


@dataclass(frozen=True)
class Tokens:
    secret: str

    def _timed(self, purpose: str, now: datetime) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(
            self.secret, salt=f"nurture.{purpose}", signer=_ClockSigner, signer_kwargs={"now": now}
        )

    def _plain(self, purpose: str) -> URLSafeSerializer:
        # Built once per purpose: deriving the signing key costs more than signing (hot per message).
        return _serializer(self.secret, purpose)

    def confirm(self, subscriber_id: int, round_: int, now: datetime) -> str:
        """A confirmation token for one double opt-in round of one subscriber."""
        return self._timed("confirm", now).dumps([subscriber_id, round_])

    def read_confirm(self, token: str, now: datetime) -> tuple[int, int]:
        """(subscriber id, round); raises ExpiredToken after 72 hours, InvalidToken if forged."""
        serializer = self._timed("confirm", now)
        try:
            return _as_pair(serializer.loads(token, max_age=CONFIRM_MAX_AGE_SECONDS))
        except SignatureExpired as expired:
            raise ExpiredToken(_as_pair(expired.payload and serializer.load_payload(expired.payload))) from None
        except BadSignature:
            raise InvalidToken("not a valid confirmation link") from None

    def unsubscribe(self, subscriber_id: int) -> str:
        return self._plain("unsubscribe").dumps(subscriber_id)

    def read_unsubscribe(self, token: str) -> int:
        try:
            value = self._plain("unsubscribe").loads(token)
        except BadSignature:
            raise InvalidToken("not a valid unsubscribe link") from None
        if not isinstance(value, int):
            raise InvalidToken("not a valid unsubscribe link")
        return value

    def sign_timed(self, purpose: str, value: object, now: datetime) -> str:
        """A token for ``purpose`` that expires (read it with :meth:`read_timed`)."""
        return self._timed(purpose, now).dumps(value)

    def read_timed(self, purpose: str, token: str, now: datetime, max_age: int) -> object:
        """The value of a :meth:`sign_timed` token; InvalidToken if forged or older than ``max_age`` seconds."""
        try:
            return self._timed(purpose, now).loads(token, max_age=max_age)
        except BadSignature:
            raise InvalidToken(f"not a valid {purpose} token, or an expired one") from None

    def sign(self, purpose: str, value: object) -> str:
        """A never-expiring token for ``purpose`` (clicks, opens): tamper-proof, not secret."""
        return self._plain(purpose).dumps(value)

    def read(self, purpose: str, token: str) -> object:
        try:
            return self._plain(purpose).loads(token)
        except BadSignature:
            raise InvalidToken(f"not a valid {purpose} link") from None


@lru_cache(maxsize=32)
def _serializer(secret: str, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=f"nurture.{purpose}")


class _ClockSigner(TimestampSigner):
    """Reads the time from the caller's ``now`` instead of the system clock (time is passed in)."""

    def __init__(self, *args, now: datetime, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return int(self._now.timestamp())


def _as_pair(data: object) -> tuple[int, int]:
    if (
        isinstance(data, list)
        and len(data) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in data)
    ):
        return data[0], data[1]
    raise InvalidToken("not a valid confirmation link")
