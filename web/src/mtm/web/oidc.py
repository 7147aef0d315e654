"""Hospital single sign-on over OpenID Connect (Authlib): the provider says who someone is, mtm's own accounts
say what they may do.

The ID token's `MTM_WEB_OIDC_USERNAME_CLAIM` (default `preferred_username`) names the mtm account; an account
must exist (`mtm user add NAME --role …`), be enabled, and then the session is the same as after a password
sign-in. The authorization request's state and nonce live in a short-lived signed cookie of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request

from mtm.web.settings import WebSettings

SSO_STATE_COOKIE = "mtm_sso"
SSO_STATE_TTL_S = 600


class SsoRefused(Exception):
    """The provider did not vouch for anyone, or for no one with an mtm account; the message says which."""


@dataclass
class Sso:
    client: Any
    username_claim: str
    label: str
    callback_url: str

    @classmethod
    def configure(cls, settings: WebSettings) -> Sso | None:
        if not settings.oidc_enabled:
            return None
        oauth = OAuth()
        secret = settings.web_oidc_client_secret.get_secret_value() if settings.web_oidc_client_secret else None
        issuer = (settings.web_oidc_issuer or "").rstrip("/")
        client = oauth.register(
            name="sso",
            client_id=settings.web_oidc_client_id,
            client_secret=secret,
            server_metadata_url=f"{issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": "openid profile"},
        )
        return cls(
            client,
            settings.web_oidc_username_claim,
            settings.web_oidc_label,
            f"{settings.public_url}/auth/sso/callback",
        )

    @staticmethod
    def middleware(settings: WebSettings) -> list[Middleware]:
        if not settings.oidc_enabled:
            return []
        return [
            Middleware(
                SessionMiddleware,
                secret_key=settings.session_secret(),
                session_cookie=SSO_STATE_COOKIE,
                max_age=SSO_STATE_TTL_S,
                same_site="lax",
                https_only=settings.secure_cookies,
            )
        ]

    async def start(self, request: Request) -> Any:
        return await self.client.authorize_redirect(request, self.callback_url)

    async def finish(self, request: Request) -> str:
        """The account name the provider vouched for (ID token checked: signature, issuer, audience, nonce)."""
        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as exc:
            raise SsoRefused(f"single sign-on failed ({exc.error})") from exc
        claims = token.get("userinfo") or {}
        username = claims.get(self.username_claim)
        if not isinstance(username, str) or not username:
            raise SsoRefused(f"the sign-on named no account (claim {self.username_claim!r} missing)")
        return username
