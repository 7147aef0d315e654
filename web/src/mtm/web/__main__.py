"""`python -m mtm.web`: the web app on MTM_WEB_HOST:MTM_WEB_PORT (uvicorn)."""

from __future__ import annotations

import uvicorn

from mtm.web.settings import WebSettings


def main() -> None:
    settings = WebSettings()
    uvicorn.run(
        "mtm.web.app:create_app",
        factory=True,
        host=settings.web_host,
        port=settings.web_port,
        proxy_headers=True,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
