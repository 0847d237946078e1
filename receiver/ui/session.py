"""Sign-in sessions and CSRF tokens for the web UI, without server-side state.

The session cookie is `<payload>.<mac>`: the payload (base64url JSON) carries a random session
id and the expiry, the MAC is HMAC-SHA256 under a key derived from `server.admin_token`. So every
process of one deployment accepts the others' cookies, a cookie cannot be extended or forged
without the token, and changing the token signs everybody out. The CSRF token of a session is an
HMAC of its id under the same key: a page can embed it, a cross-site form cannot know it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "hookyard_ui"
LIFETIME_S = 8 * 3600  # a working day; then sign in again
_MAX_COOKIE = 512  # ours are ~150 bytes; anything longer is not one we made


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    expires_at: int


class Sessions:
    """Makes and checks session cookies and CSRF tokens for one admin token."""

    def __init__(
        self,
        admin_token: str,
        lifetime_s: int = LIFETIME_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A key of its own, so a cookie's MAC is never usable as (or reveals) the token.
        self._key = hmac.new(admin_token.encode(), b"hookyard-ui-session-v1", "sha256").digest()
        self._token = admin_token.encode()
        self.lifetime_s = lifetime_s
        self.clock = clock

    def token_matches(self, given: str) -> bool:
        """Constant-time check of a sign-in attempt against the admin token."""
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    def new(self) -> tuple[Session, str]:
        """A fresh session and its cookie value."""
        session = Session(secrets.token_urlsafe(18), int(self.clock()) + self.lifetime_s)
        body = json.dumps({"sid": session.id, "exp": session.expires_at}, separators=(",", ":"))
        payload = _b64(body.encode())
        return session, f"{payload}.{self._mac(b'cookie:' + payload.encode())}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for; None when missing, forged, expired or junk."""
        if not cookie or len(cookie) > _MAX_COOKIE or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        expected = self._mac(b"cookie:" + payload.encode("utf-8", "replace"))
        if not hmac.compare_digest(mac.encode("utf-8", "replace"), expected.encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["sid"]), int(data["exp"]))
        except (ValueError, TypeError, KeyError):
            return None
        return session if session.expires_at > self.clock() else None

    def csrf_token(self, session: Session) -> str:
        return self._mac(b"csrf:" + session.id.encode())

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        """Constant-time check of a form's CSRF token."""
        return given is not None and hmac.compare_digest(
            given.encode("utf-8", "replace"), self.csrf_token(session).encode()
        )

    def _mac(self, message: bytes) -> str:
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
