"""`python -m mtm.web`: the web app on MTM_WEB_HOST:MTM_WEB_PORT (uvicorn)."""

from __future__ import annotations

import uvicorn

from mtm.platform import tracing
from mtm.platform.logging import own_process
from mtm.web.settings import WebSettings


def main() -> None:
    settings = WebSettings()
    own_process("web")
    uvicorn.run(
        "mtm.web.app:create_app",
        factory=True,
        host=settings.web_host,
        port=settings.web_port,
        proxy_headers=True,
        log_level="warning",
        # The app routes every logger (uvicorn's too) through its JSON handler; uvicorn's own config would not.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    tracing.shutdown()


if __name__ == "__main__":
    main()
