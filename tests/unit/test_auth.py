"""signaling.auth: minting and verifying HS256 access tokens, grants, dev-login identities."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from signaling.auth import (
    ALGORITHM,
    LEEWAY_S,
    AuthError,
    Claims,
    Grants,
    mint_token,
    slug_identity,
    verify_token,
)

KEY = "app-key"
SECRET = "s3cret-" + "k" * 40
OTHER_KEY = "other-key"
OTHER_SECRET = "other-" + "o" * 40
KEYS = {KEY: SECRET, OTHER_KEY: OTHER_SECRET}


def mint(identity: str = "alice", **kw: Any) -> str:
    return mint_token(api_key=KEY, api_secret=SECRET, identity=identity, **kw)


def refused(token: str, keys: dict[str, str] = KEYS, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify_token(token, keys=keys, **kw)
    assert SECRET not in info.value.message and OTHER_SECRET not in info.value.message
    return info.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: str = SECRET) -> str:
    """A JWT built without PyJWT, which refuses to encode some malformed claims."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def claims_now(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": KEY, "sub": "alice", "iat": now, "exp": now + 600, **extra}


# --- minting ----------------------------------------------------------------------------


def test_minted_token_has_the_documented_claims() -> None:
    token = mint(
        name="Alice A.",
        ttl_s=600,
        now=1_000_000,
        grants=Grants(rooms=["standup"], can_publish=False, admin=True),
    )
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {
        "iss": KEY,
        "sub": "alice",
        "name": "Alice A.",
        "iat": 1_000_000,
        "exp": 1_000_600,
        "grants": {"rooms": ["standup"], "can_publish": False, "admin": True},
    }


def test_mint_defaults_name_to_identity_and_grants_to_everything_but_admin() -> None:
    payload = jwt.decode(mint("bob"), options={"verify_signature": False})
    assert payload["name"] == "bob"
    assert payload["exp"] - payload["iat"] == 6 * 3600
    claims = verify_token(mint("bob"), keys=KEYS)
    assert claims.grants == Grants(rooms=["*"], can_publish=True, can_subscribe=True, admin=False)


@pytest.mark.parametrize("identity", ["", "a b", "ümlaut", "x" * 129, "a/b", "a\nb"])
def test_mint_refuses_invalid_identities(identity: str) -> None:
    with pytest.raises(ValueError, match="identity must match"):
        mint(identity)


@pytest.mark.parametrize("ttl", [0, -1])
def test_mint_refuses_non_positive_ttl(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        mint(ttl_s=ttl)


# --- verifying --------------------------------------------------------------------------


def test_round_trip() -> None:
    before = int(time.time())
    claims = verify_token(mint("alice@example.com", name="Alice", ttl_s=60), keys=KEYS)
    assert isinstance(claims, Claims)
    assert claims.identity == "alice@example.com"
    assert claims.name == "Alice"
    assert claims.api_key == KEY
    assert before <= claims.issued_at <= int(time.time())
    assert claims.expires_at == claims.issued_at + 60


def test_token_of_the_second_key_uses_its_secret() -> None:
    token = mint_token(api_key=OTHER_KEY, api_secret=OTHER_SECRET, identity="carol")
    assert verify_token(token, keys=KEYS).api_key == OTHER_KEY


def test_expired_token() -> None:
    token = mint(ttl_s=60, now=time.time() - 3600)
    exc = refused(token)
    assert exc.code == "token_expired"
    assert exc.message == "token has expired"


def test_expiry_tolerates_clock_skew_within_leeway() -> None:
    assert ALGORITHM == "HS256"
    assert LEEWAY_S == 5
    just_expired = mint(ttl_s=10, now=time.time() - 12)
    assert verify_token(just_expired, keys=KEYS).identity == "alice"


def test_now_argument_expires_tokens_beyond_leeway() -> None:
    token = mint(ttl_s=60)
    now = time.time()
    assert verify_token(token, keys=KEYS, now=now + 60).identity == "alice"
    assert refused(token, now=now + 60 + LEEWAY_S + 2).code == "token_expired"


def test_forged_signature() -> None:
    forged = mint_token(api_key=KEY, api_secret="wrong-" + "w" * 40, identity="alice")
    exc = refused(forged)
    assert exc.code == "invalid_token"
    assert "signature" in exc.message


def test_tampered_payload() -> None:
    header, _, sig = mint("alice").split(".")
    payload = b64(json.dumps(claims_now(sub="admin")).encode())
    exc = refused(f"{header}.{payload}.{sig}")
    assert exc.code == "invalid_token"


def test_unknown_issuer() -> None:
    token = mint_token(api_key="stranger", api_secret=SECRET, identity="alice")
    exc = refused(token)
    assert exc.code == "invalid_token"
    assert "issuer" in exc.message


def test_issuer_signed_with_another_keys_secret() -> None:
    token = mint_token(api_key=OTHER_KEY, api_secret=SECRET, identity="alice")
    assert refused(token).code == "invalid_token"


@pytest.mark.parametrize("payload", [{"sub": "alice", "exp": 2**31}, {"iss": 7, "sub": "a"}])
def test_missing_or_non_string_issuer(payload: dict[str, Any]) -> None:
    exc = refused(hand_made({"alg": "HS256", "typ": "JWT"}, payload))
    assert exc.code == "invalid_token"
    assert "issuer" in exc.message


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode(claims_now(), key="", algorithm="none")
    assert unsigned.endswith(".")
    exc = refused(unsigned)
    assert exc.code == "invalid_token"
    assert "HS256" in exc.message


def test_other_hmac_algorithm_is_refused() -> None:
    token = jwt.encode(claims_now(), SECRET + "x" * 64, algorithm="HS512")
    assert refused(token, keys={KEY: SECRET + "x" * 64}).code == "invalid_token"


def test_alg_header_lie_is_refused() -> None:
    # Claims HS256 in the header but carries an HS512 signature.
    header, payload, _ = mint("alice").split(".")
    sig = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha512).digest()
    assert refused(f"{header}.{payload}.{b64(sig)}").code == "invalid_token"


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b.c", "a.b", "...", "eyJhbGciOiJIUzI1NiJ9.e30.x", "\x00", "é.é.é"],
)
def test_garbage_tokens(token: str) -> None:
    exc = refused(token)
    assert exc.code == "invalid_token"
    assert exc.message == "token is not a well-formed JWT"


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_required_claims(missing: str) -> None:
    payload = claims_now()
    del payload[missing]
    exc = refused(jwt.encode(payload, SECRET, algorithm="HS256"))
    assert exc.code == "invalid_token"
    assert missing in exc.message


@pytest.mark.parametrize("sub", ["a b", "", "x" * 129, "ümlaut"])
def test_invalid_subject(sub: str) -> None:
    exc = refused(jwt.encode(claims_now(sub=sub), SECRET, algorithm="HS256"))
    assert exc.code == "invalid_token"


def test_non_string_subject() -> None:
    assert refused(hand_made({"alg": "HS256"}, claims_now(sub=42))).code == "invalid_token"


@pytest.mark.parametrize("field", ["exp", "nbf"])
def test_times_must_be_numbers_not_numbers_in_strings(field: str) -> None:
    # PyJWT takes "1796000000" for a time; the claims here are JSON numbers (RFC 7519).
    valid = int(time.time()) + (600 if field == "exp" else -600)
    token = hand_made({"alg": "HS256"}, claims_now(**{field: str(valid)}))
    for now in (None, time.time()):
        exc = refused(token, now=now)
        assert (exc.code, exc.message) == ("invalid_token", f"token `{field}` must be a number")


def test_undecodable_text_is_a_garbage_token() -> None:
    # An Authorization header's bytes that are not UTF-8, as aiohttp hands them on.
    token = mint("alice") + b"\xff".decode("utf-8", "surrogateescape")
    assert refused(token).message == "token is not a well-formed JWT"


def test_not_yet_valid_token() -> None:
    token = jwt.encode(claims_now(nbf=int(time.time()) + 600), SECRET, algorithm="HS256")
    assert refused(token).code == "invalid_token"


def test_iat_is_optional_and_unchecked() -> None:
    payload = claims_now()
    del payload["iat"]
    assert verify_token(jwt.encode(payload, SECRET, algorithm="HS256"), keys=KEYS).issued_at == 0
    future = jwt.encode(claims_now(iat=int(time.time()) + 3600), SECRET, algorithm="HS256")
    assert verify_token(future, keys=KEYS).identity == "alice"


@pytest.mark.parametrize("name", [None, "", 5])
def test_name_falls_back_to_identity(name: object) -> None:
    payload = claims_now()
    if name is not None:
        payload["name"] = name
    claims = verify_token(jwt.encode(payload, SECRET, algorithm="HS256"), keys=KEYS)
    assert claims.name == "alice"


# --- grants -----------------------------------------------------------------------------


def test_grants_survive_the_token() -> None:
    grants = Grants(rooms=["a", "b"], can_publish=False, can_subscribe=False, admin=True)
    assert verify_token(mint(grants=grants), keys=KEYS).grants == grants


def test_partial_grants_take_defaults_and_ignore_unknown_fields() -> None:
    token = jwt.encode(
        claims_now(grants={"can_publish": False, "future": 1}), SECRET, algorithm="HS256"
    )
    grants = verify_token(token, keys=KEYS).grants
    assert grants == Grants(rooms=["*"], can_publish=False, can_subscribe=True, admin=False)


@pytest.mark.parametrize(
    "grants", ["x", 5, {"rooms": "x"}, {"rooms": [1]}, {"admin": "yes"}, {"can_publish": 1}]
)
def test_malformed_grants(grants: object) -> None:
    exc = refused(jwt.encode(claims_now(grants=grants), SECRET, algorithm="HS256"))
    assert exc.code == "invalid_token"
    assert "grants" in exc.message


def test_may_join() -> None:
    assert Grants().may_join("anything")
    assert Grants(rooms=["*"]).may_join("standup")
    limited = Grants(rooms=["standup", "retro"])
    assert limited.may_join("standup")
    assert limited.may_join("retro")
    assert not limited.may_join("board")
    assert not Grants(rooms=[]).may_join("standup")


# --- dev-login identities ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "identity"),
    [
        ("Ada Lovelace", "ada-lovelace"),
        ("  Ada   Lovelace  ", "ada-lovelace"),
        ("bob", "bob"),
        ("Bob.Smith@Example.com", "bob.smith@example.com"),
        ("a+b:c_d", "a+b:c_d"),
        ("a/b\\c", "a-b-c"),
        ("Émile Zola!", "emile-zola"),
        ("\uff22\uff4f\uff42", "bob"),  # fullwidth
        ("--x--", "x"),
        ("a--b", "a--b"),
        ("李", "u674e"),
        ("张三 Bob", "u5f20-u4e09-bob"),
        ("Алиса", "u430-u43b-u438-u441-u430"),
        ("!!!", ""),
        ("😀", ""),
    ],
)
def test_slug_identity(name: str, identity: str) -> None:
    assert slug_identity(name) == identity


def test_slug_identity_is_cut_to_the_identity_limit() -> None:
    slug = slug_identity("a" * 300)
    assert slug == "a" * 128


@pytest.mark.parametrize("name", ["Ada Lovelace", "x y z", "R2-D2", "Ünïcödé Nàme", "a" * 300])
def test_slugs_are_mintable_identities(name: str) -> None:
    slug = slug_identity(name)
    assert verify_token(mint(slug), keys=KEYS).identity == slug


# --- once known bugs, kept as regression tests ---


def test_identity_with_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="identity must match"):
        mint("alice\n")


def test_non_numeric_iat_is_an_invalid_token() -> None:
    exc = refused(hand_made({"alg": "HS256", "typ": "JWT"}, claims_now(iat="yesterday")))
    assert exc.code == "invalid_token"
