"""Webhook signature verification: one small verifier per scheme, chosen by configuration.

The webhook route, replay and `hookyard sign` all need the same answer to "did the provider send
exactly these bytes, recently?", so verification is a function of a header mapping, the raw body
and a clock (sans-I/O). Only fal's JWKS fetch touches the network, through an injectable client.

Schemes (DESIGN.md, "Signature schemes"):

* `standard-webhooks` — https://github.com/standard-webhooks/standard-webhooks (spec/), also the
  `svix-` header names; `v1` HMAC-SHA256 with `whsec_` secrets, `v1a` Ed25519 with `whpk_` keys.
* `stripe` — https://docs.stripe.com/webhooks (`t=…,v1=…`, HMAC-SHA256 hex over `{t}.{body}`).
* `hmac` — a configurable HMAC over a template (GitHub, Rendergrid, per-account providers).
* `fal` — https://docs.fal.ai/model-endpoints/webhooks (Ed25519, public keys from a JWKS).
* `none` — nothing; only valid together with confirm-by-fetch (checked by the caller).

Every verification failure is `errors.SignatureInvalid`; its message names the header and the
problem and never echoes a secret, a signature or a key. Bad configuration is `ConfigError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from receiver.core import jsonx
from receiver.core.errors import ConfigError, SignatureInvalid
from receiver.core.http import TooLarge, request_capped

SCHEMES: tuple[str, ...] = ("standard-webhooks", "stripe", "hmac", "fal", "none")

MAX_HEADER_CHARS = 8 * 1024  # longer header values are refused before any parsing
MAX_SIGNATURES = 32  # a signature list longer than this is an attack, not a rotation
JWKS_TTL_S = 3600.0
JWKS_REFETCH_MIN_S = 60.0
MAX_JWKS_BYTES = 64 * 1024
JWKS_DEADLINE_S = 5.0  # a whole JWKS fetch; a webhook waits for it, so it must be short
MAX_JWKS_KEYS = 32

MAX_TIMESTAMP_DIGITS = 12  # unix seconds; milliseconds (13 digits) are refused
_HMAC_ALGORITHMS = frozenset({"sha1", "sha256", "sha512"})  # hashlib names
_NO_MATCH = "no signature matched (wrong secret or key, or the body changed after signing)"


@dataclass(frozen=True, slots=True)
class Verified:
    """What a successful verification proves, so the generic provider can dedupe on it."""

    scheme: str
    message_id: str | None  # standard-webhooks: webhook-id; fal: X-Fal-Webhook-Request-Id
    timestamp: int | None  # the signed unix timestamp when the scheme has one


class Verifier(Protocol):
    """One configured scheme: checks incoming requests and can make the headers for tests."""

    scheme: str

    async def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> Verified:
        """Raise SignatureInvalid unless `body` carries a fresh signature by a configured key."""
        ...

    def sign(
        self, body: bytes, now: float | None = None, message_id: str | None = None
    ) -> dict[str, str]:
        """The headers that make `body` verify, with the first secret (curl tests, our tests)."""
        ...


# ---------------------------------------------------------------- header parsing helpers


def _lookup(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive: starlette Headers fold case, plain dicts may not."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def _checked(value: str, display: str) -> str:
    if len(value) > MAX_HEADER_CHARS:
        raise SignatureInvalid(f"the {display} header is too long")
    if not value.isascii():
        raise SignatureInvalid(f"the {display} header contains non-ASCII characters")
    value = value.strip()
    if not value:
        raise SignatureInvalid(f"the {display} header is empty")
    return value


def _required(headers: Mapping[str, str], display: str) -> str:
    """The header's value, stripped, after the size/ASCII/empty checks."""
    value = _lookup(headers, display.lower())
    if value is None:
        raise SignatureInvalid(f"the {display} header is missing")
    return _checked(value, display)


def _is_timestamp(value: str) -> bool:
    # ASCII digits only: str.isdigit() alone takes `²` and other digits int() refuses.
    return value.isascii() and value.isdigit() and len(value) <= MAX_TIMESTAMP_DIGITS


def _timestamp(value: str, display: str) -> int:
    if not _is_timestamp(value):
        raise SignatureInvalid(f"the {display} header is not a unix timestamp in seconds")
    return int(value)


def _check_window(timestamp: int, now: float, tolerance_s: float, display: str) -> None:
    if abs(now - timestamp) > tolerance_s:
        raise SignatureInvalid(
            f"the timestamp in {display} is outside the {tolerance_s:g} s window "
            "(a replayed request, or the sender's clock is off)"
        )


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _b64decode(value: str, *, urlsafe_ok: bool = True) -> bytes | None:
    """Standard (or URL-safe) base64 with a strict alphabet; None when it is not base64."""
    altchars = b"-_" if urlsafe_ok and ("-" in value or "_" in value) else None
    try:
        return base64.b64decode(value, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _hexdecode(value: str) -> bytes | None:
    # isalnum() keeps out what fromhex() would skip (spaces); fromhex() refuses the rest.
    if not (value.isascii() and value.isalnum()):
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:  # a letter past f, or an odd length
        return None


def _cap(items: list[str], display: str) -> list[str]:
    if len(items) > MAX_SIGNATURES:
        raise SignatureInvalid(f"the {display} header lists more than {MAX_SIGNATURES} signatures")
    return items


def _any_equal(expected: bytes, candidates: Iterable[bytes]) -> bool:
    """Constant-time per candidate; checks them all so timing does not reveal which one."""
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(expected, candidate)
    return found


class KeyedMac:
    """HMAC with one key, its key schedule computed once: each message then costs a copy of
    that state (hmac's own HMAC.copy(), in OpenSSL) instead of setting the key up again, which
    for a short webhook body was a third of the work."""

    __slots__ = ("_base",)

    def __init__(self, key: bytes, algorithm: str = "sha256") -> None:
        self._base = hmac.new(key, digestmod=algorithm)

    def digest(self, message: bytes) -> bytes:
        mac = self._base.copy()
        mac.update(message)
        return mac.digest()


def _ed25519_ok(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _ed25519_any(
    keys: Sequence[Ed25519PublicKey], signatures: Sequence[bytes], message: bytes
) -> bool:
    return any(_ed25519_ok(k, s, message) for k in keys for s in signatures if len(s) == 64)


# ---------------------------------------------------------------- config helpers


def _fail(where: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}.{key}: {problem}")


def _opt_str(settings: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = settings.get(key, default)
    if not isinstance(value, str):
        raise _fail(where, key, f"must be a string, got {type(value).__name__}")
    return value


def _check_keys(settings: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed_set = {"scheme", *allowed}
    for key in settings:
        if key not in allowed_set:
            shown = ", ".join(sorted(allowed_set))
            raise _fail(
                where,
                str(key),
                f"unknown key for scheme {settings['scheme']!r} "
                f"(allowed: {shown}); remove it or fix its spelling",
            )


def _text_secrets(secrets: Sequence[str], scheme: str, where: str) -> list[str]:
    if isinstance(secrets, str) or not secrets:
        raise ConfigError(
            f'{where}: scheme {scheme!r} needs at least one secret; set `secrets = ["…"]` '
            "in the source (several during rotation)"
        )
    for index, secret in enumerate(secrets):
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"{where}: secrets[{index}] must be a non-empty string")
    return list(secrets)


# ---------------------------------------------------------------- standard-webhooks

_SW_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


def _sw_names(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """The svix- names only when the request uses them and none of the webhook- names."""

    def present(names: tuple[str, ...]) -> bool:
        return any(_lookup(headers, name) is not None for name in names)

    return _SVIX_HEADERS if present(_SVIX_HEADERS) and not present(_SW_HEADERS) else _SW_HEADERS


def _sw_key(secret: str, index: int, where: str) -> bytes | Ed25519PublicKey:
    """A whsec_ (or unprefixed) HMAC key, or a whpk_ Ed25519 public key."""
    is_public = secret.startswith("whpk_")
    # Standard alphabet only, so a whsk_ private key or a typo cannot pass as a secret.
    raw = _b64decode(secret.removeprefix("whpk_" if is_public else "whsec_"), urlsafe_ok=False)
    if not raw:
        raise ConfigError(
            f"{where}: secrets[{index}] is not valid base64 after its whsec_/whpk_ prefix; "
            "copy the secret exactly as the provider shows it"
        )
    if not is_public:
        return raw
    if len(raw) != 32:
        raise ConfigError(f"{where}: secrets[{index}] (whpk_) must hold 32 raw key bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _sw_signatures(value: str, display: str) -> tuple[list[bytes], list[bytes]]:
    """(v1 HMACs, v1a Ed25519 signatures); unknown versions are ignored as the spec says."""
    v1: list[bytes] = []
    v1a: list[bytes] = []
    for entry in _cap(value.split(), display):
        version, _, encoded = entry.partition(",")
        decoded = _b64decode(encoded)
        if decoded and version in ("v1", "v1a"):
            (v1 if version == "v1" else v1a).append(decoded)
    if not v1 and not v1a:
        raise SignatureInvalid(
            f"the {display} header holds no well-formed v1,<base64> or v1a,<base64> signature"
        )
    return v1, v1a


class StandardWebhooksVerifier:
    """Standard Webhooks (Replicate, OpenAI, Svix senders); see the module docstring."""

    scheme = "standard-webhooks"

    def __init__(self, secrets: Sequence[str], tolerance_s: float, where: str) -> None:
        keys = [
            _sw_key(s, i, where) for i, s in enumerate(_text_secrets(secrets, self.scheme, where))
        ]
        self._hmac_keys = [KeyedMac(k) for k in keys if isinstance(k, bytes)]
        self._public_keys = [k for k in keys if isinstance(k, Ed25519PublicKey)]
        self._tolerance_s = tolerance_s
        # `sign` uses the first secret: the same keyed state as the first HMAC key (or None)
        self._signer = self._hmac_keys[0] if keys and isinstance(keys[0], bytes) else None

    async def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> Verified:
        """Accept when any listed v1/v1a signature matches any configured key."""
        id_name, ts_name, sig_name = _sw_names(headers)
        msg_id = _required(headers, id_name)
        raw_ts = _required(headers, ts_name)
        signature = _required(headers, sig_name)
        timestamp = _timestamp(raw_ts, ts_name)
        _check_window(timestamp, _now(now), self._tolerance_s, ts_name)
        v1, v1a = _sw_signatures(signature, sig_name)
        message = f"{msg_id}.{raw_ts}.".encode() + body  # the bytes as sent, not re-formatted
        if not self._matches(message, v1, v1a):
            raise SignatureInvalid(_NO_MATCH)
        return Verified(self.scheme, msg_id, timestamp)

    def _matches(self, message: bytes, v1: list[bytes], v1a: list[bytes]) -> bool:
        for key in self._hmac_keys:
            if _any_equal(key.digest(message), v1):
                return True
        return _ed25519_any(self._public_keys, v1a, message)

    def sign(
        self, body: bytes, now: float | None = None, message_id: str | None = None
    ) -> dict[str, str]:
        """Sign `v1` with the first secret, which must be a whsec_ secret."""
        signer = self._signer
        if signer is None:
            raise ConfigError(
                "standard-webhooks: the first secret is a whpk_ public key, which can only "
                "verify; put a whsec_ secret first to sign"
            )
        msg_id = message_id or "msg_" + _random.token_urlsafe(18)
        timestamp = int(_now(now))
        digest = signer.digest(f"{msg_id}.{timestamp}.".encode() + body)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        }


# ---------------------------------------------------------------- stripe


def _stripe_fields(value: str, display: str) -> tuple[str, list[str]]:
    """(t, v1 values) from `t=…,v1=…,v0=…`; other schemes in the list are ignored."""
    timestamps: list[str] = []
    v1: list[str] = []
    for item in _cap(value.split(","), display):
        key, _, field_value = item.strip().partition("=")
        if key == "t":
            timestamps.append(field_value)
        elif key == "v1":
            v1.append(field_value)
    if len(timestamps) != 1:
        raise SignatureInvalid(f"the {display} header needs exactly one t=<unix seconds> item")
    return timestamps[0], v1


class StripeVerifier:
    """Stripe's own scheme: the secret string (whsec_… included) is the HMAC key as given."""

    scheme = "stripe"

    def __init__(self, header: str, secrets: Sequence[str], tolerance_s: float, where: str) -> None:
        self._header = header
        self._keys = [KeyedMac(s.encode()) for s in _text_secrets(secrets, self.scheme, where)]
        self._tolerance_s = tolerance_s

    async def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> Verified:
        """Accept when any v1 HMAC in the header matches any configured secret."""
        raw_ts, v1 = _stripe_fields(_required(headers, self._header), self._header)
        timestamp = _timestamp(raw_ts, f"{self._header} t=")
        _check_window(timestamp, _now(now), self._tolerance_s, self._header)
        candidates = [d for d in map(_hexdecode, v1) if d is not None]
        if not candidates:
            raise SignatureInvalid(f"the {self._header} header holds no well-formed v1=<hex>")
        message = f"{raw_ts}.".encode() + body
        if not any(_any_equal(k.digest(message), candidates) for k in self._keys):
            raise SignatureInvalid(_NO_MATCH)
        return Verified(self.scheme, None, timestamp)

    def sign(
        self, body: bytes, now: float | None = None, message_id: str | None = None
    ) -> dict[str, str]:
        """Stripe has no message id; `message_id` is accepted for a uniform interface."""
        timestamp = int(_now(now))
        digest = self._keys[0].digest(f"{timestamp}.".encode() + body).hex()
        return {self._header: f"t={timestamp},v1={digest}"}


# ---------------------------------------------------------------- hmac (configurable)

_TEMPLATE_FIELDS = ("body", "timestamp", "id")


def _normalise_algorithm(value: str, where: str) -> str:
    name = value.strip().lower()
    name = name.removeprefix("hmac-").removeprefix("hmac_").replace("-", "")
    if name not in _HMAC_ALGORITHMS:
        raise _fail(where, "algorithm", f"{value!r} is not supported; use sha256, sha512 or sha1")
    return name


def _compile_template(template: str, where: str) -> list[tuple[str, str | None]]:
    """[(literal text, field or None)]; fields are body/timestamp/id, nothing else."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise _fail(where, "template", f"is not a valid template ({exc})") from None
    for _, field, spec, conversion in parts:
        if field is not None and (field not in _TEMPLATE_FIELDS or spec or conversion):
            raise _fail(
                where,
                "template",
                f"unknown placeholder {{{field}}}; use {{body}}, {{timestamp}} and {{id}} only",
            )
    compiled = [(literal, field) for literal, field, _, _ in parts]
    if "body" not in {f for _, f in compiled}:
        raise _fail(where, "template", "must contain {body}: the body has to be signed")
    return compiled


@dataclass(frozen=True, slots=True)
class _HmacConfig:
    header: str
    algorithm: str
    encoding: str
    prefix: str
    template: list[tuple[str, str | None]]
    timestamp_header: str | None
    id_header: str | None


def _hmac_config(settings: Mapping[str, Any], where: str) -> _HmacConfig:
    header = _opt_str(settings, "header", "", where)
    if not header.strip():
        raise _fail(
            where,
            "header",
            "is required for scheme 'hmac' (the header that carries "
            'the signature, e.g. "X-Hub-Signature-256")',
        )
    encoding = _opt_str(settings, "encoding", "hex", where).lower()
    if encoding not in ("hex", "base64"):
        raise _fail(where, "encoding", f"{encoding!r} is not supported; use hex or base64")
    template = _compile_template(_opt_str(settings, "template", "{body}", where), where)
    fields = {f for _, f in template}
    return _HmacConfig(
        header=header.strip(),
        algorithm=_normalise_algorithm(_opt_str(settings, "algorithm", "sha256", where), where),
        encoding=encoding,
        prefix=_opt_str(settings, "prefix", "", where),
        template=template,
        timestamp_header=_needed_header(settings, "timestamp_header", "timestamp" in fields, where),
        id_header=_needed_header(settings, "id_header", "id" in fields, where),
    )


def _needed_header(settings: Mapping[str, Any], key: str, used: bool, where: str) -> str | None:
    value = _opt_str(settings, key, "", where).strip()
    if used and not value:
        field = key.removesuffix("_header")
        raise _fail(where, key, f"is required because template uses {{{field}}}")
    return value or None


class HmacVerifier:
    """One header carrying an HMAC of a templated message: GitHub, Rendergrid and the like."""

    scheme = "hmac"

    def __init__(
        self, config: _HmacConfig, secrets: Sequence[str], tolerance_s: float, where: str
    ) -> None:
        self._c = config
        self._keys = [
            KeyedMac(s.encode(), config.algorithm)
            for s in _text_secrets(secrets, self.scheme, where)
        ]
        self._tolerance_s = tolerance_s
        # A signature starts at the prefix after a separator, so a prefix such as "v1," works.
        self._splitter = re.compile(r"[,\s]+(?=" + re.escape(config.prefix) + ")", re.IGNORECASE)
        self._prefix = config.prefix.lower()
        # The template as (literal, field) with literals encoded once, not per request.
        self._template = [(lit.encode(), f) for lit, f in config.template]
        # Header names as a lower-cased request header dict holds them (the quick path).
        self._names = tuple(
            h.lower() if h else None
            for h in (config.header, config.timestamp_header, config.id_header)
        )
        self._decoder = _hexdecode if config.encoding == "hex" else _b64decode

    async def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> Verified:
        """Accept when any signature in the header matches any configured secret."""
        return self._quick(headers, body, now) or self._checked(headers, body, now)

    def _quick(
        self, headers: Mapping[str, str], body: bytes, now: float | None
    ) -> Verified | None:
        """The usual request in one pass: one signature after exactly the configured prefix,
        a timestamp of plain digits inside the window, headers needing no trimming. None for
        anything else, a mismatch included: `_checked` then looks again and names what is
        wrong (or accepts a signature that is merely written differently)."""
        sig_name, ts_name, id_name = self._names
        value = headers.get(sig_name or "")
        if value is None or len(value) > MAX_HEADER_CHARS or not value.isascii():
            return None
        prefix = self._c.prefix
        signature = self._decoder(value[len(prefix) :]) if value.startswith(prefix) else None
        if not signature:
            return None
        raw_ts, timestamp = "", None
        if ts_name is not None:
            raw_ts = headers.get(ts_name, "")
            if not _is_timestamp(raw_ts):
                return None
            timestamp = int(raw_ts)
            if abs(_now(now) - timestamp) > self._tolerance_s:
                return None
        msg_id = ""
        if id_name is not None:
            msg_id = headers.get(id_name, "")
            if not msg_id or len(msg_id) > MAX_HEADER_CHARS or not msg_id.isascii():
                return None
            if msg_id.strip() != msg_id:
                return None
        message = self._message(body, raw_ts, msg_id)
        for key in self._keys:
            if hmac.compare_digest(key.digest(message), signature):
                return Verified(self.scheme, None, timestamp)
        return None

    def _checked(
        self, headers: Mapping[str, str], body: bytes, now: float | None
    ) -> Verified:
        """Every check, each failure named; several signatures, odd spacing, case-insensitive
        prefixes and header names are accepted."""
        candidates = self._candidates(_required(headers, self._c.header))
        raw_ts, timestamp = self._timestamp(headers, now)
        msg_id = _required(headers, self._c.id_header) if self._c.id_header else ""
        message = self._message(body, raw_ts, msg_id)
        if not any(_any_equal(k.digest(message), candidates) for k in self._keys):
            raise SignatureInvalid(_NO_MATCH)
        return Verified(self.scheme, None, timestamp)

    def _timestamp(self, headers: Mapping[str, str], now: float | None) -> tuple[str, int | None]:
        """(the header as sent, its value) or ("", None) when the template has no timestamp."""
        name = self._c.timestamp_header
        if name is None:
            return "", None
        raw = _required(headers, name)
        timestamp = _timestamp(raw, name)
        _check_window(timestamp, _now(now), self._tolerance_s, name)
        return raw, timestamp

    def _candidates(self, value: str) -> list[bytes]:
        # One signature and no separator in it (the usual header) needs no split; whitespace
        # other than a space makes isprintable() false.
        plain = value.isprintable() and " " not in value and "," not in value
        tokens = [value] if plain else self._splitter.split(value)
        decoded = [self._decode(token) for token in _cap(tokens, self._c.header)]
        candidates = [d for d in decoded if d is not None]
        if not candidates:
            shown = f"{self._c.prefix}<{self._c.encoding}>"
            raise SignatureInvalid(f"the {self._c.header} header holds no well-formed {shown}")
        return candidates

    def _decode(self, token: str) -> bytes | None:
        prefix = self._prefix
        if token[: len(prefix)].lower() != prefix:
            return None
        body = token[len(prefix) :].strip(", \t")
        # A separator left inside is refused by either decoder (hex: isalnum; base64:
        # validate=True), so no separate scan for one.
        if not body:
            return None
        return self._decoder(body)

    def _message(self, body: bytes, timestamp: str, msg_id: str) -> bytes:
        values = {"body": body, "timestamp": timestamp.encode(), "id": msg_id.encode()}
        parts = []
        for literal, field in self._template:
            parts.append(literal)
            if field:
                parts.append(values[field])
        return b"".join(parts)

    def sign(
        self, body: bytes, now: float | None = None, message_id: str | None = None
    ) -> dict[str, str]:
        """Headers for this layout; timestamp/id headers only when the template uses them."""
        timestamp = str(int(_now(now)))
        msg_id = message_id or "msg_" + _random.token_urlsafe(18)
        digest = self._keys[0].digest(self._message(body, timestamp, msg_id))
        encoded = digest.hex() if self._c.encoding == "hex" else base64.b64encode(digest).decode()
        headers = {self._c.header: self._c.prefix + encoded}
        if self._c.timestamp_header:
            headers[self._c.timestamp_header] = timestamp
        if self._c.id_header:
            headers[self._c.id_header] = msg_id
        return headers


# ---------------------------------------------------------------- fal (Ed25519 + JWKS)

_FAL_ID = "X-Fal-Webhook-Request-Id"
_FAL_USER = "X-Fal-Webhook-User-Id"
_FAL_TS = "X-Fal-Webhook-Timestamp"
_FAL_SIG = "X-Fal-Webhook-Signature"
_FETCH_FAILED = "could not fetch the signing keys from the configured jwks_url"


class _JwksError(ValueError):
    """A JWKS document we cannot use; the message says why without quoting a key."""


def _jwk_key(jwk: Any) -> Ed25519PublicKey:
    if not isinstance(jwk, Mapping):
        raise _JwksError("each entry of keys must be a table")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise _JwksError('each key needs kty = "OKP" and crv = "Ed25519"')
    x = jwk.get("x")
    raw = _b64decode(x + "=" * (-len(x) % 4)) if isinstance(x, str) else None
    if raw is None or len(raw) != 32:
        raise _JwksError("each key's x must be the base64url of the 32 raw public-key bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _jwks_keys(document: Any, *, strict: bool) -> list[Ed25519PublicKey]:
    """Ed25519 keys of a JWKS; `strict` (inline config) refuses keys a fetched set may skip."""
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list) or not keys:
        raise _JwksError("must be a table with a non-empty keys list")
    parsed: list[Ed25519PublicKey] = []
    for jwk in keys[:MAX_JWKS_KEYS]:
        try:
            parsed.append(_jwk_key(jwk))
        except _JwksError:
            if strict:
                raise
    if not parsed:
        raise _JwksError("holds no usable Ed25519 (OKP) key")
    return parsed


def _fal_message(headers: Mapping[str, str], body: bytes) -> tuple[str, str, int, bytes]:
    """(request id, user id, timestamp, signed message) from fal's headers."""
    request_id = _required(headers, _FAL_ID)
    user_id = _required(headers, _FAL_USER)
    raw_ts = _required(headers, _FAL_TS)
    timestamp = _timestamp(raw_ts, _FAL_TS)
    digest = hashlib.sha256(body).hexdigest()
    message = f"{request_id}\n{user_id}\n{raw_ts}\n{digest}".encode()
    return request_id, user_id, timestamp, message


class FalVerifier:
    """fal.ai: Ed25519 over request id, user id, timestamp and the body's SHA-256.

    fal signs every customer's webhooks with the same keys, so a valid signature only proves
    the callback came from fal, not that it is about OUR account: `user_ids` (an allow-list of
    `X-Fal-Webhook-User-Id` values) closes that. Empty means any fal user (warned at start-up).
    """

    scheme = "fal"

    def __init__(
        self,
        tolerance_s: float,
        *,
        keys: Sequence[Ed25519PublicKey] = (),
        jwks_url: str | None = None,
        http_client_factory: Callable[[], httpx.AsyncClient] | None = None,
        user_ids: Sequence[str] = (),
    ) -> None:
        self.user_ids = frozenset(user_ids)
        self._keys = list(keys)
        self._url = jwks_url
        self._factory = http_client_factory or (lambda: httpx.AsyncClient(timeout=5))
        self._tolerance_s = tolerance_s
        self._fetched_at: float | None = None  # when the cached keys came
        self._attempted_at: float | None = None  # last fetch attempt, success or not
        self._lock = asyncio.Lock()

    async def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> Verified:
        """Accept a fresh signature by a JWKS key; an unknown key costs one rate-limited refetch."""
        request_id, user_id, timestamp, message = _fal_message(headers, body)
        if self.user_ids and not any(hmac.compare_digest(user_id, u) for u in self.user_ids):
            # The value is not echoed: the message names the header and the setting to fix.
            raise SignatureInvalid(
                f"the {_FAL_USER} header names a fal user that is not in this source's user_ids"
            )
        signature = _hexdecode(_required(headers, _FAL_SIG))
        if signature is None or len(signature) != 64:
            raise SignatureInvalid(f"the {_FAL_SIG} header is not 128 hex characters")
        clock = _now(now)
        _check_window(timestamp, clock, self._tolerance_s, _FAL_TS)
        keys = await self._current_keys(clock)
        if not _ed25519_any(keys, [signature], message) and not (
            await self._refetched_match(clock, signature, message)
        ):
            raise SignatureInvalid(_NO_MATCH)
        return Verified(self.scheme, request_id, timestamp)

    async def _current_keys(self, clock: float) -> list[Ed25519PublicKey]:
        if not self._needs_refresh(clock):
            return self._keys
        async with self._lock:
            if self._needs_refresh(clock):  # another request may have refreshed meanwhile
                await self._refresh(clock, keep_stale=bool(self._keys))
        return self._keys

    def _needs_refresh(self, clock: float) -> bool:
        """No keys yet, or stale keys (older than an hour) and no attempt in the last minute."""
        if self._url is None or self._fresh(clock):
            return False
        return not self._keys or self._may_refetch(clock)

    async def _refetched_match(self, clock: float, signature: bytes, message: bytes) -> bool:
        """The sender may have rotated to a key we have not seen: fetch once, at most per 60 s."""
        if self._url is None:
            return False
        async with self._lock:
            if not self._may_refetch(clock):
                return False
            await self._refresh(clock, keep_stale=False)
        return _ed25519_any(self._keys, [signature], message)

    def _fresh(self, clock: float) -> bool:
        return self._fetched_at is not None and 0 <= clock - self._fetched_at < JWKS_TTL_S

    def _may_refetch(self, clock: float) -> bool:
        last = self._attempted_at
        return last is None or not 0 <= clock - last < JWKS_REFETCH_MIN_S

    async def _refresh(self, clock: float, *, keep_stale: bool) -> None:
        """Replace the cached keys; on failure keep stale keys if allowed, else refuse."""
        self._attempted_at = clock
        try:
            self._keys = await self._fetch()
        except (httpx.HTTPError, _JwksError, ValueError, TooLarge, TimeoutError):
            if keep_stale:
                return  # fal's keys rarely change: stale keys beat refusing every webhook
            raise SignatureInvalid(_FETCH_FAILED) from None
        self._fetched_at = clock

    async def _fetch(self) -> list[Ed25519PublicKey]:
        """The JWKS, read under MAX_JWKS_BYTES and within JWKS_DEADLINE_S as a whole: an
        endless or dripping answer costs a bounded wait and buffer, never more."""
        assert self._url is not None
        async with self._factory() as client:
            answer = await request_capped(
                client,
                "GET",
                self._url,
                limit=MAX_JWKS_BYTES,
                deadline_s=JWKS_DEADLINE_S,
                refuse_larger=True,
                headers={"Accept": "application/json"},
            )
        if not 200 <= answer.status < 300:
            raise _JwksError(f"the JWKS endpoint answered {answer.status}")
        return _jwks_keys(jsonx.loads(answer.body, numbers=jsonx.NULL), strict=False)

    def sign(
        self, body: bytes, now: float | None = None, message_id: str | None = None
    ) -> dict[str, str]:
        """fal signs with its private key; we only ever hold public keys."""
        raise ConfigError(
            "scheme 'fal' cannot sign: hookyard only holds fal's public keys; "
            "use a fal request to produce a signed webhook"
        )


def _fal_verifier(
    settings: Mapping[str, Any],
    tolerance_s: float,
    where: str,
    factory: Callable[[], httpx.AsyncClient] | None,
) -> FalVerifier:
    user_ids = _fal_user_ids(settings, where)
    has_url, has_jwks = "jwks_url" in settings, "jwks" in settings
    if has_url == has_jwks:
        raise _fail(
            where,
            "jwks_url",
            "set exactly one of jwks_url (fetched and cached) or "
            "jwks (an inline {keys = [...]} table)",
        )
    if has_jwks:
        try:
            keys = _jwks_keys(settings["jwks"], strict=True)
        except _JwksError as exc:
            raise _fail(where, "jwks", str(exc)) from None
        return FalVerifier(tolerance_s, keys=keys, user_ids=user_ids)
    url = settings["jwks_url"]
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise _fail(where, "jwks_url", "must be an http(s) URL")
    return FalVerifier(tolerance_s, jwks_url=url, http_client_factory=factory, user_ids=user_ids)


def _fal_user_ids(settings: Mapping[str, Any], where: str) -> tuple[str, ...]:
    found = settings.get("user_ids", [])
    if not isinstance(found, list) or not all(isinstance(u, str) and u.strip() for u in found):
        raise _fail(
            where,
            "user_ids",
            'must be a list of fal user ids (strings), e.g. user_ids = ["your-fal-user-id"]',
        )
    return tuple(u.strip() for u in found)


# ---------------------------------------------------------------- none


class NoneVerifier:
    """No signature: the caller only allows it with confirm-by-fetch."""

    scheme = "none"

    async def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> Verified:
        """Accept everything; trust comes from fetching the job from the provider instead."""
        return Verified(self.scheme, None, None)

    def sign(
        self, body: bytes, now: float | None = None, message_id: str | None = None
    ) -> dict[str, str]:
        """Nothing to sign."""
        return {}


# ---------------------------------------------------------------- the factory

_SCHEME_KEYS: dict[str, tuple[str, ...]] = {
    "standard-webhooks": (),
    "stripe": ("header",),
    "hmac": (
        "header",
        "algorithm",
        "encoding",
        "prefix",
        "template",
        "timestamp_header",
        "id_header",
    ),
    "fal": ("jwks_url", "jwks", "user_ids"),
    "none": (),
}


def _scheme(settings: Mapping[str, Any], where: str) -> str:
    if not isinstance(settings, Mapping):
        raise ConfigError(f'{where}: must be a table such as {{ scheme = "hmac", ... }}')
    scheme = settings.get("scheme")
    if scheme not in SCHEMES:
        what = "is missing" if scheme is None else f"{scheme!r} is unknown"
        raise _fail(where, "scheme", f"{what}; use one of {', '.join(SCHEMES)}")
    assert isinstance(scheme, str)
    _check_keys(settings, _SCHEME_KEYS[scheme], where)
    return scheme


def build_verifier(
    settings: Mapping[str, Any],
    secrets: Sequence[str],
    tolerance_s: float = 300,
    *,
    where: str = "signature",
    http_client_factory: Callable[[], httpx.AsyncClient] | None = None,
) -> Verifier:
    """Turn a source's `signature` table (preset already merged) into a verifier, failing
    closed at start-up: every problem is a ConfigError naming `where`, the key and the fix."""
    scheme = _scheme(settings, where)
    if (
        isinstance(tolerance_s, bool)
        or not isinstance(tolerance_s, int | float)
        or not (tolerance_s > 0)
    ):
        raise ConfigError(f"{where}: tolerance_s must be a positive number of seconds")
    if scheme == "standard-webhooks":
        return StandardWebhooksVerifier(secrets, tolerance_s, where)
    if scheme == "stripe":
        header = _opt_str(settings, "header", "Stripe-Signature", where).strip()
        if not header:
            raise _fail(where, "header", "must not be empty")
        return StripeVerifier(header, secrets, tolerance_s, where)
    if scheme == "hmac":
        return HmacVerifier(_hmac_config(settings, where), secrets, tolerance_s, where)
    if scheme == "fal":
        return _fal_verifier(settings, tolerance_s, where, http_client_factory)
    return NoneVerifier()
