"""receiver.signing: published vectors, one conformance suite for every scheme, config errors,
and fal's JWKS cache.

Signatures in the conformance suite are made here by small independent signers (not by the
module's own `sign`), with an injected clock, so a bug shared by signer and verifier cannot hide.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from receiver.core import signing
from receiver.core.errors import ConfigError, SignatureInvalid
from receiver.core.signing import SCHEMES, Verified, Verifier, build_verifier
from tests import support

# ============================================================ published test vectors

# Standard Webhooks reference libraries, shared by every language binding and by Svix:
#   standard-webhooks/standard-webhooks libraries/python/tests/test_webhooks.py
#   standard-webhooks/standard-webhooks libraries/go/webhook_test.go (TestWebhookSign)
#   svix/svix-webhooks python/tests/test_webhooks.py (same values, svix-* header names)
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_PAYLOAD = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# test_invalid_signature_raises_error: one character off the real signature.
SW_INVALID_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
# test_multi_sig_payload_is_valid: decoys around the valid signature (v2 is an unknown version).
SW_DECOYS = (
    "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
    "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
)

# Standard Webhooks v1a (Ed25519): standard-webhooks/standard-webhooks
#   libraries/go/webhook_asymmetric_test.go, TestAsymmetricWebhookSign. The key is the base64
#   Ed25519 seed (ed25519.NewKeyFromSeed in webhook_asymmetric.go); msg id, timestamp and payload
#   are the symmetric vector's.
SW_V1A_SEED_B64 = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
SW_V1A_SIGNATURE = (
    "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
)

# GitHub, "Validating webhook deliveries" → "Testing the webhook payload validation":
#   https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
#   (github/docs content/webhooks/using-webhooks/validating-webhook-deliveries.md)
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# Stripe publishes no fixed signature: stripe/stripe-python tests/test_webhook.py computes it at
# test time (generate_header: "t=%d,v1=%s" with HMAC-SHA256 over "%d.%s"). These are its fixture
# inputs; the header is rebuilt the same way in stripe_header() below.
STRIPE_SECRET = "whsec_test_secret"
STRIPE_PAYLOAD = b"""{
  "id": "evt_test_webhook",
  "object": "event",
  "data": { "object": { "id": "rdr_123", "object": "terminal.reader" } }
}"""

# RFC 8032 section 7.1, TEST 1-3 (https://www.rfc-editor.org/rfc/rfc8032#section-7.1):
# (secret seed, public key, message, signature), all hex. Building blocks for v1a and fal.
RFC8032 = (
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
        "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
)
# RFC 8037 appendix A.1 (https://www.rfc-editor.org/rfc/rfc8037#appendix-A.1): the JWK form
# of RFC 8032 TEST 1's public key, i.e. what a fal JWKS entry looks like.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"

RENDERGRID_PRESET = {
    "scheme": "hmac",
    "header": "X-Webhook-Signature-256",
    "prefix": "sha256=",
    "encoding": "hex",
    "algorithm": "sha256",
    "template": "{timestamp}.{body}",
    "timestamp_header": "X-Timestamp",
}
GITHUB_SETTINGS = {"scheme": "hmac", "header": "X-Hub-Signature-256", "prefix": "sha256="}

NOW = 1_800_000_000  # the injected clock for everything that is not a published vector


# ============================================================ independent test signers


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw_public(key))}


def sw_message(msg_id: str, ts: int, body: bytes) -> bytes:
    return f"{msg_id}.{ts}.".encode() + body


def sw_hmac_headers(secret: str, ts: int, body: bytes, prefix: str = "webhook") -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, sw_message(SW_MSG_ID, ts, body), hashlib.sha256).digest()
    return {
        f"{prefix}-id": SW_MSG_ID,
        f"{prefix}-timestamp": str(ts),
        f"{prefix}-signature": "v1," + b64(digest),
    }


def sw_ed25519_headers(key: Ed25519PrivateKey, ts: int, body: bytes) -> dict[str, str]:
    signature = key.sign(sw_message(SW_MSG_ID, ts, body))
    return {
        "webhook-id": SW_MSG_ID,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1a," + b64(signature),
    }


def stripe_header(secret: str, ts: int, body: bytes, scheme: str = "v1") -> str:
    # as stripe-python tests/test_webhook.py generate_header()
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},{scheme}={digest}"


def rendergrid_headers(secret: str, ts: int, body: bytes) -> dict[str, str]:
    # providers/README.md: "sha256=" + hex(HMAC-SHA256(secret, X-Timestamp + "." + raw_body))
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature-256": "sha256=" + digest, "X-Timestamp": str(ts)}


def github_headers(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": "sha256=" + digest}


FAL_REQUEST_ID = "024ca5b1-45d3-4afd-883e-ad3abe2a1c4d"
FAL_USER_ID = "user-123"


def fal_headers(key: Ed25519PrivateKey, ts: int, body: bytes) -> dict[str, str]:
    return support.fal_headers(key, body, ts, FAL_REQUEST_ID, FAL_USER_ID)


def lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# ============================================================ the conformance cases

WHSEC = [
    SW_SECRET,
    "whsec_" + b64(b"an older secret, kept for rotation"),
    "whsec_" + b64(b"a secret this source never had"),
]
ED_KEYS = [Ed25519PrivateKey.generate() for _ in range(3)]  # new, old (rotated), foreign
WHPK = ["whpk_" + b64(raw_public(k)) for k in ED_KEYS]
HMAC_SECRETS = ["rg_whsec_new_0123456789", "rg_whsec_old_9876543210", "someone-else's secret"]

Signer = Callable[[int, int, bytes], dict[str, str]]  # (key index, timestamp, body) -> headers


@dataclass
class Case:
    id: str
    settings: dict[str, Any]
    secrets: list[str]  # the configured ones: new first, then the rotated-out old one
    sign: Signer
    required: tuple[str, ...]
    signature_header: str
    timestamp_header: str | None  # a separate header carrying the timestamp, if any
    message_id: str | None = None
    leaks: list[str] = field(default_factory=list)  # never in an error message

    def verifier(self) -> Verifier:
        return build_verifier(self.settings, self.secrets, 300)


def _fal_case() -> Case:
    return Case(
        id="fal-inline-jwks",
        settings={"scheme": "fal", "jwks": {"keys": [jwk(ED_KEYS[0]), jwk(ED_KEYS[1])]}},
        secrets=[],
        sign=lambda i, ts, body: fal_headers(ED_KEYS[i], ts, body),
        required=(
            "X-Fal-Webhook-Request-Id",
            "X-Fal-Webhook-User-Id",
            "X-Fal-Webhook-Timestamp",
            "X-Fal-Webhook-Signature",
        ),
        signature_header="X-Fal-Webhook-Signature",
        timestamp_header="X-Fal-Webhook-Timestamp",
        message_id=FAL_REQUEST_ID,
        leaks=[jwk(k)["x"] for k in ED_KEYS] + [b64(raw_public(k)) for k in ED_KEYS],
    )


CASES = [
    Case(
        id="standard-webhooks-whsec",
        settings={"scheme": "standard-webhooks"},
        secrets=WHSEC[:2],
        sign=lambda i, ts, body: sw_hmac_headers(WHSEC[i], ts, body),
        required=("webhook-id", "webhook-timestamp", "webhook-signature"),
        signature_header="webhook-signature",
        timestamp_header="webhook-timestamp",
        message_id=SW_MSG_ID,
        leaks=WHSEC + [s.removeprefix("whsec_") for s in WHSEC],
    ),
    Case(
        id="standard-webhooks-whpk",
        settings={"scheme": "standard-webhooks"},
        secrets=WHPK[:2],
        sign=lambda i, ts, body: sw_ed25519_headers(ED_KEYS[i], ts, body),
        required=("webhook-id", "webhook-timestamp", "webhook-signature"),
        signature_header="webhook-signature",
        timestamp_header="webhook-timestamp",
        message_id=SW_MSG_ID,
        leaks=WHPK + [s.removeprefix("whpk_") for s in WHPK],
    ),
    Case(
        id="standard-webhooks-svix-names",
        settings={"scheme": "standard-webhooks"},
        secrets=WHSEC[:2],
        sign=lambda i, ts, body: sw_hmac_headers(WHSEC[i], ts, body, prefix="svix"),
        required=("svix-id", "svix-timestamp", "svix-signature"),
        signature_header="svix-signature",
        timestamp_header="svix-timestamp",
        message_id=SW_MSG_ID,
        leaks=WHSEC + [s.removeprefix("whsec_") for s in WHSEC],
    ),
    Case(
        id="stripe",
        settings={"scheme": "stripe"},
        secrets=[STRIPE_SECRET, "whsec_stripe_old_secret"],
        sign=lambda i, ts, body: {
            "Stripe-Signature": stripe_header(
                [STRIPE_SECRET, "whsec_stripe_old_secret", "whsec_foreign"][i], ts, body
            )
        },
        required=("Stripe-Signature",),
        signature_header="Stripe-Signature",
        timestamp_header=None,
        leaks=[STRIPE_SECRET, "whsec_stripe_old_secret", "whsec_foreign"],
    ),
    Case(
        id="hmac-rendergrid",
        settings=RENDERGRID_PRESET,
        secrets=HMAC_SECRETS[:2],
        sign=lambda i, ts, body: rendergrid_headers(HMAC_SECRETS[i], ts, body),
        required=("X-Webhook-Signature-256", "X-Timestamp"),
        signature_header="X-Webhook-Signature-256",
        timestamp_header="X-Timestamp",
        leaks=HMAC_SECRETS,
    ),
    Case(
        id="hmac-github",
        settings=GITHUB_SETTINGS,
        secrets=HMAC_SECRETS[:2],
        sign=lambda i, ts, body: github_headers(HMAC_SECRETS[i], body),
        required=("X-Hub-Signature-256",),
        signature_header="X-Hub-Signature-256",
        timestamp_header=None,
        leaks=HMAC_SECRETS,
    ),
    _fal_case(),
]
TIMED_CASES = [c for c in CASES if c.id != "hmac-github"]  # github signs no timestamp
# Ways to break a good signature header value; every one must be a plain SignatureInvalid.
MALFORMED: dict[str, Callable[[str], str]] = {
    "empty": lambda v: "",
    "blank": lambda v: "   ",
    "9000-chars": lambda v: "x" * 9000,
    "good-plus-9000-chars": lambda v: v + " " + "A" * 9000,
    "non-ascii-suffix": lambda v: v + "\u00e9",
    "latin1-bytes": lambda v: "\u00ff" * 16,
    "nul-bytes": lambda v: "\x00\x00\x00",
    "prose": lambda v: "not a signature",
    "truncated": lambda v: v[:-3],
    "bad-character": lambda v: v[:-2] + "!" + v[-1],
    "reversed": lambda v: v[::-1],
    "40-copies-space": lambda v: " ".join([v] * 40),
    "40-copies-comma": lambda v: ",".join([v] * 40),
    "newline-inside": lambda v: v[: len(v) // 2] + "\n" + v[len(v) // 2 :],
    "comma": lambda v: ",",
    "equals": lambda v: "=",
    "v1-empty": lambda v: "v1,",
    "stripe-empty": lambda v: "t=,v1=",
    "prefix-only": lambda v: "sha256=",
}
BODY = b'{"id":"c0ea4d5b","status":"completed","result_urls":["https://cdn.example/a.jpg"]}'


def signature_part(value: str) -> str:
    """The signature bytes' text inside a header value, to check it is never echoed."""
    return value.rsplit(",", 1)[-1].rsplit("=", 1)[-1] if "," in value else value[-40:]


async def assert_invalid(
    case: Case,
    verifier: Verifier,
    headers: Mapping[str, str],
    body: bytes = BODY,
    now: float = NOW,
) -> str:
    """Verification fails with exactly SignatureInvalid, and the message leaks nothing."""
    with pytest.raises(SignatureInvalid) as caught:
        await verifier.verify(headers, body, now=now)
    assert type(caught.value) is SignatureInvalid
    message = str(caught.value)
    assert message == caught.value.message and message
    good = case.sign(0, NOW, body)
    secrets_and_sigs = [*case.leaks, *case.secrets, signature_part(good[case.signature_header])]
    for secret in secrets_and_sigs:
        assert len(secret) < 8 or secret not in message, f"{case.id} leaked a value: {message}"
    return message


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
class TestConformance:
    async def test_good_signature_passes(self, case: Case) -> None:
        verified = await case.verifier().verify(lower(case.sign(0, NOW, BODY)), BODY, now=NOW)
        assert verified.scheme == case.settings["scheme"]
        assert verified.message_id == case.message_id
        assert verified.timestamp == (NOW if case in TIMED_CASES else None)

    async def test_starlette_headers_and_mixed_case_dicts_work(self, case: Case) -> None:
        headers = case.sign(0, NOW, BODY)  # canonical mixed-case names
        verifier = case.verifier()
        await verifier.verify(Headers(headers=headers), BODY, now=NOW)
        await verifier.verify(headers, BODY, now=NOW)
        await verifier.verify({k.upper(): v for k, v in headers.items()}, BODY, now=NOW)

    async def test_now_defaults_to_the_wall_clock(self, case: Case) -> None:
        ts = int(time.time())
        await case.verifier().verify(lower(case.sign(0, ts, BODY)), BODY)

    async def test_tampered_body_fails(self, case: Case) -> None:
        headers = lower(case.sign(0, NOW, BODY))
        message = await assert_invalid(case, case.verifier(), headers, BODY.replace(b"a", b"b"))
        assert "no signature matched" in message
        await assert_invalid(case, case.verifier(), headers, BODY + b" ")
        await assert_invalid(case, case.verifier(), headers, b"")

    async def test_each_required_header_missing_fails(self, case: Case) -> None:
        verifier = case.verifier()
        for name in case.required:
            headers = {k: v for k, v in lower(case.sign(0, NOW, BODY)).items() if k != name.lower()}
            message = await assert_invalid(case, verifier, headers)
            assert name.lower() in message.lower() and "missing" in message

    async def test_rotated_secret_passes(self, case: Case) -> None:
        await case.verifier().verify(lower(case.sign(1, NOW, BODY)), BODY, now=NOW)

    async def test_unknown_secret_fails(self, case: Case) -> None:
        await assert_invalid(case, case.verifier(), lower(case.sign(2, NOW, BODY)))

    @pytest.mark.parametrize("malform", MALFORMED.values(), ids=MALFORMED.keys())
    async def test_malformed_signature_header_fails(
        self, case: Case, malform: Callable[[str], str]
    ) -> None:
        headers = lower(case.sign(0, NOW, BODY))
        name = case.signature_header.lower()
        headers[name] = malform(headers[name])
        await assert_invalid(case, case.verifier(), headers)


@pytest.mark.parametrize("case", TIMED_CASES, ids=lambda c: c.id)
class TestTimestampConformance:
    @pytest.mark.parametrize("offset", [-301, 301, -3600, 10**9])
    async def test_timestamp_outside_the_window_fails(self, case: Case, offset: int) -> None:
        headers = lower(case.sign(0, NOW + offset, BODY))
        message = await assert_invalid(case, case.verifier(), headers)
        assert "outside the 300 s window" in message

    @pytest.mark.parametrize("offset", [-300, 0, 300])
    async def test_timestamp_at_the_window_edge_passes(self, case: Case, offset: int) -> None:
        await case.verifier().verify(lower(case.sign(0, NOW + offset, BODY)), BODY, now=NOW)

    @pytest.mark.parametrize(
        "bad_ts",
        [
            "hello",
            "",
            " ",
            "-1",
            "1e9",
            "1800000000.5",
            "\uff11\uff18" + "\uff10" * 8,  # fullwidth digits: str.isdigit() says yes
            "9" * 20,
            "0x6B49D200",
            "+1800000000",
            "1800000000\x00",
            "1800000000000",
            "18 00000000",
        ],
    )
    async def test_malformed_timestamp_fails(self, case: Case, bad_ts: str) -> None:
        headers = lower(case.sign(0, NOW, BODY))
        if case.timestamp_header is not None:
            headers[case.timestamp_header.lower()] = bad_ts
        else:  # stripe carries it inside its signature header
            headers["stripe-signature"] = headers["stripe-signature"].replace(
                f"t={NOW}", f"t={bad_ts}"
            )
        await assert_invalid(case, case.verifier(), headers)


# ============================================================ the published vectors, verbatim


async def test_standard_webhooks_published_sign_vector() -> None:
    verifier = build_verifier({"scheme": "standard-webhooks"}, [SW_SECRET])
    headers = verifier.sign(SW_PAYLOAD, now=SW_TIMESTAMP, message_id=SW_MSG_ID)
    assert headers == {
        "webhook-id": SW_MSG_ID,
        "webhook-timestamp": str(SW_TIMESTAMP),
        "webhook-signature": SW_SIGNATURE,
    }
    verified = await verifier.verify(headers, SW_PAYLOAD, now=SW_TIMESTAMP)
    assert verified == Verified("standard-webhooks", SW_MSG_ID, SW_TIMESTAMP)


@pytest.mark.parametrize("secret", [SW_SECRET, SW_SECRET.removeprefix("whsec_")])
@pytest.mark.parametrize("names", ["webhook", "svix"])
async def test_standard_webhooks_published_vector_verifies(secret: str, names: str) -> None:
    # test_signature_verification_with_and_without_prefix, and the svix-* names from svix's tests
    headers = {
        f"{names}-id": SW_MSG_ID,
        f"{names}-timestamp": str(SW_TIMESTAMP),
        f"{names}-signature": SW_SIGNATURE,
    }
    verifier = build_verifier({"scheme": "standard-webhooks"}, [secret])
    assert (await verifier.verify(headers, SW_PAYLOAD, now=SW_TIMESTAMP)).message_id == SW_MSG_ID


async def test_standard_webhooks_published_invalid_and_multi_signatures() -> None:
    verifier = build_verifier({"scheme": "standard-webhooks"}, [SW_SECRET])
    base = {"webhook-id": SW_MSG_ID, "webhook-timestamp": str(SW_TIMESTAMP)}
    with pytest.raises(SignatureInvalid):
        await verifier.verify(
            {**base, "webhook-signature": SW_INVALID_SIGNATURE}, SW_PAYLOAD, now=SW_TIMESTAMP
        )
    multi = " ".join([SW_DECOYS[0], SW_DECOYS[1], SW_SIGNATURE, SW_DECOYS[0]])
    await verifier.verify({**base, "webhook-signature": multi}, SW_PAYLOAD, now=SW_TIMESTAMP)
    with pytest.raises(SignatureInvalid):
        await verifier.verify(
            {**base, "webhook-signature": " ".join(SW_DECOYS)}, SW_PAYLOAD, now=SW_TIMESTAMP
        )
    # the published "hello" timestamp (test_invalid_timestamp_raises_error)
    with pytest.raises(SignatureInvalid):
        await verifier.verify(
            {**base, "webhook-timestamp": "hello", "webhook-signature": SW_SIGNATURE},
            SW_PAYLOAD,
            now=SW_TIMESTAMP,
        )


async def test_standard_webhooks_published_v1a_vector() -> None:
    seed = base64.b64decode(SW_V1A_SEED_B64)
    public = "whpk_" + b64(raw_public(Ed25519PrivateKey.from_private_bytes(seed)))
    headers = {
        "webhook-id": SW_MSG_ID,
        "webhook-timestamp": str(SW_TIMESTAMP),
        "webhook-signature": SW_V1A_SIGNATURE,
    }
    verifier = build_verifier({"scheme": "standard-webhooks"}, [SW_SECRET, public])
    assert (await verifier.verify(headers, SW_PAYLOAD, now=SW_TIMESTAMP)).timestamp == SW_TIMESTAMP
    with pytest.raises(SignatureInvalid):
        await verifier.verify(headers, SW_PAYLOAD + b" ", now=SW_TIMESTAMP)
    # the Go test's "partial signature is invalid"
    with pytest.raises(SignatureInvalid):
        await verifier.verify(
            {**headers, "webhook-signature": "v1a,"}, SW_PAYLOAD, now=SW_TIMESTAMP
        )


async def test_github_published_vector() -> None:
    verifier = build_verifier(GITHUB_SETTINGS, [GITHUB_SECRET])
    assert verifier.sign(GITHUB_PAYLOAD) == {"X-Hub-Signature-256": GITHUB_SIGNATURE}
    verified = await verifier.verify({"x-hub-signature-256": GITHUB_SIGNATURE}, GITHUB_PAYLOAD)
    assert verified == Verified("hmac", None, None)
    upper = "sha256=" + GITHUB_SIGNATURE.removeprefix("sha256=").upper()  # hex case-insensitive
    await verifier.verify({"x-hub-signature-256": upper}, GITHUB_PAYLOAD)


async def test_stripe_python_fixture_cases() -> None:
    # Mirrors stripe-python TestWebhookSignature, with its fixture inputs.
    verifier = build_verifier({"scheme": "stripe"}, [STRIPE_SECRET], tolerance_s=10)
    good = stripe_header(STRIPE_SECRET, NOW, STRIPE_PAYLOAD)
    verified = await verifier.verify({"stripe-signature": good}, STRIPE_PAYLOAD, now=NOW)
    assert verified == Verified("stripe", None, NOW)
    # test_header_contains_valid_signature
    await verifier.verify({"stripe-signature": good + ",v1=bad_signature"}, STRIPE_PAYLOAD, now=NOW)
    await verifier.verify(
        {"stripe-signature": good + ",v0=6ffbb59b2300aae63f27240"}, STRIPE_PAYLOAD, now=NOW
    )
    bad = [
        "bad_header",  # test_raise_on_invalid_header
        "i'm not even a real signature header",  # test_raise_on_malformed_header
        stripe_header(STRIPE_SECRET, NOW, STRIPE_PAYLOAD, scheme="v0"),  # no v1
        f"t={NOW},v1=bad_signature",  # test_raise_on_no_valid_signatures_for_payload
        stripe_header(STRIPE_SECRET, NOW - 15, STRIPE_PAYLOAD),  # outside tolerance=10
        good + f",t={NOW}",  # two timestamps: which one was signed?
    ]
    for header in bad:
        with pytest.raises(SignatureInvalid):
            await verifier.verify({"stripe-signature": header}, STRIPE_PAYLOAD, now=NOW)


def test_rfc8032_vectors_are_what_cryptography_computes() -> None:
    # Pins the Ed25519 building block the v1a and fal verifiers rely on.
    for seed, public, message, signature in RFC8032:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
        assert raw_public(key).hex() == public
        assert key.sign(bytes.fromhex(message)).hex() == signature
    assert b64url(bytes.fromhex(RFC8032[0][1])) == RFC8037_X


async def test_fal_with_the_rfc8037_jwk() -> None:
    verifier = build_verifier(
        {"scheme": "fal", "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}]}},
        [],
    )
    test1 = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[0][0]))
    test2 = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[1][0]))
    verified = await verifier.verify(fal_headers(test1, NOW, BODY), BODY, now=NOW)
    assert verified == Verified("fal", FAL_REQUEST_ID, NOW)
    with pytest.raises(SignatureInvalid):
        await verifier.verify(fal_headers(test2, NOW, BODY), BODY, now=NOW)


async def test_standard_webhooks_v1a_with_rfc8032_public_key() -> None:
    test1 = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[0][0]))
    whpk = "whpk_" + b64(bytes.fromhex(RFC8032[0][1]))
    verifier = build_verifier({"scheme": "standard-webhooks"}, [whpk])
    await verifier.verify(sw_ed25519_headers(test1, NOW, BODY), BODY, now=NOW)


# ============================================================ scheme details


@pytest.mark.parametrize(
    "settings",
    [
        {"scheme": "standard-webhooks"},
        {"scheme": "stripe"},
        {"scheme": "stripe", "header": "X-Custom-Signature"},
        RENDERGRID_PRESET,
        GITHUB_SETTINGS,
        {
            "scheme": "hmac",
            "header": "X-Sig",
            "algorithm": "HMAC-SHA512",
            "encoding": "base64",
            "template": "{id}:{timestamp}:{body}",
            "timestamp_header": "X-Ts",
            "id_header": "X-Id",
        },
        {"scheme": "hmac", "header": "X-Sig", "algorithm": "sha1", "prefix": "v1,"},
        {"scheme": "none"},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values())[:40],
)
async def test_sign_round_trips(settings: dict[str, Any]) -> None:
    secrets = [SW_SECRET] if settings["scheme"] == "standard-webhooks" else ["s3cret-value"]
    verifier = build_verifier(settings, secrets)
    headers = verifier.sign(BODY, now=NOW, message_id="msg_fixed")
    verified = await verifier.verify(lower(headers), BODY, now=NOW)
    assert verified.scheme == settings["scheme"]
    if settings["scheme"] == "standard-webhooks":
        assert verified.message_id == "msg_fixed"
    if settings["scheme"] != "none":
        with pytest.raises(SignatureInvalid):
            await verifier.verify(lower(headers), BODY + b"x", now=NOW)


def test_sign_makes_a_fresh_message_id_and_uses_the_clock() -> None:
    verifier = build_verifier({"scheme": "standard-webhooks"}, [SW_SECRET])
    first, second = verifier.sign(BODY), verifier.sign(BODY)
    assert first["webhook-id"].startswith("msg_") and first["webhook-id"] != second["webhook-id"]
    assert abs(int(first["webhook-timestamp"]) - time.time()) < 5


def test_sign_refuses_what_cannot_sign() -> None:
    whpk_first = build_verifier({"scheme": "standard-webhooks"}, [WHPK[0], SW_SECRET])
    with pytest.raises(ConfigError, match="whpk_"):
        whpk_first.sign(BODY)
    fal = build_verifier({"scheme": "fal", "jwks": {"keys": [jwk(ED_KEYS[0])]}}, [])
    with pytest.raises(ConfigError, match="fal"):
        fal.sign(BODY)
    assert build_verifier({"scheme": "none"}, []).sign(BODY) == {}


async def test_none_accepts_anything() -> None:
    verifier = build_verifier({"scheme": "none"}, [])
    assert await verifier.verify({}, b"anything") == Verified("none", None, None)


async def test_standard_webhooks_mixed_whsec_and_whpk() -> None:
    verifier = build_verifier({"scheme": "standard-webhooks"}, [WHPK[0], WHSEC[1]])
    await verifier.verify(sw_ed25519_headers(ED_KEYS[0], NOW, BODY), BODY, now=NOW)
    await verifier.verify(sw_hmac_headers(WHSEC[1], NOW, BODY), BODY, now=NOW)
    # a v1a signature never matches as v1 and the other way round
    swapped = sw_hmac_headers(WHSEC[1], NOW, BODY)
    swapped["webhook-signature"] = swapped["webhook-signature"].replace("v1,", "v1a,")
    with pytest.raises(SignatureInvalid):
        await verifier.verify(swapped, BODY, now=NOW)


async def test_standard_webhooks_too_many_signatures() -> None:
    verifier = build_verifier({"scheme": "standard-webhooks"}, [SW_SECRET])
    good = sw_hmac_headers(SW_SECRET, NOW, BODY)
    many = dict(
        good, **{"webhook-signature": " ".join([SW_DECOYS[0]] * 31 + [good["webhook-signature"]])}
    )
    await verifier.verify(many, BODY, now=NOW)  # 32 entries are fine
    too_many = dict(
        good, **{"webhook-signature": " ".join([SW_DECOYS[0]] * 32 + [good["webhook-signature"]])}
    )
    with pytest.raises(SignatureInvalid, match="more than 32"):
        await verifier.verify(too_many, BODY, now=NOW)


async def test_hmac_header_lists() -> None:
    verifier = build_verifier(GITHUB_SETTINGS, [GITHUB_SECRET])
    wrong = "sha256=" + "00" * 32
    for value in (
        f"{wrong}, {GITHUB_SIGNATURE}",
        f"{wrong} {GITHUB_SIGNATURE}",
        f"{GITHUB_SIGNATURE},{wrong}",
    ):
        await verifier.verify({"x-hub-signature-256": value}, GITHUB_PAYLOAD)
    for value in (
        wrong,
        GITHUB_SIGNATURE.removeprefix("sha256="),  # prefix is required
        "sha1=" + GITHUB_SIGNATURE.removeprefix("sha256="),
    ):
        with pytest.raises(SignatureInvalid):
            await verifier.verify({"x-hub-signature-256": value}, GITHUB_PAYLOAD)


async def test_hmac_without_prefix_and_base64() -> None:
    secret = "plain"
    digest = hmac.new(secret.encode(), BODY, hashlib.sha512).digest()
    verifier = build_verifier(
        {"scheme": "hmac", "header": "X-Sig", "algorithm": "sha512", "encoding": "base64"},
        [secret],
    )
    await verifier.verify({"x-sig": b64(digest)}, BODY)
    await verifier.verify({"x-sig": "AAAA " + b64(digest)}, BODY)
    await verifier.verify({"x-sig": base64.urlsafe_b64encode(digest).decode()}, BODY)
    with pytest.raises(SignatureInvalid):
        await verifier.verify({"x-sig": digest.hex()}, BODY)


async def test_fal_signature_must_be_64_bytes_of_hex() -> None:
    case = _fal_case()
    headers = lower(case.sign(0, NOW, BODY))
    for bad in (headers["x-fal-webhook-signature"][:-2], "zz" * 64, b64(b"x" * 64)):
        message = await assert_invalid(
            case, case.verifier(), {**headers, "x-fal-webhook-signature": bad}
        )
        assert "X-Fal-Webhook-Signature" in message


# ============================================================ build_verifier config errors

GOOD_JWK = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}


@pytest.mark.parametrize(
    ("settings", "secrets", "key"),
    [
        ({}, ["s"], "scheme"),
        ({"scheme": "rot13"}, ["s"], "scheme"),
        ({"scheme": 5}, ["s"], "scheme"),
        ({"scheme": "standard-webhooks", "header": "X"}, [SW_SECRET], "header"),
        ({"scheme": "stripe", "tolerance": 5}, ["s"], "tolerance"),
        ({"scheme": "stripe", "header": 7}, ["s"], "header"),
        ({"scheme": "hmac"}, ["s"], "header"),
        ({"scheme": "hmac", "header": "  "}, ["s"], "header"),
        ({"scheme": "hmac", "header": "X", "colour": "red"}, ["s"], "colour"),
        ({"scheme": "hmac", "header": "X", "algorithm": "md5"}, ["s"], "algorithm"),
        ({"scheme": "hmac", "header": "X", "algorithm": 256}, ["s"], "algorithm"),
        ({"scheme": "hmac", "header": "X", "encoding": "base32"}, ["s"], "encoding"),
        ({"scheme": "hmac", "header": "X", "prefix": None}, ["s"], "prefix"),
        (
            {"scheme": "hmac", "header": "X", "template": "{timestamp}.{body}"},
            ["s"],
            "timestamp_header",
        ),
        ({"scheme": "hmac", "header": "X", "template": "{id}.{body}"}, ["s"], "id_header"),
        ({"scheme": "hmac", "header": "X", "template": "{nonce}.{body}"}, ["s"], "template"),
        (
            {"scheme": "hmac", "header": "X", "template": "{timestamp}", "timestamp_header": "T"},
            ["s"],
            "template",
        ),
        ({"scheme": "hmac", "header": "X", "template": "{body!r}"}, ["s"], "template"),
        ({"scheme": "hmac", "header": "X", "template": "{body"}, ["s"], "template"),
        ({"scheme": "hmac", "header": "X"}, [], "secrets"),
        ({"scheme": "hmac", "header": "X"}, [""], "secrets"),
        ({"scheme": "stripe"}, [], "secrets"),
        ({"scheme": "standard-webhooks"}, [], "secrets"),
        ({"scheme": "standard-webhooks"}, ["whsec_not*base64!"], "secrets[0]"),
        ({"scheme": "standard-webhooks"}, [SW_SECRET, "whsec_"], "secrets[1]"),
        ({"scheme": "standard-webhooks"}, ["whpk_" + b64(b"short")], "secrets[0]"),
        ({"scheme": "standard-webhooks"}, ["whsk_" + SW_V1A_SEED_B64], "secrets[0]"),
        ({"scheme": "standard-webhooks"}, ["whsec_" + b64url(b"\xfb\xff" * 16)], "secrets[0]"),
        ({"scheme": "fal"}, [], "jwks_url"),
        ({"scheme": "fal", "jwks_url": "https://x/jwks", "jwks": {"keys": [GOOD_JWK]}}, [], "jwks"),
        ({"scheme": "fal", "jwks_url": "ftp://x/jwks"}, [], "jwks_url"),
        ({"scheme": "fal", "jwks_url": 5}, [], "jwks_url"),
        ({"scheme": "fal", "jwks": {"keys": []}}, [], "jwks"),
        ({"scheme": "fal", "jwks": []}, [], "jwks"),
        ({"scheme": "fal", "jwks": {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}}, [], "jwks"),
        ({"scheme": "fal", "jwks": {"keys": [{**GOOD_JWK, "x": RFC8037_X[:-4]}]}}, [], "jwks"),
        ({"scheme": "fal", "jwks": {"keys": [{**GOOD_JWK, "x": "not base64url!"}]}}, [], "jwks"),
        ({"scheme": "fal", "jwks": {"keys": [GOOD_JWK, "x"]}}, [], "jwks"),
        ({"scheme": "fal", "jwks": {"keys": [GOOD_JWK]}, "header": "X"}, [], "header"),
        ({"scheme": "none", "header": "X"}, [], "header"),
    ],
)
def test_config_errors_name_the_key(settings: dict[str, Any], secrets: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_verifier(settings, secrets, where="sources.acme.signature")
    assert type(caught.value) is ConfigError
    message = str(caught.value)
    assert message.startswith("sources.acme.signature")
    assert key in message
    for secret in secrets:
        assert len(secret) < 8 or secret.removeprefix("whsec_") not in message


@pytest.mark.parametrize("tolerance", [0, -5, float("nan"), True])
def test_config_error_for_bad_tolerance(tolerance: float) -> None:
    with pytest.raises(ConfigError, match="tolerance_s"):
        build_verifier({"scheme": "stripe"}, ["s"], tolerance)


def test_schemes_are_the_documented_ones() -> None:
    assert SCHEMES == ("standard-webhooks", "stripe", "hmac", "fal", "none")


def test_algorithm_spellings_are_normalised() -> None:
    for spelling in (
        "sha256",
        "SHA256",
        "hmac-sha256",
        "HMAC-SHA256",
        "sha-256",
        "HMAC-SHA1",
        "sha512",
    ):
        build_verifier({"scheme": "hmac", "header": "X", "algorithm": spelling}, ["s"])


# ============================================================ fal with a jwks_url


class FakeJwks:
    """A JWKS endpoint behind httpx.MockTransport that counts its requests."""

    url = "https://rest.alpha.fal.ai/.well-known/jwks.json"

    def __init__(self, *keys: Ed25519PrivateKey) -> None:
        self.keys = list(keys)
        self.requests = 0
        self.answer: Callable[[], httpx.Response] | None = None  # override to fail

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert str(request.url) == self.url
        if self.answer is not None:
            return self.answer()
        return httpx.Response(200, json={"keys": [jwk(k) for k in self.keys]})

    def factory(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    def verifier(self) -> Verifier:
        return build_verifier(
            {"scheme": "fal", "jwks_url": self.url}, [], http_client_factory=self.factory
        )


async def fal_verify(verifier: Verifier, key: Ed25519PrivateKey, now: int) -> Verified:
    return await verifier.verify(fal_headers(key, now, BODY), BODY, now=now)


async def test_jwks_is_fetched_lazily_and_cached_for_an_hour() -> None:
    server = FakeJwks(ED_KEYS[0])
    verifier = server.verifier()
    assert server.requests == 0  # building the verifier does no I/O
    await fal_verify(verifier, ED_KEYS[0], NOW)
    await fal_verify(verifier, ED_KEYS[0], NOW + 10)
    await fal_verify(verifier, ED_KEYS[0], NOW + 3599)
    assert server.requests == 1
    await fal_verify(verifier, ED_KEYS[0], NOW + 3601)
    assert server.requests == 2


async def test_unknown_key_triggers_exactly_one_rate_limited_refetch() -> None:
    server = FakeJwks(ED_KEYS[0])
    verifier = server.verifier()
    await fal_verify(verifier, ED_KEYS[0], NOW)
    server.keys.append(ED_KEYS[1])  # fal rotates in a new key
    with pytest.raises(SignatureInvalid):  # within 60 s of the last fetch: no refetch yet
        await fal_verify(verifier, ED_KEYS[1], NOW + 30)
    assert server.requests == 1
    assert (await fal_verify(verifier, ED_KEYS[1], NOW + 61)).scheme == "fal"
    assert server.requests == 2
    with pytest.raises(SignatureInvalid, match="no signature matched"):
        await fal_verify(verifier, ED_KEYS[2], NOW + 62)  # foreign key, refetch rate-limited
    assert server.requests == 2
    with pytest.raises(SignatureInvalid, match="no signature matched"):
        await fal_verify(verifier, ED_KEYS[2], NOW + 130)  # one refetch, not a loop
    assert server.requests == 3
    await fal_verify(verifier, ED_KEYS[0], NOW + 131)
    assert server.requests == 3


async def test_concurrent_first_requests_share_one_fetch() -> None:
    server = FakeJwks(ED_KEYS[0])
    verifier = server.verifier()
    await asyncio.gather(*(fal_verify(verifier, ED_KEYS[0], NOW) for _ in range(5)))
    assert server.requests == 1


def _raise_connect_error() -> httpx.Response:
    raise httpx.ConnectError("connection refused")


@pytest.mark.parametrize(
    "answer",
    [
        lambda: httpx.Response(503),
        lambda: httpx.Response(404, json={"detail": "not found"}),
        lambda: httpx.Response(200, content=b"<html>not json</html>"),
        lambda: httpx.Response(200, json=["not", "a", "jwks"]),
        lambda: httpx.Response(200, json={"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}),
        lambda: httpx.Response(200, json={"keys": [{"kty": "OKP", "crv": "Ed25519", "x": 5}]}),
        lambda: httpx.Response(200, content=json.dumps({"keys": [], "pad": "x" * 70000})),
        _raise_connect_error,
    ],
    ids=["503", "404", "html", "list", "rsa-only", "bad-x", "huge", "connect-error"],
)
async def test_fetch_failure_is_signature_invalid(answer: Callable[[], httpx.Response]) -> None:
    server = FakeJwks(ED_KEYS[0])
    server.answer = answer
    with pytest.raises(SignatureInvalid) as caught:
        await fal_verify(server.verifier(), ED_KEYS[0], NOW)
    assert type(caught.value) is SignatureInvalid
    assert str(caught.value) == "could not fetch the signing keys from the configured jwks_url"


async def test_fetched_jwks_skips_keys_it_cannot_use() -> None:
    server = FakeJwks()
    server.answer = lambda: httpx.Response(
        200,
        json={
            "keys": [
                {"kty": "RSA", "n": "x", "e": "AQAB"},
                {"kty": "OKP", "crv": "X25519", "x": RFC8037_X},
                jwk(ED_KEYS[0]),
            ]
        },
    )
    await fal_verify(server.verifier(), ED_KEYS[0], NOW)


async def test_stale_keys_are_kept_when_a_refresh_fails() -> None:
    server = FakeJwks(ED_KEYS[0])
    verifier = server.verifier()
    await fal_verify(verifier, ED_KEYS[0], NOW)
    server.answer = lambda: httpx.Response(503)
    await fal_verify(verifier, ED_KEYS[0], NOW + 3601)  # refresh failed, stale keys still work
    await fal_verify(verifier, ED_KEYS[0], NOW + 3602)  # and the failure is not retried at once
    assert server.requests == 2
    server.answer = None
    await fal_verify(verifier, ED_KEYS[0], NOW + 3662)
    assert server.requests == 3


async def test_fal_header_errors_come_before_any_fetch() -> None:
    server = FakeJwks(ED_KEYS[0])
    headers = fal_headers(ED_KEYS[0], NOW, BODY)
    del headers["X-Fal-Webhook-User-Id"]
    with pytest.raises(SignatureInvalid, match="X-Fal-Webhook-User-Id"):
        await server.verifier().verify(headers, BODY, now=NOW)
    stale = fal_headers(ED_KEYS[0], NOW - 400, BODY)
    with pytest.raises(SignatureInvalid, match="window"):
        await server.verifier().verify(stale, BODY, now=NOW)
    assert server.requests == 0


_STRICT_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(alphabet="0123456789abcdefABCDEFgG \t,=", max_size=12),
    st.text(max_size=12),
    st.binary(min_size=1, max_size=6).map(bytes.hex),
))
def test_a_hex_signature_is_decoded_only_when_it_is_pairs_of_hex_digits(token: str) -> None:
    # The fast decoder (isalnum + fromhex) must mean exactly the strict pattern: fromhex alone
    # would skip the spaces in "ab cd".
    expected = bytes.fromhex(token) if _STRICT_HEX.fullmatch(token) else None
    assert signing._hexdecode(token) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300),  # longer than a block (64 / 128 bytes): HMAC hashes the key first
    st.lists(st.binary(max_size=400), min_size=1, max_size=3),
    st.sampled_from(["sha1", "sha256", "sha512"]),
)
def test_a_keyed_mac_is_the_hmac_of_each_message(
    key: bytes, messages: list[bytes], algorithm: str
) -> None:
    # The key schedule is computed once and copied per message: every message, in any order,
    # must still get the plain HMAC (a state that leaked from one message would show here).
    mac = signing.KeyedMac(key, algorithm)
    for message in messages:
        assert mac.digest(message) == hmac.digest(key, message, algorithm)


_QUICK_LAYOUTS = [
    {"scheme": "hmac", "header": "X-Webhook-Signature-256", "prefix": "sha256=",
     "encoding": "hex", "template": "{timestamp}.{body}", "timestamp_header": "X-Timestamp"},
    {"scheme": "hmac", "header": "X-Sig", "prefix": "v1,", "encoding": "base64",
     "algorithm": "sha512", "template": "{id}.{timestamp}.{body}",
     "timestamp_header": "X-Ts", "id_header": "X-Id"},
    {"scheme": "hmac", "header": "X-Hub-Signature", "prefix": "sha1=", "encoding": "hex",
     "algorithm": "sha1"},
]
_EDITS = st.sampled_from(["keep", "pad", "upper", "lower", "drop", "junk", "flip", "digits",
                          "twice"])


def _edited(value: str, edit: str, junk: str, digits: int) -> str | None:
    return {
        "keep": value, "pad": f" {value}\t", "upper": value.upper(), "lower": value.lower(),
        "drop": None, "junk": junk, "flip": value[:-1] + ("A" if value[-1:] != "A" else "B"),
        "digits": str(digits), "twice": f"{value}, {value}",
    }[edit]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(range(len(_QUICK_LAYOUTS))),
    st.lists(_EDITS, min_size=3, max_size=3),
    st.text(max_size=12),
    st.integers(0, 10**13),
    st.integers(-400, 400),
)
async def test_the_quick_hmac_check_accepts_only_what_the_full_check_accepts(
    layout: int, edits: list[str], junk: str, digits: int, skew: int
) -> None:
    verifier = build_verifier(_QUICK_LAYOUTS[layout], ["k-one", "k-two"], 300, where="t")
    assert isinstance(verifier, signing.HmacVerifier)
    body = b'{"id":"c-1","status":"completed"}'
    signed = {k.lower(): v for k, v in verifier.sign(body, now=NOW, message_id="m-1").items()}
    # A request as sent: the quick path must take it (else it would never apply).
    timestamp = NOW if "timestamp_header" in _QUICK_LAYOUTS[layout] else None
    assert verifier._quick(signed, body, NOW) == Verified("hmac", None, timestamp)
    headers: dict[str, str] = {}
    for (name, value), edit in zip(signed.items(), edits, strict=False):
        edited = _edited(value, edit, junk, digits)
        if edited is not None:
            headers[name] = edited
    quick = verifier._quick(headers, body, NOW + skew)
    try:
        full: Verified | None = verifier._checked(headers, body, NOW + skew)
    except SignatureInvalid:
        full = None
    if quick is not None:
        assert quick == full


_STRICT_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=14), st.integers(0, 10**14).map(str)))
def test_a_timestamp_is_read_only_when_it_is_one_to_twelve_ascii_digits(value: str) -> None:
    if _STRICT_TIMESTAMP.fullmatch(value):
        assert signing._timestamp(value, "X-Timestamp") == int(value)
    else:
        with pytest.raises(SignatureInvalid, match="not a unix timestamp"):
            signing._timestamp(value, "X-Timestamp")


def test_a_header_with_several_signatures_or_odd_whitespace_still_verifies() -> None:
    v = build_verifier({"scheme": "hmac", "header": "X-Sig", "prefix": "sha256=",
                        "encoding": "hex"}, ["k-one", "k-two"], 300, where="t")
    body = b'{"a":1}'
    good = hmac.new(b"k-two", body, hashlib.sha256).hexdigest()
    for value in (f"sha256={good}", f"sha256=00, sha256={good}", f"SHA256={good}\t",
                  f"sha256=ab\fcd,sha256={good}"):
        asyncio.run(v.verify({"x-sig": value}, body))
    for value in (f"sha256={good[:10]} {good[10:]}", f"sha256={good}x", "sha256=" + "0" * 64):
        with pytest.raises(SignatureInvalid):
            asyncio.run(v.verify({"x-sig": value}, body))
