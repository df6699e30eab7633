"""The Dagster UI in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

``dagster dev`` serves the real definitions on a temporary instance; the browser finds every asset of the
pipeline in the asset graph, selects ``base_model``, opens the launchpad (Shift+click on *Materialize
selected*), switches it to the scratch source, launches, and watches the run page until it says *Success*.
Screenshots land in ``$FTOPS_TEST_ARTIFACTS`` (default ``test-artifacts/``, git-ignored).
No browser is downloaded: Playwright drives ``/usr/bin/chromium`` through ``executable_path``
(``make browser`` installs it). Without it the test skips, unless ``FTOPS_REQUIRE_BROWSER`` is set (CI).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.dagster_dev import REPO, DagsterDev, dagster_dev

CHROMIUM = os.environ.get("FTOPS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("FTOPS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
RUN_TIMEOUT_S = 120
# The launchpad's run config: a tiny scratch model materializes in seconds and needs no GGUF file; the step
# runs inside the run worker (in_process) rather than in one more process that imports torch again.
LAUNCHPAD_CONFIG = """\
execution:
  config:
    in_process: {}
ops:
  base_model:
    config:
      source: scratch
      scratch_hidden_size: 32
      scratch_layers: 1
"""
RUN_QUERY = """
query ($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status runConfigYaml } } }
"""
RUN_ERRORS_QUERY = """
query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  __typename ... on MessageEvent { message }
  ... on ExecutionStepFailureEvent { error { message cause { message } } }
  ... on EngineEvent { error { message } } } } } }
"""


def _browser_or_skip() -> None:
    """Skip when the browser stack is absent, unless CI said a browser is required."""
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium at {CHROMIUM} (`make browser` installs Debian's package)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not missing:
        return
    reason = "UI test needs " + " and ".join(missing)
    if os.environ.get("FTOPS_REQUIRE_BROWSER"):
        pytest.fail(reason + "; FTOPS_REQUIRE_BROWSER is set, so this is an error, not a skip")
    pytest.skip(reason)


def expected_asset_names() -> list[str]:
    """Every asset in the definitions, read now, so assets added later are covered too."""
    from ft_assets.definitions import defs

    # The graph labels a node with the last component of its key.
    return sorted(key.path[-1] for key in defs.resolve_all_asset_keys())


def label_matches(label: str, name: str) -> bool:
    """The graph middle-truncates long names (``preferen…dataset``): match head and tail around the ellipsis."""
    if "…" not in label:
        return label == name
    head, _, tail = label.partition("…")
    return len(name) > len(head) + len(tail) and name.startswith(head) and name.endswith(tail)


def unmatched(labels: list[str], names: list[str]) -> list[str]:
    """Names with no label of their own; exact labels are claimed first so truncated ones stay available."""
    free = list(labels)
    missing = []
    for name in sorted(names, key=lambda n: n not in labels):  # exact hits first
        hit = next((label for label in free if label_matches(label, name)), None)
        if hit is None:
            missing.append(name)
        else:
            free.remove(hit)
    return missing


def test_label_matching_handles_truncation():
    assert unmatched(["raw_records", "preferen…dataset"], ["preference_dataset", "raw_records"]) == []
    assert unmatched(["raw_records"], ["raw_records", "clean_records"]) == ["clean_records"]
    assert unmatched(["preferen…dataset"], ["preference_other"]) == ["preference_other"]
    # One label cannot stand for two assets.
    assert unmatched(["base_model"], ["base_model", "base_model"]) == ["base_model"]


def _wait_until_still(page, locator, timeout_s: float = 10) -> None:
    """Wait until the element's box stops moving, so a click lands on it and not where it was."""
    deadline = time.monotonic() + timeout_s
    box = None
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        now = locator.bounding_box()
        if now is not None and now == box:
            return
        box = now


def _graph_labels(page) -> list[str]:
    return page.locator("svg foreignObject [class*='assetName']").all_inner_texts()


def _run_failure_details(dev: DagsterDev, run_id: str) -> str:
    events = dev.graphql(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"].get("events", [])
    errors = []
    for event in events:
        error = event.get("error") or {}
        if error or event["__typename"] == "RunFailureEvent":
            errors += [error.get("message") or event.get("message"), (error.get("cause") or {}).get("message")]
    return "\n".join(m.strip() for m in errors if m)


def test_materialize_from_the_ui_in_chromium(tmp_path):
    _browser_or_skip()
    from dagster import AssetKey, DagsterEventType, DagsterRunStatus
    from playwright.sync_api import expect, sync_playwright

    names = expected_asset_names()
    assert "base_model" in names
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # The definitions' automation sensor may start its own base_model run on the fresh instance (build when
    # missing, default GGUF source: it fails here); every check below is about the run the browser launched.
    with dagster_dev(tmp_path) as dev, sync_playwright() as pw:
        served_at = time.monotonic()
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1200})
            page.set_default_timeout(30_000)
            # A fresh instance greets its first visitor with a newsletter dialog: mark it seen on the server
            # (what its Skip button does), and click Skip should it show up anyway.
            dev.graphql("mutation { setNuxSeen }")
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())

            # 1. The asset graph, every group expanded (Alt+E), shows every asset of the definitions.
            page.goto(f"{dev.url}/asset-groups")
            page.locator("svg foreignObject").first.wait_for()
            missing = names
            deadline = time.monotonic() + 30
            expanded = False
            while missing and time.monotonic() < deadline:
                if not expanded and page.locator("svg foreignObject [class*='assetName']").count() < len(names):
                    page.keyboard.press("Alt+KeyE")
                    expanded = True
                page.wait_for_timeout(500)
                missing = unmatched(_graph_labels(page), names)
            page.screenshot(path=str(ARTIFACTS / "asset_graph.png"))
            labels = _graph_labels(page)
            assert not missing, f"asset graph lacks {missing}; it shows {labels}"
            assert len(labels) == len(names), f"graph shows {labels}, definitions have {names}"

            # 2. Select base_model, Shift+click "Materialize selected": the launchpad opens with its config.
            node = page.locator("svg foreignObject [class*='assetName']").get_by_text("base_model", exact=True)
            _wait_until_still(page, node)  # the graph animates its zoom after expanding groups
            node.click()
            materialize = page.get_by_role("button", name=re.compile(r"\bMaterialize selected\b"))
            expect(materialize).to_be_visible()
            materialize.click(modifiers=["Shift"])
            dialog = page.get_by_role("dialog")
            editor = dialog.locator(".CodeMirror.cm-s-config-editor")
            editor.wait_for()
            editor.locator(".CodeMirror-code").click()
            page.keyboard.press("Control+A")
            page.keyboard.insert_text(LAUNCHPAD_CONFIG)  # typed text would be re-indented by the editor
            expect(dialog.get_by_text("No errors", exact=True)).to_be_visible()
            launch = dialog.get_by_role("button", name=re.compile(r"\bMaterialize$"))
            expect(launch).to_be_enabled()  # disabled while the edited config is being validated
            page.screenshot(path=str(ARTIFACTS / "launchpad.png"))
            launch.click()

            # 3. The UI opens the new run; watch its page until the status tag says Success (the server's
            #    GraphQL only cuts the wait short when the run failed).
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
            launched_at = time.monotonic()
            success_tag = page.get_by_text("Success", exact=True).first
            status = None
            while time.monotonic() - launched_at < RUN_TIMEOUT_S:
                if success_tag.is_visible():
                    break
                status = dev.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]["status"]
                if status in ("FAILURE", "CANCELED"):
                    page.screenshot(path=str(ARTIFACTS / "run_failed.png"))
                    pytest.fail(f"run {run_id} ended {status}:\n{_run_failure_details(dev, run_id)}")
                page.wait_for_timeout(1000)
            else:
                page.screenshot(path=str(ARTIFACTS / "run_timeout.png"))
                pytest.fail(f"run {run_id} not shown as succeeded after {RUN_TIMEOUT_S}s (status {status}):\n"
                            f"{dev.log_tail()}")
            expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible()
            assert dev.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]["status"] == "SUCCESS"
            page.screenshot(path=str(ARTIFACTS / "run_succeeded.png"))
            finished_at = time.monotonic()
        finally:
            browser.close()

        # 4. Dagster's own records agree: the run succeeded with the launchpad's config and materialized base_model.
        with dev.instance() as instance:
            run = instance.get_run_by_id(run_id)
            assert run.status == DagsterRunStatus.SUCCESS
            assert run.tags.get("dagster/from_ui") == "true"
            assert run.run_config["ops"]["base_model"]["config"]["source"] == "scratch"
            events = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
            assert [e.dagster_event.asset_key for e in events] == [AssetKey("base_model")]
            path = Path(events[0].asset_materialization.metadata["path"].value)
            assert path.is_dir() and path.is_relative_to(dev.ftops_home)
            assert (path / "card.json").is_file()
    print(f"\nUI test: server ready {served_at - started:.1f}s, graph + launch {launched_at - served_at:.1f}s, "
          f"run to success in UI {finished_at - launched_at:.1f}s; screenshots in {ARTIFACTS}")
