"""The web page in a real browser: Debian's chromium driven by Playwright (nothing is downloaded).
Type a query and see thumbnails, open a "why?", drop in an image, delete an anchor and see the count
change, all by keyboard where a person would. Screenshots go to the test's folder, or to
``$ASIF_SCREENSHOTS`` when set (benchmarks/results/ holds the ones the docs show), so that a test run
leaves the repository as it was."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import find_chromium, serve_in_thread

from asif_vdb import AsifClient
from asif_vdb.serve import Service, Settings, create_app


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium fonts-dejavu-core; or set CHROMIUM_PATH)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield browser
        browser.close()


def test_the_page_searches_explains_takes_an_image_and_deletes_an_anchor(browser, serve_copy, tmp_path) -> None:
    store, queries, _ = serve_copy
    shots = Path(os.environ.get("ASIF_SCREENSHOTS") or tmp_path)
    started = time.perf_counter()
    with AsifClient(store) as client:
        service = Service(client, Settings(uploads=store / "uploads"))
        with serve_in_thread(create_app(service)) as url:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            page = context.new_page()
            page.set_default_timeout(60_000)
            hosts: set[str] = set()
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            # a text query, by keyboard: thumbnails with scores
            page.locator("#q").focus()
            page.keyboard.type("a red circle")
            page.keyboard.press("Enter")
            hits = page.locator("#results li.hit")
            hits.first.wait_for()
            assert hits.count() == 12
            page.wait_for_function("[...document.querySelectorAll('#results img')].slice(0, 6)"
                                   ".every(i => i.complete && i.naturalWidth > 0)")  # the first row has loaded
            assert "score" in hits.first.inner_text()
            page.screenshot(path=str(shots / "serve_search.png"), full_page=True)
            # "why?": the anchor pairs behind the first result, grouped by image; Escape closes it
            page.locator("#results .why-link").first.focus()
            page.keyboard.press("Enter")
            page.locator("#why-groups .group").first.wait_for()
            assert page.locator("#why").is_visible()
            assert page.locator("#why-groups .group li").count() >= page.locator("#why-groups .group").count() >= 1
            page.screenshot(path=str(shots / "serve_why.png"))
            page.keyboard.press("Escape")
            assert page.locator("#why").is_hidden()
            # an image: its classes, nearest captions and similar gallery images
            query, shape = queries[0]
            page.set_input_files("#file", str(query))
            page.locator("#classes li").first.wait_for()
            page.locator("#captions li").first.wait_for()
            page.locator("#results li.hit").first.wait_for()
            assert page.locator("#classes li").first.inner_text().startswith(shape)
            page.screenshot(path=str(shots / "serve_image.png"), full_page=True)
            # narrow window: no horizontal scrolling
            page.set_viewport_size({"width": 360, "height": 800})
            assert page.evaluate("document.documentElement.scrollWidth") <= 362
            page.set_viewport_size({"width": 1100, "height": 900})
            # the anchors page: delete one anchor by id; the count changes at once
            before = client.count()
            victim = client.anchor_ids()[0]
            page.locator("#tab-anchors").focus()
            page.keyboard.press("Enter")
            page.locator("#anchor-table-view tbody tr").first.wait_for()
            page.locator("#delete-ids").fill(str(victim))
            page.locator("#delete-ids").press("Enter")
            page.wait_for_selector(f"#delete-status:has-text('{before} → {before - 1}')")
            page.wait_for_selector(f"#anchor-count:has-text('{before - 1}')")
            assert client.count() == before - 1 and victim not in client.anchor_ids()
            page.screenshot(path=str(shots / "serve_anchors.png"), full_page=True)
            context.close()
            assert not errors, errors
            assert hosts == {url.split("/")[2]}  # nothing fetched from anywhere else
    print(f"\nbrowser test: {time.perf_counter() - started:.1f} s")
