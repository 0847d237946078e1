"""One conformance suite that every provider preset and signature scheme runs, through HTTP.

Each case is a source as a user would configure it, with two keys: the current one and an old
one still listed during a rotation. Signatures are made at test time with an injected clock.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receiver import settings as settings_mod
from receiver.core import signing
from tests.support import app_client, fal_headers, fixture

Signer = Callable[[bytes, float, int], dict[str, str]]


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # the [sources.x] body; {secrets} is replaced by the TOML list of secrets
    secrets: tuple[str, str]  # (current, old)
    body: bytes
    timestamped: bool = True
    message_ids: bool = False  # the scheme carries a message id (the generic provider's key)
    signer: Signer | None = None  # None: the verifier's own sign() with secrets[key]

    def config(self, tmp: Path) -> settings_mod.Settings:
        text = f"""
[server]
database = "sqlite:///{tmp / "c.db"}"
[sources.x]
{self.source.replace("{secrets}", json.dumps(list(self.secrets)))}
"""
        path = tmp / "c.toml"
        path.write_text(text)
        return settings_mod.load(str(path))

    def sign(
        self, config: settings_mod.Settings, body: bytes, now: float, key: int = 0
    ) -> dict[str, str]:
        if self.signer is not None:
            headers = self.signer(body, now, key)
        else:
            src = config.sources["x"]
            one = signing.build_verifier(src.signature, [self.secrets[key]], src.tolerance_s)
            headers = one.sign(body, now=now)
        return {"Content-Type": "application/json", **headers}


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


_SW_KEYS = (Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())
_FAL_KEYS = (Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())


def _sign_v1a(body: bytes, now: float, key: int) -> dict[str, str]:
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(now))
    sig = _SW_KEYS[key].sign(f"{msg_id}.{ts}.".encode() + body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1a," + base64.b64encode(sig).decode(),
    }


def _sign_fal(body: bytes, now: float, key: int) -> dict[str, str]:
    return fal_headers(_FAL_KEYS[key], body, now, str(uuid.uuid4()), "user-42")


def _fal_jwks() -> str:
    keys = [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64.urlsafe_b64encode(_raw(k)).rstrip(b"=").decode(),
        }
        for k in _FAL_KEYS
    ]
    return json.dumps({"keys": keys}).replace('":', '" =').replace("{", "{ ").replace("}", " }")


RENDERGRID = fixture("rendergrid", "completed.json")
GENERIC = fixture("generic", "replicate_prediction.json")

CASES = [
    Case(
        "rendergrid-preset",
        'provider = "rendergrid"\nsecrets = {secrets}',
        ("rg-current-secret", "rg-old-secret"),
        RENDERGRID,
    ),
    Case(
        "renderful-configured",
        'provider = "renderful"\nsecrets = {secrets}\n'
        'signature = { header = "X-Renderful-Signature", algorithm = "HMAC-SHA256" }',
        ("rf-current-secret", "rf-old-secret"),
        fixture("renderful", "completed_nested.json"),
        timestamped=False,
    ),
    Case(
        "standard-webhooks-hmac",
        'provider = "generic"\nsecrets = {secrets}\nsignature = { scheme = "standard-webhooks" }',
        (
            "whsec_" + base64.b64encode(b"current-key-32-bytes-long-......").decode(),
            "whsec_" + base64.b64encode(b"old-key").decode(),
        ),
        GENERIC,
        message_ids=True,
    ),
    Case(
        "standard-webhooks-ed25519",
        'provider = "generic"\nsecrets = {secrets}\nsignature = { scheme = "standard-webhooks" }',
        tuple("whpk_" + base64.b64encode(_raw(k)).decode() for k in _SW_KEYS),  # type: ignore[arg-type]
        GENERIC,
        signer=_sign_v1a,
        message_ids=True,
    ),
    Case(
        "stripe",
        'provider = "generic"\nsecrets = {secrets}\nsignature = { scheme = "stripe" }',
        ("whsec_stripe_current", "whsec_stripe_old"),
        GENERIC,
    ),
    Case(
        "hmac-github-style",
        'provider = "generic"\nsecrets = {secrets}\nsignature = { scheme = "hmac", '
        'header = "X-Hub-Signature-256", prefix = "sha256=" }',
        ("gh-current", "gh-old"),
        GENERIC,
        timestamped=False,
    ),
    Case(
        "fal-inline-jwks",
        f'provider = "generic"\nsignature = {{ scheme = "fal", jwks = {_fal_jwks()} }}',
        ("unused", "unused"),
        fixture("generic", "fal_webhook.json"),
        signer=_sign_fal,
        message_ids=True,
    ),
]
TIMESTAMPED = [c for c in CASES if c.timestamped]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


async def post(
    tmp: Path, case: Case, requests: list[tuple[bytes, dict[str, str]]]
) -> list[tuple[int, dict[str, object]]]:
    config = case.config(tmp)
    async with app_client(config) as (client, _):
        answers = []
        for body, headers in requests:
            r = await client.post("/hooks/x", content=body, headers=headers)
            answers.append((r.status_code, r.json()))
    return answers


async def test_good_signature_is_accepted(tmp_path: Path, case: Case) -> None:
    config = case.config(tmp_path)
    [(status, body)] = await post(
        tmp_path, case, [(case.body, case.sign(config, case.body, time.time()))]
    )
    assert status == 200 and body["duplicate"] is False


async def test_resigned_body_dedupes_unless_it_has_a_new_message_id(
    tmp_path: Path, case: Case
) -> None:
    """The same body signed again later: one event, unless the scheme gave it a new message
    id (then it is a new message; real redeliveries keep the id, see the next test)."""
    config = case.config(tmp_path)
    now = time.time()
    first, again = await post(
        tmp_path,
        case,
        [
            (case.body, case.sign(config, case.body, now)),
            (case.body, case.sign(config, case.body, now + 5)),
        ],
    )
    assert first[0] == again[0] == 200
    assert again[1]["duplicate"] is not case.message_ids
    assert (again[1]["event_id"] == first[1]["event_id"]) is not case.message_ids


async def test_same_message_id_redelivered_is_a_duplicate(tmp_path: Path, case: Case) -> None:
    config = case.config(tmp_path)
    headers = case.sign(config, case.body, time.time())
    first, again = await post(tmp_path, case, [(case.body, headers), (case.body, headers)])
    assert again == (200, {"event_id": first[1]["event_id"], "duplicate": True})


async def test_tampered_body_is_401(tmp_path: Path, case: Case) -> None:
    config = case.config(tmp_path)
    headers = case.sign(config, case.body, time.time())
    tampered = json.dumps({**json.loads(case.body), "tampered": True}).encode()
    [(status, body)] = await post(tmp_path, case, [(tampered, headers)])
    assert status == 401 and body["error"] == "signature_invalid"


async def test_each_signing_header_missing_is_401(tmp_path: Path, case: Case) -> None:
    config = case.config(tmp_path)
    headers = case.sign(config, case.body, time.time())
    names = [n for n in headers if n != "Content-Type"]
    answers = await post(
        tmp_path,
        case,
        [(case.body, {k: v for k, v in headers.items() if k != name}) for name in names],
    )
    assert [a[0] for a in answers] == [401] * len(names)


# Well past the 300 s window: timestamps are whole seconds and the request takes a moment, so a
# skew of exactly 301 could land inside it by the time the server checks.
@pytest.mark.parametrize("skew", [-330, 330], ids=["too-old", "too-far-in-future"])
@pytest.mark.parametrize("tcase", TIMESTAMPED, ids=lambda c: c.name)
async def test_timestamp_outside_window_is_401(tmp_path: Path, tcase: Case, skew: int) -> None:
    config = tcase.config(tmp_path)
    [(status, _)] = await post(
        tmp_path, tcase, [(tcase.body, tcase.sign(config, tcase.body, time.time() + skew))]
    )
    assert status == 401


@pytest.mark.parametrize("tcase", TIMESTAMPED, ids=lambda c: c.name)
async def test_timestamp_inside_window_is_accepted(tmp_path: Path, tcase: Case) -> None:
    config = tcase.config(tmp_path)
    [(status, _)] = await post(
        tmp_path, tcase, [(tcase.body, tcase.sign(config, tcase.body, time.time() - 250))]
    )
    assert status == 200


async def test_rotated_old_key_still_verifies(tmp_path: Path, case: Case) -> None:
    config = case.config(tmp_path)
    [(status, _)] = await post(
        tmp_path, case, [(case.body, case.sign(config, case.body, time.time(), key=1))]
    )
    assert status == 200


MALFORMED = [
    "",
    " ",
    "garbage",
    "v1,",
    "t=,v1=",
    "sha256=",
    "=" * 300,
    "a" * 20000,
    "v1,!!!notbase64",
    "sha256=" + "g" * 64,
    ",,,,",
    "t=abc,v1=00",
    "\t",
]


async def test_malformed_headers_are_401_never_500(tmp_path: Path, case: Case) -> None:
    config = case.config(tmp_path)
    headers = case.sign(config, case.body, time.time())
    requests = [
        (case.body, {**headers, name: junk})
        for name in headers
        if name != "Content-Type"
        for junk in MALFORMED
    ]
    answers = await post(tmp_path, case, requests)
    assert {a[0] for a in answers} == {401}
    assert all(a[1]["error"] == "signature_invalid" for a in answers)


async def test_errors_never_echo_secrets_or_signatures(tmp_path: Path, case: Case) -> None:
    config = case.config(tmp_path)
    headers = case.sign(config, case.body, time.time())
    answers = await post(tmp_path, case, [(case.body + b" ", headers)])
    text = json.dumps(answers)
    for secret in case.secrets:
        assert secret not in text
    for name, value in headers.items():
        if name != "Content-Type" and len(value) > 12:
            assert value not in text
