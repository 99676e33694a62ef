"""OpenID Connect, the relying party's half, through Authlib: discovery, the authorization URL
(authorization-code flow with PKCE S256, state and nonce), the code exchange, and the ID token's
verification against the provider's JWKS — signature, issuer, audience (and authorized party),
expiry, issue time and nonce.

Discovery and keys are fetched on first use (the provider being down does not stop the server from
starting) and kept for an hour; an ID token signed with a key not yet seen fetches the keys again
once (key rotation). Only asymmetric signatures are accepted: never `none`, never HMAC.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.oidc.core import CodeIDToken

with warnings.catch_warnings():
    # Authlib 1.9 prefers the `httpx2` fork and warns at import when it runs on httpx, which the
    # rest of the server uses: the client works the same, and the warning would be the first line
    # `llama2 serve` prints.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from llama2.serve.config import SSOProvider

METADATA_TTL_S = 3600.0
HTTP_TIMEOUT_S = 10.0
LEEWAY_S = 60  # clock skew allowed between this server and the provider
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class SSOError(Exception):
    """A sign-in the provider or its token did not allow; the message is for the person signing in
    (no token, code or secret in it). `reason` is the short form the audit log keeps."""

    def __init__(self, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def new_secrets() -> tuple[str, str, str]:
    """(state, nonce, PKCE code verifier) for one sign-in."""
    return generate_token(43), generate_token(43), generate_token(64)


class OIDCClient:
    """One configured provider. `clock` gives the time ID tokens are checked against (tests move it)."""

    def __init__(self, provider: SSOProvider, client_secret: str | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self._secret = client_secret
        self.clock = clock
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.provider.client_id, client_secret=self._secret, scope=" ".join(self.provider.scopes),
            redirect_uri=redirect_uri, code_challenge_method="S256", timeout=HTTP_TIMEOUT_S,
            token_endpoint_auth_method="client_secret_basic" if self._secret else "none",
        )

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        metadata = await self.metadata()
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(metadata["authorization_endpoint"], state=state, nonce=nonce,
                                                     code_verifier=code_verifier)
        return url

    async def exchange(self, code: str, redirect_uri: str, code_verifier: str) -> str:
        """The ID token the provider gives for an authorization code."""
        metadata = await self.metadata()
        label = self.provider.label
        try:
            async with self._client(redirect_uri) as client:
                token = await client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=code_verifier,
                                                 grant_type="authorization_code")
        except OAuthError as exc:
            raise SSOError(f"{label} refused to complete the sign-in ({exc.error}); start again.",
                           f"token request refused: {exc.error}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise SSOError(f"Cannot reach {label} to complete the sign-in ({type(exc).__name__}); try again later.",
                           f"token request failed: {type(exc).__name__}", 502) from None
        if not isinstance(token.get("id_token"), str):
            raise SSOError(f"{label} sent no ID token; check that the openid scope is allowed for this client.",
                           "no id_token in the token response", 502)
        return token["id_token"]

    async def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once its signature (the provider's JWKS), issuer, audience, expiry and
        nonce check out; SSOError saying which did not."""
        metadata = await self.metadata()
        algorithms = [a for a in metadata.get("id_token_signing_alg_values_supported") or ["RS256"] if a in ASYMMETRIC]
        token = await self._decode(id_token, algorithms or ["RS256"])
        options = {"iss": {"essential": True, "value": self.provider.issuer},
                   "aud": {"essential": True, "value": self.provider.client_id}}
        claims = CodeIDToken(token.claims, token.header, options, {"nonce": nonce, "client_id": self.provider.client_id})
        label = self.provider.label
        try:
            claims.validate(now=int(self.clock()), leeway=LEEWAY_S)
        except ExpiredTokenError:
            raise SSOError(f"The sign-in token from {label} has expired (is this server's clock right?); start again.",
                           "id token expired") from None
        except (InvalidClaimError, MissingClaimError) as exc:
            claim = getattr(exc, "claim", None) or str(exc)
            if claim == "nonce":
                raise SSOError(f"The sign-in token from {label} belongs to another sign-in (its nonce does not "
                               "match); start again.", "id token nonce mismatch") from None
            raise SSOError(f"The sign-in token from {label} is not valid for this server (claim {claim!r}); "
                           "start again, or ask an admin to check web.sso.", f"id token claim {claim} invalid") from None
        return dict(claims)

    async def _decode(self, id_token: str, algorithms: list[str]) -> jwt.Token:
        registry = JWSRegistry(algorithms=algorithms)
        for force in (False, True):
            keys = await self._key_set(force=force)
            try:
                return jwt.decode(id_token, _pick_key(keys, id_token), registry=registry)
            except JoseError as exc:
                if force:
                    raise SSOError(f"The sign-in token from {self.provider.label} is not signed by it "
                                   f"({exc.error}); start again.", f"id token signature invalid: {exc.error}") from None
            except ValueError:
                raise SSOError(f"{self.provider.label} sent a malformed sign-in token; start again.",
                               "id token malformed") from None
        raise AssertionError("unreachable")

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached), checked to be for the configured issuer."""
        if self._metadata is None or time.monotonic() - self._fetched_at > METADATA_TTL_S:
            url = self.provider.issuer + "/.well-known/openid-configuration"
            document = await self._get_json(url)
            if document.get("issuer", "").rstrip("/") != self.provider.issuer:
                raise SSOError(f"{self.provider.label} describes itself as issuer {document.get('issuer')!r}, not "
                               f"{self.provider.issuer!r}; an admin must fix web.sso's issuer.", "issuer mismatch", 502)
            missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not document.get(k)]
            if missing:
                raise SSOError(f"{self.provider.label}'s discovery document lacks {', '.join(missing)}.",
                               "discovery incomplete", 502)
            self._metadata, self._keys, self._fetched_at = document, None, time.monotonic()
        return self._metadata

    async def _key_set(self, *, force: bool) -> KeySet:
        if self._keys is None or force:
            metadata = await self.metadata()
            try:
                self._keys = KeySet.import_key_set(await self._get_json(metadata["jwks_uri"]))
            except (JoseError, ValueError, KeyError, TypeError):
                raise SSOError(f"{self.provider.label}'s signing keys (JWKS) cannot be read.", "jwks unreadable",
                               502) from None
        return self._keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                response = await client.get(url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SSOError(f"Cannot reach {self.provider.label}'s sign-in service at {url} "
                           f"({type(exc).__name__}); try again later.", f"cannot fetch {url}", 502) from None
        if not isinstance(document, dict):
            raise SSOError(f"{url} is not a JSON object.", f"bad document at {url}", 502)
        return document


def _pick_key(keys: KeySet, id_token: str) -> Any:
    """The key set itself when the token names its key (`kid`); else, as some providers sign without
    one, the only key of the set (a set of several and no `kid` is ambiguous and refused)."""
    from joserfc.jws import extract_compact

    try:
        header = extract_compact(id_token.encode()).protected
    except (JoseError, ValueError):
        raise SSOError("The provider sent a malformed sign-in token; start again.", "id token malformed") from None
    if header.get("kid") or len(keys.keys) != 1:
        return keys
    return keys.keys[0]
