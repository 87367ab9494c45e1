"""A user's day in the browser, through the gateway: sign in, browse the tools, submit runs
through the form generated from a tool's schema (a field error from the server included),
watch one finish live, download and verify its outputs, cancel another, export provenance;
another tenant's user sees none of it; a development session driven from the browser."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Screens, check_page, sign_in
from tests.stack import AUDITOR, FLNET, OTHER_USER, RunningStack

BEHAVE = Path(__file__).parent.parent / "fixtures" / "tools" / "behave"
LOGREG = EXAMPLES / "logreg"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(ui_stack: RunningStack) -> RunningStack:
    ui_stack.flnet("tool", "register", str(LOGREG))
    ui_stack.flnet("tool", "register", str(BEHAVE))
    return ui_stack


def visit(page: Page, path: str) -> None:
    """In-app navigation (a page load would sign in again: tokens live in memory only)."""
    page.evaluate(
        "p => { history.pushState(null, '', p); dispatchEvent(new PopStateEvent('popstate')) }",
        path,
    )


def run_id(page: Page) -> str:
    match = re.search(r"/runs/([^/?#]+)$", page.url)
    assert match, page.url
    return match.group(1)


def stored_run(stack: RunningStack, run: str) -> dict[str, object]:
    done = stack.flnet("-o", "json", "run", "get", f"tenants/default/runs/{run}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def run_names(stack: RunningStack) -> set[str]:
    listed = json.loads(stack.flnet("-o", "json", "run", "list", "--limit", "1000").stdout)
    return {str(run["name"]) for run in listed}


def choose_tool(page: Page, tool: str) -> None:
    page.get_by_label("Tool", exact=True).select_option(label=tool)
    expect(page.get_by_role("button", name="Submit run")).to_be_visible()


def test_a_run_from_the_generated_form_to_its_verified_outputs(
    stack: RunningStack, page: Page, screens: Screens, tmp_path: Path
) -> None:
    sign_in(page, stack, path="/tools")
    expect(page.get_by_role("link", name="logreg")).to_be_visible()
    check_page(page, screens, "tools")
    page.get_by_role("link", name="logreg").first.click()
    expect(page.get_by_role("heading", name="Configuration contract")).to_be_visible()
    expect(page.get_by_text("learning_rate").first).to_be_visible()
    check_page(page, screens, "tool")

    # A rule of the schema only the server checks: its field violation shows at the field.
    page.get_by_role("link", name="Submit a run").first.click()
    choose_tool(page, "behave")
    label = page.get_by_label("label", exact=False).first
    label.fill("forbidden")
    page.get_by_role("button", name="Submit run").click()
    expect(label).to_have_attribute("aria-invalid", "true")
    # At the field: the server's message is part of the field's accessible description.
    expect(label).to_have_accessible_description(re.compile("should not be valid"))
    check_page(page, screens, "server-field-error")

    # Client-side checks from the schema: below the minimum, refused before any call.
    choose_tool(page, "logreg")
    epochs = page.get_by_label("epochs", exact=False).first
    epochs.fill("0")
    page.get_by_role("button", name="Submit run").click()
    expect(epochs).to_have_attribute("aria-invalid", "true")
    expect(epochs).to_have_accessible_description(re.compile("at least 1"))
    epochs.fill("120")
    page.get_by_label("File for data").set_input_files(str(LOGREG / "sample.csv"))
    expect(page.get_by_text(re.compile(r"Uploaded sample\.csv .*sha256 verified"))).to_be_visible(
        timeout=30_000
    )
    # Each problem fixed in its field leaves the summary too.
    expect(page.get_by_text(re.compile("to fix before the run can start"))).to_have_count(0)
    check_page(page, screens, "submit")
    page.get_by_role("button", name="Submit run").click()
    expect(page).to_have_url(re.compile(r"/runs/(?!new)[^/?#]+$"), timeout=15_000)
    run = run_id(page)

    expect(page.get_by_text("FINISHED", exact=True).first).to_be_visible(timeout=120_000)
    expect(page.get_by_label("Log lines")).to_contain_text("final loss")
    metrics = page.locator("section", has=page.get_by_role("heading", name="Metrics"))
    expect(metrics.locator("canvas").first).to_be_visible()
    check_page(page, screens, "run-finished")

    # Every event the page showed, once each, in order: the stored history.
    shown = page.evaluate("() => window.__flnetRunEvents")
    assert shown == list(range(1, len(shown) + 1))
    stored = stored_run(stack, run)
    assert len(shown) == int(str(stored["lastSequence"]))

    outputs = {str(o["outputName"]): o for o in stored["outputs"]}  # type: ignore[attr-defined]
    with page.expect_download() as download:
        page.get_by_role("button", name="Download model").click()
    expect(page.get_by_text("sha256 verified").first).to_be_visible()
    saved = tmp_path / "model.json"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == outputs["model"]["sha256"]
    page.get_by_role("button", name="Preview report").click()
    expect(page.locator("iframe[sandbox]")).to_be_attached()
    check_page(page, screens, "outputs")

    expect(page.get_by_role("heading", name="Provenance")).to_be_visible()
    expect(page.get_by_text(str(stored["configSha256"])).first).to_be_visible()
    with page.expect_download() as crate:
        page.get_by_role("button", name="Export RO-Crate").click()
    exported = tmp_path / "crate.zip"
    crate.value.save_as(exported)
    with zipfile.ZipFile(exported) as archive:
        assert "ro-crate-metadata.json" in archive.namelist()
    check_page(page, screens, "provenance")


def test_a_running_run_is_cancelled_with_a_reason(
    stack: RunningStack, page: Page, screens: Screens
) -> None:
    submitted = stack.flnet(
        "-o", "json", "run", "submit", "behave", "-c", "mode=sleep", "-c", "seconds=120"
    )
    run = str(json.loads(submitted.stdout)["name"]).rsplit("/", 1)[1]
    sign_in(page, stack, path=f"/runs/{run}")
    expect(page.get_by_text("RUNNING", exact=True).first).to_be_visible(timeout=30_000)
    # By keyboard: Enter opens the dialog, Escape closes it.
    page.get_by_role("button", name="Cancel run").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Reason")).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Cancel run").click()
    dialog.get_by_label("Reason").fill("wrong parameters")
    check_page(page, screens, "cancel-dialog")
    dialog.get_by_role("button", name="Confirm cancel").click()
    expect(page.get_by_text("CANCELLED", exact=True).first).to_be_visible(timeout=30_000)
    check_page(page, screens, "cancelled")
    stored = stored_run(stack, run)
    assert stored["state"] == "RUN_STATE_CANCELLED"
    assert "wrong parameters" in json.dumps(stored)


def test_the_runs_list_filters_by_state_and_another_tenant_sees_none(
    stack: RunningStack, browser: Browser, page: Page, screens: Screens
) -> None:
    finished = json.loads(stack.flnet("-o", "json", "run", "submit", "behave").stdout)
    stack.flnet("run", "watch", str(finished["name"]))
    running = json.loads(
        stack.flnet(
            "-o", "json", "run", "submit", "behave", "-c", "mode=sleep", "-c", "seconds=6"
        ).stdout
    )
    sign_in(page, stack, path="/runs")
    expect(page.get_by_role("table")).to_be_visible()
    # The list follows its runs: the sleeping run's row turns FINISHED without a reload.
    row = page.get_by_role("row").filter(has_text=str(running["name"]).rsplit("/", 1)[1])
    expect(row).to_contain_text(re.compile("PENDING|INITIALIZED|STARTED|RUNNING"))
    expect(row).to_contain_text("FINISHED", timeout=30_000)
    page.get_by_label("State").select_option(label="FINISHED")
    expect(page.get_by_role("row").nth(1)).to_contain_text("FINISHED")
    check_page(page, screens, "runs")

    other = browser.new_context(viewport={"width": 420, "height": 900})  # a narrow window
    try:
        theirs = other.new_page()
        sign_in(theirs, stack, user=OTHER_USER, path="/runs")
        expect(theirs.get_by_text("No runs yet.")).to_be_visible()
        check_page(theirs, screens, "other-tenant-runs")
        visit(theirs, f"/runs/{str(finished['name']).rsplit('/', 1)[1]}")
        expect(theirs.get_by_text(re.compile("not found", re.IGNORECASE)).first).to_be_visible()
        check_page(theirs, screens, "other-tenant-run")
    finally:
        other.close()


@pytest.fixture
def dev_session(stack: RunningStack) -> Iterator[str]:
    """`flnet dev connect` of the logreg example, held open while the test runs."""
    connect = subprocess.Popen(
        [
            *FLNET, "--data-dir", str(stack.data), "-o", "json", "dev", "connect", str(LOGREG),
            "-i", f"data={LOGREG / 'sample.csv'}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert connect.stdout is not None
        line = connect.stdout.readline()
        assert line, connect.stderr.read() if connect.stderr else ""
        yield str(json.loads(line)["session"]["name"]).rsplit("/", 1)[1]
    finally:
        connect.terminate()
        connect.wait(30)


def test_a_development_session_is_configured_and_tested_from_the_browser(
    stack: RunningStack, dev_session: str, page: Page, screens: Screens
) -> None:
    sign_in(page, stack, path="/dev-sessions")
    page.get_by_role("link", name=dev_session).click()
    expect(page.get_by_role("heading", name="Configuration")).to_be_visible()
    check_page(page, screens, "dev-session")
    epochs = page.get_by_label("epochs", exact=False).first
    epochs.fill("7")
    page.get_by_role("button", name="Apply configuration").click()
    expect(page.get_by_text(re.compile("applied", re.IGNORECASE)).first).to_be_visible()
    page.get_by_role("button", name="Start test run").click()
    expect(page.get_by_role("heading", name=re.compile("^Test run "))).to_be_visible()
    expect(page.get_by_text("FINISHED", exact=True).first).to_be_visible(timeout=120_000)
    check_page(page, screens, "dev-test-run")


def test_a_user_without_the_scope_is_told_so_and_nothing_is_submitted(
    stack: RunningStack, page: Page, screens: Screens
) -> None:
    before = run_names(stack)
    sign_in(page, stack, user=AUDITOR, path="/runs/new?tool=behave")
    page.get_by_role("button", name="Submit run").click()
    expect(
        page.get_by_text(re.compile("You don't have permission to submit")).first
    ).to_be_visible()
    check_page(page, screens, "permission-denied")
    assert run_names(stack) == before
