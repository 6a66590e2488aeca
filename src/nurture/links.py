"""The public URLs that go into emails, built from the base URL and signed tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nurture.tokens import Tokens


@dataclass(frozen=True)
class Links:
    base_url: str
    tokens: Tokens

    def confirm(self, subscriber_id: int, round_: int, now: datetime) -> str:
        return f"{self.base_url}/confirm/{self.tokens.confirm(subscriber_id, round_, now)}"

    def unsubscribe(self, subscriber_id: int) -> str:
        return f"{self.base_url}/unsubscribe/{self.tokens.unsubscribe(subscriber_id)}"

    @staticmethod
    def preferences(unsubscribe_url: str) -> str:
        """The person's preferences page: it takes the same token as their unsubscribe link (the one
        ``unsubscribe`` above made), and a GET of either never changes anything."""
        base, _, token = unsubscribe_url.rpartition("/unsubscribe/")
        return f"{base}/preferences/{token}"
