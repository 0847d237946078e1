"""Bad input, property-based: random and malformed headers and bodies against every signature
verifier and against `POST /hooks/{source}`, junk and hostile numbers in admin API bodies, and
providers' status answers with hostile values in them.

What must hold (DESIGN.md, "Signature schemes" and the `POST /hooks/{source}` table):

* a verifier, whatever the headers and body, either verifies or raises `SignatureInvalid` —
  never any other exception — and never verifies a signature it did not make;
* the endpoint answers a 4xx to anything unsigned or wrongly signed (never a 5xx, never a 2xx)
  and stores nothing for it;
* a body signed with the source's real secret but not what the adapter expects answers
  200 (stored, `webhook.unrecognized` / `webhook.received` / a generation event) or
  400 `payload_invalid` — never a 5xx;
* an admin API body of junk or with a number no double holds is a 4xx naming the problem or
  accepted, never a 5xx, and nothing stored makes a later list fail;
* a status answer (each provider's recorded answers with NaN, 1e400, a lone surrogate, deep
  nesting, … put anywhere in them, or junk) reads as running, done or not found, never an
  exception, and an event made of it is strict JSON that the store takes and the API shows;
* transport-level abuse of a real `hookyard serve` (giant and duplicate headers, bodies just over
  the cap with and without Content-Length, chunked, invalid bytes in header values, a body cut
  off mid-way, random bytes on the socket) gets a 4xx or a closed connection, never a 5xx, and
  the server still answers /healthz and takes a valid webhook afterwards.

The bulk runs against the app in-process (fast); the transport cases need a real server. Every
input tried is counted; the counts are printed at the end of the module (pytest's terminal) and,
when HOOKYARD_BAD_INPUT_COUNTS names a file, written there as JSON. The numbers and the command
are in bench/RESULTS.md, "Bad input".

Hypothesis runs derandomized (fixed examples, stable in CI), with no example database.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handlers import providers
from handlers.providers.base import DONE, NOT_FOUND, RUNNING, PollContext
from receiver import settings as settings_mod
from receiver.core import signing
from receiver.core.errors import SignatureInvalid
from tests.support import (
    RENDERFUL_SECRET,
    RENDERGRID_SECRET,
    WHSEC,
    Server,
    app_client,
    fal_headers,
    write_config,
)

EXAMPLES = int(os.environ.get("HOOKYARD_BAD_INPUT_EXAMPLES", "500"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)

COUNTS: collections.Counter[str] = collections.Counter()

# ---------------------------------------------------------------- keys and the config

FAL_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
FAL_X = base64.urlsafe_b64encode(FAL_PRIVATE.public_key().public_bytes_raw()).decode().rstrip("=")
SW_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
WHPK = "whpk_" + base64.b64encode(SW_PRIVATE.public_key().public_bytes_raw()).decode()
STRIPE_SECRET = "whsec_stripe_test_0123456789"
GITHUB_SECRET = "github-test-secret-abc"
ADMIN_TOKEN = "bad-input-admin-token-0123456789"
CAP = 64 * 1024  # max_body_bytes of every server here: "just over the cap" stays cheap

CONFIG = """
[server]
database = "sqlite:///{db}"
max_body_bytes = {max_body_bytes}
admin_token = "{admin_token}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{rendergrid_secret}"]
api_key = "rg-bad-input-api-key-0123"   # so POST /v1/jobs can watch (and store) jobs
base_url = "http://127.0.0.1:9"         # never polled within the tests; never the internet

[sources.renderful]
provider = "renderful"
secrets = ["{renderful_secret}"]
signature = {{ header = "X-Renderful-Signature" }}

[sources.replicate]
provider = "generic"
signature = {{ scheme = "standard-webhooks" }}
secrets = ["{whsec}", "{whpk}"]

[sources.stripe]
provider = "generic"
signature = {{ scheme = "stripe" }}
secrets = ["{stripe}"]

[sources.github]
provider = "generic"
secrets = ["{github}"]

[sources.github.signature]
scheme = "hmac"
header = "X-Hub-Signature-256"
prefix = "sha256="
template = "{{body}}"

[sources.fal]
provider = "generic"

[sources.fal.signature]
scheme = "fal"
jwks = {{ keys = [{{ kty = "OKP", crv = "Ed25519", x = "{fal_x}" }}] }}

[sinks.log]
type = "jsonl"
path = "{jsonl}"

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["log"]
"""

SOURCES = ("rendergrid", "renderful", "replicate", "stripe", "github", "fal")
# Every header name any scheme reads, so random headers often hit a parser.
SIGNATURE_HEADERS = (
    "X-Webhook-Signature-256", "X-Timestamp", "X-Renderful-Signature",
    "webhook-id", "webhook-timestamp", "webhook-signature",
    "svix-id", "svix-timestamp", "svix-signature",
    "Stripe-Signature", "X-Hub-Signature-256",
    "X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id", "X-Fal-Webhook-Timestamp",
    "X-Fal-Webhook-Signature",
)


def write(tmp: Path) -> Path:
    return write_config(tmp, CONFIG, max_body_bytes=CAP, whpk=WHPK, stripe=STRIPE_SECRET,
                        github=GITHUB_SECRET, fal_x=FAL_X, admin_token=ADMIN_TOKEN)


def fal_sign(body: bytes, now: float | None = None, request_id: str = "req-1"
             ) -> dict[str, str]:
    return fal_headers(FAL_PRIVATE, body, now, request_id)


def sign(config: settings_mod.Settings, source: str, body: bytes) -> dict[str, str]:
    """Headers that make `body` verify for `source` (with its real secret or key)."""
    if source == "fal":
        return fal_sign(body, request_id=hashlib.sha256(body).hexdigest()[:24])
    src = config.sources[source]
    return signing.build_verifier(src.signature, src.secrets, src.tolerance_s).sign(body)


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (verify with static keys) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("verify suspended; it should not need I/O with static keys")


# ---------------------------------------------------------------- strategies

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_"
HEX = "0123456789abcdefABCDEF"
fragments = st.sampled_from([
    "", " ", ",", ", ", "=", "==", "t=", "v1=", "v0=", "v1,", "v1a,", "v2,", "sha256=",
    "SHA256=", "sha1=", "whsec_", "1", "0", "-1", "1e9", "99999999999999", "17000000000",
    "\t", "\x00", "\u00e9", "\u2603", "\ud800", "%00", "\\", '"', "\r\n",
])
near_valid = st.lists(
    st.one_of(fragments, st.text(B64, max_size=90), st.text(HEX, max_size=130),
              st.integers(-(10**13), 10**13).map(str),
              st.just(str(int(time.time()))), st.sampled_from(["a" * 9000, "ab" * 64])),
    max_size=8,
).map("".join)
header_values = st.one_of(near_valid, st.text(max_size=200),
                          st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
header_names = st.one_of(
    st.sampled_from(SIGNATURE_HEADERS),
    st.sampled_from(SIGNATURE_HEADERS).map(str.lower),
    st.sampled_from(SIGNATURE_HEADERS).map(str.upper),
    st.text("abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=20),
)
random_headers = st.dictionaries(header_names, header_values, max_size=10)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), st.sampled_from(["completed", "failed", "queued", "COMPLETED", ""]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
# Bodies shaped like the providers' own, with fields of the wrong type or value.
provider_like = st.fixed_dictionaries(
    {},
    optional={
        "event": st.one_of(st.sampled_from(["creation.completed", "creation.failed",
                                            "creation.weird", "", "completed"]), json_values),
        "id": st.one_of(st.text(max_size=40), json_values),
        "status": st.one_of(st.sampled_from(["completed", "failed", "queued", "processing",
                                             "expired", "bogus"]), json_values),
        "result_urls": st.one_of(st.lists(st.one_of(st.text(max_size=30), json_values),
                                          max_size=3), json_values),
        "cost": json_values, "error": json_values, "output": json_values,
        "data": json_values, "request_id": json_values, "job_id": json_values,
        "payload": json_values,
    },
).map(lambda d: json.dumps(d).encode())


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _valid_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# JSON that is not quite JSON, or JSON at the edges of what parsers take.
junk_bodies = st.one_of(
    st.binary(max_size=300),
    provider_like,
    json_values.map(lambda v: json.dumps(v).encode()),
    # truncated JSON
    st.tuples(provider_like, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
    # invalid UTF-8 spliced into JSON
    st.tuples(provider_like, st.integers(0, 200), st.sampled_from(
        [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"])
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:]),
    # deep nesting, below and above the parser's limit
    st.tuples(st.integers(1, 5000), st.sampled_from(["list", "dict"])).map(lambda t: _deep(*t)),
    # huge numbers
    st.sampled_from([b"1e400", b"-1e400", b"1e-400", b'{"cost":1e999}', b'{"id":1e308}',
                     b"9" * 4301, b"9" * 4300, b'{"id":' + b"9" * 5000 + b"}",
                     b"NaN", b"Infinity", b'{"cost":NaN}', b'{"cost":-Infinity}',
                     b"-0", b"0.0e0", b"[1e309]"]),
    st.integers().map(lambda n: str(n).encode()),
    # odd text and framing
    st.sampled_from([b"", b" ", b"\x00", b"\xef\xbb\xbf{}", b"{}\x00", b"{}{}", b'"', b"{",
                     b'{"a":"\\u0000"}', b'{"id":"\\u0000","status":"completed"}',
                     b'{"a":"\\ud800\\udc00"}', b'{"a":1,"a":2}', b"\n\n{}\n", b"[]",
                     b"\xfe\xff\x00{\x00}", b"\xff\xfe{\x00}\x00", b"{\x00\x00\x00",
                     "{\"emoji\":\"\U0001F600\"}".encode(),
                     # unpaired UTF-16 surrogate escapes, in the job id and elsewhere
                     b'{"event":"creation.completed","id":"x\\ud800","status":"completed"}',
                     b'{"event":"creation.completed","id":"x","status":"\\udfff"}',
                     b'{"a":"\\ud800"}', b'["\\udc00\\ud800"]', b'{"\\ud800":1}']),
)
# ---------------------------------------------------------------- 1. the verifiers, sans-I/O


def verifiers() -> dict[str, signing.Verifier]:
    hmac_variants = {
        "hmac-rendergrid": {"scheme": "hmac", "header": "X-Webhook-Signature-256",
                            "prefix": "sha256=", "template": "{timestamp}.{body}",
                            "timestamp_header": "X-Timestamp"},
        "hmac-github": {"scheme": "hmac", "header": "X-Hub-Signature-256",
                        "prefix": "sha256="},
        "hmac-b64-id": {"scheme": "hmac", "header": "X-Signature", "encoding": "base64",
                        "algorithm": "sha512", "prefix": "v1,",
                        "template": "{id}.{timestamp}.{body}", "id_header": "X-Id",
                        "timestamp_header": "X-Ts"},
        "hmac-sha1-noprefix": {"scheme": "hmac", "header": "X-Sig", "algorithm": "sha1"},
    }
    found: dict[str, signing.Verifier] = {
        "standard-webhooks": signing.build_verifier({"scheme": "standard-webhooks"},
                                                    [WHSEC, WHPK]),
        "stripe": signing.build_verifier({"scheme": "stripe"}, [STRIPE_SECRET]),
        "fal": signing.build_verifier(
            {"scheme": "fal", "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": FAL_X}]}},
            []),
    }
    for name, table in hmac_variants.items():
        found[name] = signing.build_verifier(table, [RENDERGRID_SECRET, RENDERFUL_SECRET])
    return found


VERIFIERS = verifiers()
VERIFIER_HEADERS = {
    "hmac-b64-id": ("X-Signature", "X-Id", "X-Ts"),
    "hmac-sha1-noprefix": ("X-Sig",),
}


def _sign_with(name: str, verifier: signing.Verifier, body: bytes) -> dict[str, str]:
    return fal_sign(body) if name == "fal" else verifier.sign(body)


@PROPERTY
@given(name=st.sampled_from(sorted(VERIFIERS)), headers=random_headers,
       body=st.binary(max_size=200),
       extra=st.dictionaries(st.sampled_from(
           ["X-Signature", "X-Id", "X-Ts", "X-Sig"]), header_values, max_size=3))
def test_verifiers_raise_only_signature_invalid_on_random_headers(
    name: str, headers: dict[str, str], body: bytes, extra: dict[str, str]
) -> None:
    COUNTS["verifier: random headers"] += 1
    with pytest.raises(SignatureInvalid):
        run_now(VERIFIERS[name].verify({**headers, **extra}, body))


@PROPERTY
@given(name=st.sampled_from(sorted(VERIFIERS)), body=st.binary(max_size=200), data=st.data())
def test_verifiers_on_mutated_valid_signatures(name: str, body: bytes, data: st.DataObject) -> None:
    """Start from headers that verify, then break one thing: a header value (replaced, cut,
    padded, doubled), the body, or a header dropped. Only SignatureInvalid may come out, and a
    changed body must never verify."""
    COUNTS["verifier: mutated valid signature"] += 1
    verifier = VERIFIERS[name]
    good = _sign_with(name, verifier, body)
    assert run_now(verifier.verify(good, body)).scheme == verifier.scheme
    headers = dict(good)
    key = data.draw(st.sampled_from(sorted(headers)))
    how = data.draw(st.sampled_from(["replace", "cut", "pad", "double", "drop", "body",
                                     "case", "list"]))
    new_body = body
    if how == "replace":
        headers[key] = data.draw(header_values)
    elif how == "cut":
        headers[key] = headers[key][: data.draw(st.integers(0, max(0, len(headers[key]) - 1)))]
    elif how == "pad":
        headers[key] = data.draw(near_valid) + headers[key] + data.draw(near_valid)
    elif how == "double":
        headers[key] = headers[key] + data.draw(st.sampled_from([",", " ", ", "])) + headers[key]
    elif how == "drop":
        del headers[key]
    elif how == "case":
        headers = {k.swapcase(): v for k, v in headers.items()}
    elif how == "list":  # up to 40 extra garbage entries in front of the real one
        garbage = data.draw(st.lists(near_valid, max_size=40))
        headers[key] = " ".join([*garbage, headers[key]])
    else:
        new_body = data.draw(st.binary(max_size=200).filter(lambda b: b != body))
    try:
        result = run_now(verifier.verify(headers, new_body))
    except SignatureInvalid:
        return
    assert new_body == body, "a changed body verified"
    assert result.scheme == verifier.scheme


def test_verifier_edge_cases_by_hand() -> None:
    """Edge cases a random search rarely builds, one by one."""
    now = int(time.time())
    body = b'{"a":1}'
    rg = VERIFIERS["hmac-rendergrid"]
    cases: list[tuple[signing.Verifier, dict[str, str]]] = [
        (rg, {"X-Webhook-Signature-256": "sha256=" + "0" * 64, "X-Timestamp": "1" * 13}),
        (rg, {"X-Webhook-Signature-256": "sha256=" + "0" * 64, "X-Timestamp": " "}),
        (rg, {"X-Webhook-Signature-256": "sha256=" + "0" * 64, "X-Timestamp": "+1"}),
        (rg, {"X-Webhook-Signature-256": "sha256=" + "0" * 64, "X-Timestamp": "٣٣٣"}),
        (rg, {"X-Webhook-Signature-256": "sha256=" + "0" * 63, "X-Timestamp": str(now)}),
        (rg, {"X-Webhook-Signature-256": "sha256=" * 5000, "X-Timestamp": str(now)}),
        (rg, {"X-Webhook-Signature-256": ",".join(["sha256=00"] * 33), "X-Timestamp": str(now)}),
        (rg, {"X-Webhook-Signature-256": "sha256=" + "0" * 64, "X-Timestamp": "9" * 12}),
        (VERIFIERS["standard-webhooks"], {"webhook-id": "x", "webhook-timestamp": str(now),
                                          "webhook-signature": "v1a," + "A" * 88}),
        (VERIFIERS["standard-webhooks"], {"webhook-id": "x", "webhook-timestamp": str(now),
                                          "webhook-signature": "v1a,AAAA v1,==== v1,"}),
        (VERIFIERS["standard-webhooks"], {"svix-id": "x", "svix-timestamp": str(now),
                                          "svix-signature": "v1," + "A" * 44,
                                          "webhook-id": "y"}),
        (VERIFIERS["stripe"], {"Stripe-Signature": f"t={now},t={now},v1=00"}),
        (VERIFIERS["stripe"], {"Stripe-Signature": f"t={now},v1=" + "zz" * 32}),
        (VERIFIERS["stripe"], {"Stripe-Signature": "t=,v1="}),
        (VERIFIERS["fal"], {"X-Fal-Webhook-Request-Id": "r", "X-Fal-Webhook-User-Id": "u",
                            "X-Fal-Webhook-Timestamp": str(now),
                            "X-Fal-Webhook-Signature": "00" * 64}),
        (VERIFIERS["fal"], {"X-Fal-Webhook-Request-Id": "r", "X-Fal-Webhook-User-Id": "u",
                            "X-Fal-Webhook-Timestamp": str(now),
                            "X-Fal-Webhook-Signature": "ff" * 64}),
        (VERIFIERS["hmac-b64-id"], {"X-Signature": "v1," + "A" * 86 + "==", "X-Id": "\u00e9",
                                    "X-Ts": str(now)}),
    ]
    for verifier, headers in cases:
        COUNTS["verifier: hand-written edge case"] += 1
        with pytest.raises(SignatureInvalid):
            run_now(verifier.verify(headers, body))


# ---------------------------------------------------------------- 2. the endpoint, in-process


class InProcess:
    """The app with its lifespan running on one event loop kept across hypothesis examples."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = settings_mod.load(str(write(tmp)))
        self.runner = asyncio.Runner()
        self._cm = app_client(self.config)
        self.client, self.service = self.run(self._cm.__aenter__())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.runner.run(coro)

    def post(self, path: str, body: bytes, headers: Any, method: str = "POST") -> httpx.Response:
        return self.run(self.client.request(method, path, content=body, headers=headers))

    def events(self) -> int:
        return int(self.run(self.service.store.count_events()))

    def close(self) -> None:
        try:
            self.run(self._cm.__aexit__(None, None, None))
        finally:
            self.runner.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    harness = InProcess(tmp_path_factory.mktemp("bad-input-app"))
    yield harness
    harness.close()


def assert_error_answer(r: httpx.Response, allowed: set[int]) -> None:
    assert r.status_code in allowed, (r.status_code, r.text)
    doc = r.json()
    assert set(doc) == {"error", "message"} and isinstance(doc["message"], str), doc


content_types = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                     "application/cloudevents+json", " application/json ", "text/plain",
                     "application/x-www-form-urlencoded", "", "json", "application/json;;;",
                     "multipart/form-data; boundary=x"]),
    st.text(max_size=40),
)
raw_header_values = st.one_of(header_values.map(lambda s: s.encode("utf-8", "surrogatepass")),
                              st.binary(max_size=120))


@PROPERTY
@given(
    source=st.one_of(st.sampled_from(SOURCES), st.sampled_from(
        ["nope", "", "rendergrid/x", "RENDERGRID", "rendergrid%00", "..%2Frendergrid"])),
    method=st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE", "PATCH"]),
    content_type=st.one_of(st.none(), content_types),
    headers=st.lists(st.tuples(header_names, raw_header_values), max_size=12),
    body=st.one_of(junk_bodies, st.just(b"x" * (CAP + 1))),
)
def test_endpoint_refuses_unsigned_or_badly_signed_requests(
    app: InProcess, source: str, method: str, content_type: str | None,
    headers: list[tuple[str, bytes]], body: bytes,
) -> None:
    COUNTS["endpoint in-process: random/bad signature"] += 1
    before = app.events()
    sent: list[tuple[str, bytes]] = list(headers)
    if content_type is not None:
        sent.insert(0, ("Content-Type", content_type.encode("utf-8", "surrogatepass")))
    r = app.post(f"/hooks/{source}", body, sent, method)
    assert_error_answer(r, {401, 404, 405, 413, 415})
    assert app.events() == before, "a request without a valid signature stored an event"


@PROPERTY
@given(source=st.sampled_from(SOURCES), body=junk_bodies,
       content_type=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                     "application/vnd.api+json"]))
def test_validly_signed_junk_is_200_or_400_never_5xx(
    app: InProcess, source: str, body: bytes, content_type: str
) -> None:
    COUNTS["endpoint in-process: validly signed junk"] += 1
    headers = {**sign(app.config, source, body), "Content-Type": content_type}
    before = app.events()
    r = app.post(f"/hooks/{source}", body, headers)
    if len(body) > CAP:
        assert_error_answer(r, {413})
    elif r.status_code == 400:
        assert r.json()["error"] == "payload_invalid", r.text
        assert app.events() == before
    else:
        assert r.status_code == 200, (r.status_code, r.text, body[:200])
        doc = r.json()
        event = app.run(app.service.store.get_event(doc["event_id"]))
        assert event is not None, "a 200 for an event that is not stored"
        assert event["type"] in {"webhook.unrecognized", "webhook.received",
                                 "generation.completed", "generation.failed",
                                 "generation.queued", "generation.processing",
                                 "generation.expired"}
        if source != "rendergrid" and source != "renderful":
            assert event["type"] == "webhook.received"


@PROPERTY
@given(source=st.sampled_from(SOURCES), body=provider_like,
       header=st.sampled_from(SIGNATURE_HEADERS), value=header_values,
       where=st.sampled_from(["before", "after"]))
def test_duplicate_signature_headers_never_5xx(
    app: InProcess, source: str, body: bytes, header: str, value: str, where: str
) -> None:
    """The valid headers plus a second copy of one signature header (first wins in hookyard):
    200 (the valid copy was read) or 401, never a 5xx."""
    COUNTS["endpoint in-process: duplicate signature headers"] += 1
    good = list(sign(app.config, source, body).items())
    extra = (header, value.encode("utf-8", "surrogatepass"))
    headers = [("Content-Type", "application/json"),
               *([extra, *good] if where == "before" else [*good, extra])]
    r = app.post(f"/hooks/{source}", body, headers)
    assert r.status_code in (200, 401), (r.status_code, r.text)


def test_in_process_edge_cases_by_hand(app: InProcess) -> None:
    cfg = app.config
    body = b'{"event":"creation.completed","id":"edge-1","status":"completed"}'
    good = sign(cfg, "rendergrid", body)
    cases: list[tuple[bytes, Any, set[int]]] = [
        (body, {**good, "Content-Type": "application/json",
                "X-Webhook-Signature-256": "sha256=" + "a" * 100_000}, {401}),
        (body, {**good, "Content-Type": "application/json", "X-Timestamp": "1" * 5000}, {401}),
        (b"x" * (CAP + 1), {**sign(cfg, "rendergrid", b"x" * (CAP + 1)),
                            "Content-Type": "application/json"}, {413}),
        (b"{" * CAP, {**sign(cfg, "rendergrid", b"{" * CAP),
                      "Content-Type": "application/json"}, {400}),
        (b"[" * CAP, {**sign(cfg, "github", b"[" * CAP), "Content-Type": "application/json"},
         {401}),  # github's signature sent to /hooks/rendergrid
        (body, [("Content-Type", "application/json"), ("Content-Type", "text/plain"),
                *good.items()], {200}),
        (body, [("Content-Type", "text/plain"), ("Content-Type", "application/json"),
                *good.items()], {415}),
    ]
    for sent, headers, allowed in cases:
        COUNTS["endpoint in-process: hand-written edge case"] += 1
        r = app.post("/hooks/rendergrid", sent, headers)
        assert r.status_code in allowed, (r.status_code, r.text)


def test_a_content_length_of_any_text_is_never_a_5xx(app: InProcess) -> None:
    """uvicorn's parser refuses these itself, but the app must not rely on its server: `²`
    (latin-1 0xB2, as ASGI headers are decoded) is a digit to str.isdigit() and not to int(),
    and int() refuses 5,000 digits."""
    body = b'{"event":"creation.completed","id":"length-1","status":"completed"}'
    headers = {**sign(app.config, "rendergrid", body), "Content-Type": "application/json"}
    for declared, expected in [(b"\xb2", 200), (b"1\xb9", 200), (b"9" * 5000, 413),
                               (b"%d" % (CAP + 1), 413), (b"0" * 40 + b"%d" % len(body), 200)]:
        COUNTS["endpoint in-process: hand-written edge case"] += 1
        sent = [*((k, v.encode()) for k, v in headers.items()), ("Content-Length", declared)]
        r = app.run(app.client.post("/hooks/rendergrid", content=body, headers=sent))
        assert r.status_code == expected, (declared[:10], r.status_code, r.text)


def test_signed_lone_surrogate_escapes_are_400(app: InProcess) -> None:
    """Was a 503 (sqlite could not bind the str) until 4075a6a; now a 400 payload_invalid."""
    for body in (b'{"event":"creation.completed","id":"bad-\\ud800","status":"completed"}',
                 b'{"a":"\\ud800"}'):
        COUNTS["endpoint in-process: hand-written edge case"] += 1
        headers = {**sign(app.config, "rendergrid", body), "Content-Type": "application/json"}
        r = app.post("/hooks/rendergrid", body, headers)
        assert r.status_code == 400 and r.json()["error"] == "payload_invalid", r.text


def test_signed_overflowing_number_is_stored_as_null(app: InProcess) -> None:
    """Was a 400: a verified webhook is never refused for its content. The number that does
    not fit a double reads as null (the raw bytes keep it); no Infinity reaches a sink."""
    COUNTS["endpoint in-process: hand-written edge case"] += 1
    body = b'{"event":"creation.completed","id":"inf-1","status":"completed","cost":1e400}'
    headers = {**sign(app.config, "rendergrid", body), "Content-Type": "application/json"}
    r = app.post("/hooks/rendergrid", body, headers)
    assert r.status_code == 200, r.text
    event = app.run(app.service.store.get_event(r.json()["event_id"]))
    assert event["cost"] is None and event["raw"]["cost"] is None
    json.dumps(event, allow_nan=False)


# ---------------------------------------------------------------- 2b. admin API bodies

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
hostile_numbers = st.sampled_from([b"1e400", b"-1e999", b"9" * 400, b"9" * 5000, b"NaN",
                                   b"Infinity", b"1e308", b"-0", b"18446744073709551616"])
admin_fields = st.sampled_from(["metadata", "deadline_s", "since", "until", "sinks", "source",
                                "job_id", "dry_run", "delivery_status"])


def _admin_body(field: str, number: bytes, nested: bool) -> bytes:
    value = b'{"n": [' + number + b"]}" if nested else number
    return b'{"source": "rendergrid", "job_id": "bad-input", "' + field.encode() + b'": ' + (
        value + b"}")


@PROPERTY
@example(route="/v1/jobs", body=_admin_body("metadata", b"1e400", nested=True))
@example(route="/v1/jobs", body=_admin_body("metadata", b"9" * 400, nested=False))
@example(route="/v1/jobs", body=_admin_body("deadline_s", b"1e400", nested=False))
@given(route=st.sampled_from(["/v1/jobs", "/v1/replay", "/v1/events/evt_nope/replay"]),
       body=st.one_of(junk_bodies,
                      st.builds(_admin_body, admin_fields, hostile_numbers, st.booleans())))
def test_admin_bodies_are_4xx_or_accepted_never_5xx(app: InProcess, route: str,
                                                   body: bytes) -> None:
    """Junk and hostile numbers in every admin body: a 4xx naming the problem, or accepted;
    never a 5xx, and nothing stored that would make a list fail afterwards."""
    COUNTS["admin API: junk or hostile body"] += 1
    r = app.post(route, body, ADMIN)
    if len(body) > CAP:
        assert_error_answer(r, {413})
    elif r.status_code >= 400:
        assert_error_answer(r, {400, 404, 409})
    else:
        assert r.status_code in (200, 201, 202), r.text
    for listing in ("/v1/jobs", "/v1/events?limit=500", "/v1/deliveries"):
        shown = app.post(listing, b"", ADMIN, method="GET")
        assert shown.status_code == 200, shown.text
        json.dumps(shown.json(), allow_nan=False)


# ---------------------------------------------------------------- 2c. poll answers

POLLED = tuple(sorted(name for name, p in providers.PROVIDERS.items() if p.poll is not None))
FIXTURES = Path(__file__).parent / "fixtures"
POLL_FIXTURES = {
    name: [json.loads(f.read_bytes()) for f in sorted((FIXTURES / name).glob("poll_*.json"))]
    for name in POLLED
}
HOSTILE = b'"@@hostile@@"'
hostile_pieces = st.one_of(hostile_numbers, st.sampled_from([
    b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"', b'"\\u001b[2J"', b'"\\u202e"', b"[" * 2000,
    b"{}", b"[]", b"null", b"true", b'"completed"', b'"' + b"x" * 20_000 + b'"',
]))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document, as the keys and indexes that lead to it."""
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*path, index))


def _with_hostile(doc: Any, path: tuple[Any, ...], piece: bytes) -> bytes:
    """`doc` as JSON with the value at `path` replaced by the bytes `piece`."""
    if not path:
        return piece
    marked = json.loads(json.dumps(doc))
    inner = marked
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = HOSTILE.strip(b'"').decode()
    return json.dumps(marked).encode().replace(HOSTILE, piece)


@st.composite
def poll_answers(draw: st.DrawFn) -> tuple[str, bytes]:
    """(provider, an answer body): one of the provider's recorded answers with a hostile value
    put at any place in it, or junk."""
    provider = draw(st.sampled_from(POLLED))
    if draw(st.integers(0, 3)) == 0:
        return provider, draw(junk_bodies)
    doc = draw(st.sampled_from(POLL_FIXTURES[provider]))
    path = draw(st.sampled_from(list(_paths(doc))))
    return provider, _with_hostile(doc, path, draw(hostile_pieces))


@PROPERTY
@example(answer=("revid", b'{"status": "completed", "result": "https://c.test/a", "cost": NaN}'),
         status=200)
@example(answer=("rendergrid", b'{"id": "c", "status": "completed", "cost": 1e400}'),
         status=200)
@given(answer=poll_answers(), status=st.sampled_from([200, 200, 200, 201, 404]))
def test_poll_answers_are_read_or_unreadable_never_poison_the_store(
    app: InProcess, answer: tuple[str, bytes], status: int
) -> None:
    """Any status answer reads as running, done or not found (never an exception); an event
    made of it is strict JSON, is stored as the poller stores it, and reads back through the
    admin API; the status word kept on the job row is text a database can hold."""
    COUNTS["poll answers: recorded answers with a hostile value, or junk"] += 1
    provider, body = answer
    poll = providers.PROVIDERS[provider].poll
    assert poll is not None
    job_id = f"bad-poll-{COUNTS['poll answers: recorded answers with a hostile value, or junk']}"
    ctx = PollContext(provider, provider, job_id, poll.base_url, "key", {"order": 1})
    read = poll.parse_answer(ctx, status, body)
    assert read.state in (RUNNING, DONE, NOT_FOUND), read
    if read.status is not None:
        read.status.encode("utf-8")  # no lone surrogate: it goes in a text column
    if read.event is None:
        return
    json.dumps(read.event.to_json(), allow_nan=False)
    stored = app.run(app.service.ingest.submit(read.event, body, {}))
    shown = app.post(f"/v1/events/{stored.event_id}", b"", ADMIN, method="GET")
    assert shown.status_code == 200, shown.text
    json.dumps(shown.json(), allow_nan=False)


# ---------------------------------------------------------------- 3. a real server, raw sockets


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("bad-input-server")
    srv = Server(write(tmp), tmp).start()
    yield srv
    srv.kill()


def raw_exchange(port: int, data: bytes, *, close_after_send: bool = False,
                 timeout: float = 5.0) -> int | None:
    """Send raw bytes; the status code of the first answer, or None when the server closed
    the connection without answering (or nothing came before the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        if close_after_send:
            return None
        chunks = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in chunks:
                got = sock.recv(65536)
                if not got:
                    break
                chunks += got
    if not chunks.startswith(b"HTTP/1."):
        return None
    return int(chunks.split(b" ", 2)[1])


def request_bytes(path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                  method: bytes = b"POST", auto_length: bool = True) -> bytes:
    """A raw request; Content-Length is added for `body` unless a length or a transfer
    coding is already given (or auto_length is off)."""
    framed = {name.lower() for name, _ in headers} & {b"content-length", b"transfer-encoding"}
    if body and auto_length and not framed:
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
    head = method + b" " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


def chunked(body: bytes, size: int = 4096) -> bytes:
    out = b"".join(b"%x\r\n" % len(body[i:i + size]) + body[i:i + size] + b"\r\n"
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def server_cases(config: settings_mod.Settings) -> list[tuple[str, bytes, set[int | None], bool]]:
    """(name, raw request, allowed statuses (None: connection closed), close after send)."""
    ok_body = b'{"event":"creation.completed","id":"raw-ok","status":"completed"}'
    sig = [(k.encode(), v.encode()) for k, v in sign(config, "rendergrid", ok_body).items()]
    json_ct = (b"Content-Type", b"application/json")
    over = b"x" * (CAP + 1)
    at_cap = b" " * (CAP - 2) + b"{}"
    four_xx = set(range(400, 500))
    closed_or_4xx: set[int | None] = {None, *four_xx}
    cases: list[tuple[str, bytes, set[int | None], bool]] = [
        ("giant header value 60 KB", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Webhook-Signature-256", b"sha256=" + b"a" * 60_000)], b"{}"),
         closed_or_4xx, False),
        ("giant header value 1 MB", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Filler", b"b" * 1_000_000)], b"{}"), closed_or_4xx, False),
        ("2000 headers", request_bytes("/hooks/rendergrid", [
            json_ct, *[(b"X-H%d" % i, b"v") for i in range(2000)]], b"{}"),
         closed_or_4xx, False),
        ("duplicate signature headers, bogus first", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Webhook-Signature-256", b"sha256=00"), *sig], ok_body),
         {401}, False),
        ("duplicate timestamps", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Timestamp", b"1"), *sig], ok_body), {401}, False),
        ("duplicate Content-Length, different",
         request_bytes("/hooks/rendergrid", [json_ct, (b"Content-Length", b"2"),
                                             (b"Content-Length", b"3")], b"{}}"),
         closed_or_4xx, False),
        ("Content-Length and chunked", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Content-Length", b"2"), (b"Transfer-Encoding", b"chunked")],
            chunked(b"{}")), closed_or_4xx, False),
        ("negative Content-Length", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Content-Length", b"-1")], b"{}"), closed_or_4xx, False),
        ("non-numeric Content-Length", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Content-Length", b"12abc")], b"{}"), closed_or_4xx, False),
        ("huge Content-Length", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Content-Length", b"9" * 30)], b"{}"), closed_or_4xx, False),
        ("body over the cap, Content-Length", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Content-Length", b"%d" % len(over))], over), {413}, False),
        ("Content-Length over the cap, no body sent", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Content-Length", b"%d" % (CAP + 1))]), {413}, False),
        ("body over the cap, chunked", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Transfer-Encoding", b"chunked")], chunked(over)), {413}, False),
        ("body over the cap by 1 byte, chunked in one chunk", request_bytes(
            "/hooks/rendergrid", [json_ct, (b"Transfer-Encoding", b"chunked")],
            chunked(over, len(over))), {413}, False),
        ("body exactly at the cap, unsigned", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Content-Length", b"%d" % len(at_cap))], at_cap), {401}, False),
        ("body over the cap, no length, no chunking (read to close)", request_bytes(
            "/hooks/rendergrid", [json_ct, (b"Connection", b"close")], over, auto_length=False),
         closed_or_4xx, True),
        ("invalid UTF-8 in the signature header", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Webhook-Signature-256", b"sha256=\xff\xfe\xc3"),
            (b"X-Timestamp", b"\xed\xa0\x80")], b"{}"), {401}, False),
        ("invalid UTF-8 in Content-Type", request_bytes("/hooks/rendergrid", [
            (b"Content-Type", b"application/json\xff"), *sig], ok_body), {415}, False),
        ("NUL in a header value", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Webhook-Signature-256", b"sha256=\x00")], b"{}"),
         closed_or_4xx, False),
        ("space before the colon", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Timestamp ", b"1")], b"{}"), closed_or_4xx, False),
        ("obsolete line folding", request_bytes("/hooks/rendergrid", [
            json_ct, (b"X-Webhook-Signature-256", b"sha256=00\r\n  sha256=11")], b"{}"),
         closed_or_4xx, False),
        ("bad chunk size", request_bytes("/hooks/rendergrid", [
            json_ct, (b"Transfer-Encoding", b"chunked")], b"zz\r\n{}\r\n0\r\n\r\n"),
         closed_or_4xx, False),
        ("half-sent body, then disconnect", request_bytes("/hooks/rendergrid", [
            json_ct, *sig, (b"Content-Length", b"%d" % len(ok_body))], ok_body[:20]),
         {None}, True),
        ("half-sent chunked body, then disconnect", request_bytes("/hooks/rendergrid", [
            json_ct, *sig, (b"Transfer-Encoding", b"chunked")], b"40\r\n" + ok_body[:20]),
         {None}, True),
        ("headers cut off, then disconnect", b"POST /hooks/rendergrid HTTP/1.1\r\nHost: x\r\nX-Ti",
         {None}, True),
        ("HTTP/1.0 without length", b"POST /hooks/rendergrid HTTP/1.0\r\n"
         b"Content-Type: application/json\r\n\r\n{}", closed_or_4xx, True),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
         closed_or_4xx, False),
        ("absolute-form target", b"POST http://evil.example/hooks/rendergrid HTTP/1.1\r\n"
         b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
         closed_or_4xx, False),
        ("unknown source, percent-encoded", request_bytes("/hooks/%72endergrid%2F..", [
            json_ct, (b"Content-Length", b"2")], b"{}"), closed_or_4xx, False),
    ]
    return cases


def test_transport_level_abuse_of_a_real_server(server: Server) -> None:
    config = settings_mod.load(str(server.config_path))
    failures = []
    for name, data, allowed, close_after in server_cases(config):
        COUNTS["real server: transport case"] += 1
        status = raw_exchange(server.port, data, close_after_send=close_after)
        if status not in allowed:
            failures.append((name, status))
    assert not failures, "\n".join(f"{name}: got {status}" for name, status in failures)
    assert_still_serving(server, config, "after-transport-cases")


@PROPERTY
@given(data=st.one_of(
    st.binary(max_size=400),
    st.tuples(st.sampled_from([b"POST /hooks/rendergrid HTTP/1.1\r\n",
                               b"POST /hooks/github HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\n"]),
              st.lists(st.tuples(st.binary(max_size=30), st.binary(max_size=60)), max_size=8),
              st.binary(max_size=200)).map(
        lambda t: t[0] + b"".join(k + b": " + v + b"\r\n" for k, v in t[1]) + b"\r\n" + t[2]),
))
def test_random_bytes_on_the_socket_never_5xx(server: Server, data: bytes) -> None:
    COUNTS["real server: random bytes on the socket"] += 1
    status = raw_exchange(server.port, data, timeout=2.0)
    assert status is None or status < 500 or status == 505, (status, data[:200])


def assert_still_serving(server: Server, config: settings_mod.Settings, job: str) -> None:
    body = json.dumps({"event": "creation.completed", "id": job, "status": "completed"}).encode()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        r = client.post("/hooks/rendergrid", content=body,
                        headers={**sign(config, "rendergrid", body),
                                 "Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def test_zz_server_still_answers_and_logged_no_crash(server: Server) -> None:
    """Last in the module: after everything above, /healthz answers, a valid webhook is
    stored, and the server's log holds no request.crashed (a 500) line."""
    config = settings_mod.load(str(server.config_path))
    assert_still_serving(server, config, "after-everything")
    assert server.proc is not None and server.proc.poll() is None
    assert "request.crashed" not in server.output()


# ---------------------------------------------------------------- the count


@pytest.fixture(scope="module", autouse=True)
def report_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    total = sum(COUNTS.values())
    lines = [f"bad input: {total} inputs tried in {time.monotonic() - started:.1f} s "
             f"({EXAMPLES} examples per property)"]
    lines += [f"  {count:6d}  {what}" for what, count in sorted(COUNTS.items())]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)
    out = os.environ.get("HOOKYARD_BAD_INPUT_COUNTS")
    if out:
        Path(out).write_text(json.dumps({"total": total, "by_kind": dict(COUNTS),
                                         "examples_per_property": EXAMPLES}, indent=2) + "\n")

