"""Browser tests: Debian's headless Chromium, driven by Playwright, against a real `flnet up`
stack whose gateway serves the built UI. Every test saves a screenshot of each page it
visits under .test-artifacts/screenshots, and checks it with axe-core."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.stack import RunningStack, start_stack

ROOT = Path(__file__).parent.parent.parent
UI_DIST = ROOT / "frontend" / "dist"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("FLNET_TEST_ARTIFACTS_DIR", ROOT / ".test-artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


def _missing(what: str) -> None:
    """Outside CI a missing prerequisite skips; in CI it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module: Playwright's sync API holds an event loop in the thread while it runs,
    which the asyncio tests of later modules must not find."""
    if not Path(CHROMIUM).exists():
        _missing("no chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if not (UI_DIST / "index.html").exists():
        _missing("the web UI is not built: make frontend")
    stack = start_stack(tmp_path_factory.mktemp("ui") / "data")
    try:
        yield stack
    finally:
        stack.stop()


class Screens:
    """Screenshots of one test, numbered in the order taken."""

    def __init__(self, test: str) -> None:
        self.directory = ARTIFACTS / "screenshots"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.test = re.sub(r"[^A-Za-z0-9_.-]+", "_", test)
        self.count = 0

    def take(self, page: Page, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.test}-{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Screens:
    return Screens(request.node.name)


@pytest.fixture
def page(browser: Browser, screens: Screens) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    screens.take(page, "last")
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def sign_in(page: Page, stack: RunningStack, user: str = "admin", path: str = "/") -> None:
    """Opens `path` of the UI and signs in on the issuer's login page as `user`."""
    page.goto(stack.ui + path)
    sign_in_button = page.get_by_role("button", name="Sign in")
    login_form = page.get_by_label("User name")
    expect(sign_in_button.or_(login_form).first).to_be_visible(timeout=15_000)
    if not login_form.is_visible():
        sign_in_button.first.click()
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(stack.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=15_000)


def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.exists():
        _missing("axe-core is not installed: npm ci")
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    result: dict[str, Any] = page.evaluate(
        "async () => await window.axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:5]],
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def check_page(page: Page, screens: Screens, name: str) -> None:
    """A screenshot of the page, and no serious or critical accessibility violation."""
    screens.take(page, name)
    assert accessibility_violations(page) == [], name
