"""The one error tree of hookyard.

* HookyardError — base; carries an HTTP status and a short machine code.
  * ConfigError — the configuration cannot run (start-up only; names file, key and fix).
  * RequestError — the caller sent something we refuse (4xx).
    * SignatureInvalid — 401 `signature_invalid`: missing, wrong, malformed or stale signature.
    * PayloadInvalid — 400 `payload_invalid`: the verified body is not JSON.
    * InvalidRequest — 400 `invalid_request`: an admin API parameter or field is wrong (the
      message names it).
    * NotFound — 404 `not_found`: unknown source or object.
    * UnsupportedMediaType — 415 `unsupported_media_type`.
    * BodyTooLarge — 413 `payload_too_large`.
    * RequestTimeout — 408 `request_timeout`: the body did not arrive in time.
    * Unauthorized — 401 `unauthorized`: admin token missing or wrong.
    * Conflict — 409 `conflict`: the object is not in a state that allows this (a retry of a
      delivery that is pending already).
  * StoreUnavailable — 503 `store_unavailable`: the store could not commit; the sender retries.

Messages tell the operator what to fix. They never contain a secret, a signature or a key.
"""

from __future__ import annotations


class HookyardError(Exception):
    """Base of every error hookyard raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class ConfigError(HookyardError):
    """The configuration is wrong; raised at start-up, never while serving."""

    code = "config_invalid"


class RequestError(HookyardError):
    status = 400
    code = "bad_request"


class SignatureInvalid(RequestError):
    status = 401
    code = "signature_invalid"


class PayloadInvalid(RequestError):
    status = 400
    code = "payload_invalid"


class InvalidRequest(RequestError):
    status = 400
    code = "invalid_request"


class Conflict(RequestError):
    status = 409
    code = "conflict"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class BodyTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(RequestError):
    status = 408
    code = "request_timeout"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class StoreUnavailable(HookyardError):
    status = 503
    code = "store_unavailable"
