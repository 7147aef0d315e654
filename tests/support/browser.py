"""Headless Chromium from the system's package (Debian `chromium`), driven by Playwright: never a downloaded browser."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Screenshots of every page a browser test visits: test artifacts, never committed.
ARTIFACTS = Path(os.environ.get("MTM_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
# The flags that keep Chromium quiet on a machine without a network or a display.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> str:
    found = os.environ.get("MTM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no Chromium: `make test` installs the Debian package chromium (apt-get install chromium)")
    return found


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Any, name: str, *also: Path) -> Path:
    folder = ARTIFACTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    for extra in also:
        extra.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(extra), full_page=False)
    return path
