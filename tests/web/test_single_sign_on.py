"""Hospital single sign-on: the web app as an OpenID Connect client of a small local provider (real HTTP)."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import httpx
import pytest
from support.oidc import CLIENT_ID, CLIENT_SECRET, Provider
from support.web import add_accounts, free_port, running_web, serving, web_settings

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def provider_running():
    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}")
    async with serving(provider.app(), port):
        yield provider


async def through_provider(web_client: httpx.AsyncClient) -> httpx.Response:
    """A browser's round trip: the app sends it to the provider, the provider back with a code."""
    start = await web_client.get("/auth/sso")
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient() as browser:
        back = await browser.get(start.headers["location"])
    assert back.status_code == 302
    callback = urlsplit(back.headers["location"])
    return await web_client.get(f"{callback.path}?{callback.query}")


async def test_sign_on_through_the_hospital_provider_for_an_existing_account_only(infra):
    async with provider_running() as provider:
        settings = web_settings(
            infra,
            web_oidc_issuer=provider.issuer,
            web_oidc_client_id=CLIENT_ID,
            web_oidc_client_secret=CLIENT_SECRET,
            web_oidc_label="St Elsewhere SSO",
        )
        async with running_web(settings) as web:
            await add_accounts(web.store)
            async with web.client() as client:
                login = await client.get("/login")
                assert "St Elsewhere SSO" in login.text
                signed_in = await through_provider(client)
                assert signed_in.status_code == 303 and signed_in.headers["location"] == "/worklist"
                assert "httponly" in signed_in.headers["set-cookie"].lower()
                page = await client.get("/worklist")
                assert page.status_code == 200 and 'data-user="ana"' in page.text
            assert provider.issued and provider.issued[-1]["nonce"], "the app asks for and checks a nonce"

            provider.user = "mallory"  # the provider knows her, mtm has no account for her
            async with web.client() as client:
                refused = await through_provider(client)
                assert refused.status_code == 403 and "no mtm account" in refused.text
                assert (await client.get("/worklist")).status_code == 303

            provider.user = "ana"
            async with web.client() as client:
                start = await client.get("/auth/sso")
                async with httpx.AsyncClient() as browser:
                    back = await browser.get(start.headers["location"])
                callback = urlsplit(back.headers["location"])
                forged = callback.query.replace("state=", "state=forged")
                tampered = await client.get(f"{callback.path}?{forged}")
                assert tampered.status_code == 401 and "single sign-on failed" in tampered.text
                assert (await client.get("/worklist")).status_code == 303
