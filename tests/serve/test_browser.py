"""The page in real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium), against a real ``captionkit serve`` on 127.0.0.1: upload three Flickr8k photos,
see their captions, edit one, download the JSONL and find the edit in it; with ``--root``,
caption the images without a sidecar, edit one, save it, and read it back from disk.
Screenshots go to the test's folder and to /tmp/serve_screenshot.png (upload) and
/tmp/serve_screenshot_root.png (``--root``)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import server

from helpers.fakes import caption_for  # noqa: F401  (documents the fake's captions)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLICKR = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k-dev" / "images"
SCREENSHOT = Path("/tmp/serve_screenshot.png")


def photos(n: int = 3) -> list[Path]:
    if not FLICKR.is_dir():
        pytest.skip(f"needs ../shared beside the repo ({FLICKR} is absent)")
    return sorted(FLICKR.glob("*.jpg"))[:n]


@pytest.fixture
def browser(tmp_path) -> Iterator:
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, predicate, timeout: float = 20.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate(driver)
        if value:
            return value
        time.sleep(0.05)
    status = driver.find_element("id", "status").text
    raise AssertionError(f"timed out waiting for {what}; status: {status!r}")


def cards(driver):
    return driver.find_elements("css selector", "#results .card")


def captions(driver) -> list[str]:
    return [
        c.find_element("css selector", "textarea").get_attribute("value") for c in cards(driver)
    ]


def screenshot(driver, path: Path, copy: Path = SCREENSHOT) -> None:
    """Into the test's folder, and a copy in /tmp for people to look at."""
    driver.save_screenshot(str(path))
    shutil.copyfile(path, copy)


def test_upload_three_photos_edit_one_download_jsonl(browser, tmp_path):
    """The grounded default (the real offline pipeline) captions three Flickr8k photos."""
    from selenium.webdriver.common.keys import Keys

    pytest.importorskip("cv2", reason="the grounded default needs the grounded extra")
    files = photos(3)
    with server(fake=False) as (url, _):
        browser.get(url)
        wait(browser, lambda d: d.find_element("id", "status").text == "Ready.", what="Ready.")
        # Every form control has a label (the page is usable with a screen reader).
        unlabeled = browser.execute_script(
            "return [...document.querySelectorAll('input, select, textarea')]"
            ".filter(e => !e.labels || e.labels.length === 0).map(e => e.id || e.type)"
        )
        assert unlabeled == []
        browser.find_element("id", "files").send_keys("\n".join(str(p) for p in files))
        wait(
            browser,
            lambda d: (
                len(cards(d)) == 3
                and all(captions(d))
                and not d.find_elements("css selector", ".card.busy")
            ),
            what="three captions",
        )
        found = captions(browser)
        assert all(len(c.split()) >= 3 for c in found), found
        names = [c.find_element("css selector", ".name").text for c in cards(browser)]
        assert names == [p.name for p in files]
        # Edit the second caption; the thumbnail's alt text follows it.
        area = cards(browser)[1].find_element("css selector", "textarea")
        area.send_keys(Keys.CONTROL, "a")
        area.send_keys("A dog runs on the grass, checked by a person.")
        thumb = cards(browser)[1].find_element("css selector", "img")
        assert thumb.get_attribute("alt") == "A dog runs on the grass, checked by a person."
        screenshot(browser, tmp_path / "upload.png")
        browser.find_element("id", "download-jsonl").click()
        target = browser.downloads / "captions.jsonl"
        wait(browser, lambda d: target.exists() and target.stat().st_size > 0, what="the download")
        records = [json.loads(line) for line in target.read_text().splitlines()]
        assert [r["source"] for r in records] == [p.name for p in files]
        assert records[1]["text"] == "A dog runs on the grass, checked by a person."
        assert records[1]["edited"] is True and records[1]["original_text"] == found[1]
        assert records[0]["text"] == found[0] and records[0]["backend"] == "grounded"
        assert {"candidates", "error", "timings"} <= set(records[0])


def test_root_mode_caption_missing_edit_and_save_a_sidecar(browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    root = tmp_path / "dataset"
    root.mkdir()
    files = photos(3)
    for p in files:
        shutil.copy(p, root / p.name)
    (root / files[0].with_suffix(".txt").name).write_text("an existing caption\n")
    with server("--root", str(root), env={"FAKE_DELAY": "0"}) as (url, _):
        browser.get(url)
        wait(browser, lambda d: len(cards(d)) == 3, what="the folder's images")
        assert captions(browser) == ["an existing caption", "", ""]
        summary = browser.find_element("id", "folder-summary").text
        assert summary == "3 images, 2 without a sidecar."
        browser.find_element("id", "caption-missing").click()
        wait(browser, lambda d: all(captions(d)), what="captions of the images without sidecars")
        assert captions(browser)[0] == "an existing caption"  # not recaptioned
        assert all(c.startswith("a ") and c.endswith(" image") for c in captions(browser)[1:])
        card = cards(browser)[2]
        area = card.find_element("css selector", "textarea")
        area.send_keys(Keys.CONTROL, "a")
        area.send_keys("Two children play in a fountain.")
        card.find_element("css selector", "button.save").click()
        sidecar = root / files[2].with_suffix(".txt").name
        wait(browser, lambda d: sidecar.exists(), what="the saved sidecar")
        assert sidecar.read_text() == "Two children play in a fountain.\n"
        assert not (root / files[1].with_suffix(".txt").name).exists()  # only what was saved
        wait(browser, lambda d: "Saved" in d.find_element("id", "status").text, what="Saved")
        screenshot(
            browser, tmp_path / "root.png", SCREENSHOT.with_name("serve_screenshot_root.png")
        )
