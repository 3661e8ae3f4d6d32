"""The page at / in a real browser: Debian's chromium, headless, through selenium and
/usr/bin/chromedriver, choosing a real test image and reading the top-1 the page shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import yingshe

pytestmark = pytest.mark.browser

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMEDRIVER).exists() or not Path(CHROMIUM).exists():
        pytest.fail(
            "chromium and chromedriver are needed: apt-get install chromium chromium-driver (make setup)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_page_classifies_a_chosen_real_image(server, browser, real_pngs, fashion_run, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    image = real_pngs[0]
    expected = yingshe.load(fashion_run.run_dir, device="cpu").predict([image], top_k=5)[0]
    browser.get(server + "/")
    WebDriverWait(browser, 20).until(lambda d: "classes" in d.find_element(By.ID, "about").text)
    browser.find_element(By.ID, "file").send_keys(str(image))
    WebDriverWait(browser, 20).until(ec.text_to_be_present_in_element((By.ID, "status"), "top-1:"))
    shown = browser.find_element(By.ID, "status").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#result tr.row")
    assert shown == f"top-1: {expected.label}"
    assert len(rows) == 5 and rows[0].find_elements(By.TAG_NAME, "td")[0].text == expected.label
    assert rows[0].find_elements(By.TAG_NAME, "td")[2].text == f"{100 * expected.top[0][1]:.1f}%"
    shot = tmp_path_factory.mktemp("page") / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 5000


def test_page_shows_the_services_refusal_for_junk(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    junk = tmp_path / "notes.png"
    junk.write_text("not an image at all")
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(junk))
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("class") == "error"
    )
    assert "not an image" in browser.find_element(By.ID, "status").text
