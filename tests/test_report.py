"""``batchgen report``: the page opened in a real headless Chromium (Debian's ``chromium`` driven
by Selenium through ``chromium-driver``): one card per job, every image loaded, no console error,
prompts shown as text. The screenshot is kept in ``test-artifacts/report.png``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES, write_jsonl
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from batchgen.cli import ExitCode, main
from batchgen.simulator import SIMULATOR_KEY

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's packages (.ci/run)


@pytest.fixture
def browser(tmp_path):
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # no network here: its attempts would only fail
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_the_report_opens_with_one_card_per_job_and_every_image_loaded(
    make_simulator, tmp_path, monkeypatch, browser
):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    (tmp_path / "ref.png").write_bytes((SAMPLES / "images" / "t-rex.png").read_bytes())
    jobs = [
        {"id": "by-url", "model": "reve/create-image", "prompt": "a lighthouse <script>alert('x')</script>"},
        {"id": "inline", "model": "reve/create-image", "prompt": "a harbour", "convert_base64_to_url": False},
        {
            "id": "flux",
            "model": "flux/dev/image-to-image",
            "prompt": "a bird",
            "image_url": "ref.png",
            "num_images": 2,
        },
        {"id": "flagged", "model": "reve/create-image", "prompt": "[[violation]]"},
    ]
    out = tmp_path / "out"
    healthy = make_simulator()
    job_file = write_jsonl(tmp_path / "j.jsonl", jobs)
    assert main(["run", str(job_file), "--out", str(out), "--base-url", healthy.url]) == ExitCode.JOBS_FAILED
    write_jsonl(
        job_file,
        [*jobs, {"id": "lost", "model": "reve/edit-image", "prompt": "a hat", "image_url": "ref.png"}],
    )
    broken = make_simulator(cdn_fail=1.0)  # `lost`: answered, its image never downloaded
    assert (
        main(["run", str(job_file), "--out", str(out), "--base-url", broken.url, "--max-retries", "0"]) == 75
    )
    assert main(["report", str(out)]) == ExitCode.OK

    browser.get((out / "report.html").as_uri())
    cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
    assert sorted(card.find_element(By.TAG_NAME, "h2").text for card in cards) == sorted(
        j["id"] for j in [*jobs, {"id": "lost"}]
    )
    loaded = browser.execute_script(
        "return [...document.images].map(i => [i.className, i.complete && i.naturalWidth > 0])"
    )
    assert all(ok for _, ok in loaded), loaded
    assert [kind for kind, _ in loaded].count("result") == 4  # by-url, inline, flux x2
    assert [kind for kind, _ in loaded].count("reference") == 2  # flux's and lost's ref.png, beside them
    by_id = {card.find_element(By.TAG_NAME, "h2").text: card for card in cards}
    assert "<script>alert('x')</script>" in by_id["by-url"].text  # a prompt is text, never markup
    assert "content violation" in by_id["flagged"].text
    assert "image download answered HTTP 500" in by_id["lost"].text
    assert "ref.png" in by_id["flux"].text  # the reference image shown by name, never its data
    assert [h2.text for h2 in browser.find_elements(By.CSS_SELECTOR, "article.card h2")][:2] == [
        "flagged",
        "lost",
    ]
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    Select(browser.find_element(By.ID, "status-filter")).select_by_visible_text("failed")
    shown = [card for card in cards if card.is_displayed()]
    assert sorted(card.find_element(By.TAG_NAME, "h2").text for card in shown) == ["flagged", "lost"]
    Select(browser.find_element(By.ID, "status-filter")).select_by_visible_text("all")
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
    shutil.copy(out / "report.html", ARTIFACTS / "report.html")


def test_a_run_makes_a_small_folders_report_and_refreshes_one_that_exists(simulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    monkeypatch.setattr("batchgen.report.REPORT_UNASKED", 1)  # (a folder of 2 counts as large here)
    small, large = tmp_path / "small", tmp_path / "large"
    first = {"id": "first", "model": "reve/create-image", "prompt": "a fox"}
    job_file = write_jsonl(tmp_path / "j.jsonl", [first])
    assert main(["run", str(job_file), "--out", str(small), "--base-url", simulator.url]) == ExitCode.OK
    assert "<h2>first</h2>" in (small / "report.html").read_text()  # made unasked: a small folder

    two = [first, {"id": "second", "model": "reve/create-image", "prompt": "a whale"}]
    job_file = write_jsonl(tmp_path / "k.jsonl", two)
    assert main(["run", str(job_file), "--out", str(large), "--base-url", simulator.url]) == ExitCode.OK
    assert not (large / "report.html").exists()  # past that, made when asked: thumbnails cost time
    assert main(["report", str(large)]) == ExitCode.OK
    write_jsonl(job_file, [*two, {"id": "third", "model": "reve/create-image", "prompt": "a crab"}])
    assert main(["run", str(job_file), "--out", str(large), "--base-url", simulator.url]) == ExitCode.OK
    page = (large / "report.html").read_text()
    assert "<h2>third</h2>" in page and len(list((large / "thumbnails").iterdir())) == 3


def shop_jobs(count: int) -> list[dict[str, object]]:
    """A shop's folder: mostly new pictures, some edits of its own photos, a 4-image flux job,
    and a few prompts the API flags."""
    jobs: list[dict[str, object]] = [
        {"id": "variants", "model": "flux/dev/image-to-image", "prompt": "the mug in four colours",
         "image_url": "mug.jpg", "num_images": 4},
        {"id": "remix", "model": "reve/remix-edit-image", "prompt": "the two together", "image_urls": ["mug.jpg", "ref.png"]},
    ]  # fmt: skip
    for i in range(count - len(jobs)):
        if i % 10 == 3:
            jobs.append({"id": f"edit-{i:03}", "model": "reve/edit-image", "prompt": f"mug on a table {i}", "image_url": "mug.jpg"})  # fmt: skip
        elif i % 19 == 7:
            jobs.append(
                {"id": f"tile-{i:03}", "model": "reve/create-image", "prompt": f"[[violation]] tile {i}"}
            )
        else:
            jobs.append({"id": f"tile-{i:03}", "model": "reve/create-image", "prompt": f"a square tile {i}", "aspect_ratio": "1:1"})  # fmt: skip
    return jobs


def shop_folder(simulator, tmp_path: Path, count: int) -> Path:
    for name, sample in (("mug.jpg", "blue-mug.jpg"), ("ref.png", "t-rex.png")):
        (tmp_path / name).write_bytes((SAMPLES / "images" / sample).read_bytes())
    job_file, out = write_jsonl(tmp_path / f"shop-{count}.jsonl", shop_jobs(count)), tmp_path / f"out-{count}"
    main(
        [
            "run",
            str(job_file),
            "--out",
            str(out),
            "--base-url",
            simulator.url,
            "--concurrency",
            "16",
            "--no-progress",
        ]
    )
    assert main(["report", str(out)]) == ExitCode.OK
    return out


def test_the_report_is_a_gallery_with_problems_first_before_and_after_and_search(
    simulator, tmp_path, monkeypatch, browser
):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    out = shop_folder(simulator, tmp_path, 40)
    browser.get((out / "report.html").as_uri())

    cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
    ids = [card.get_attribute("data-id") for card in cards]
    flagged = sorted(
        i for i in ids if "violation" in (browser.find_element(By.CSS_SELECTOR, f"[data-id='{i}']").text)
    )
    assert len(cards) == 40 and flagged and ids[: len(flagged)] == flagged  # problems first
    edit = browser.find_element(By.CSS_SELECTOR, "[data-id='edit-003']")
    assert edit.find_elements(By.CSS_SELECTOR, "img.reference") and edit.find_elements(
        By.CSS_SELECTOR, "img.result"
    )
    variants = browser.find_element(By.CSS_SELECTOR, "[data-id='variants']")
    assert len(variants.find_elements(By.CSS_SELECTOR, "img.result")) == 4
    assert variants.size["height"] < 700  # four images in a 2x2 strip, not two screens tall
    assert "request_id" not in edit.text  # engineer detail folded away

    browser.find_element(By.ID, "search").send_keys("table 13")
    shown = [card.get_attribute("data-id") for card in cards if card.is_displayed()]
    assert shown == ["edit-013"]
    browser.find_element(By.ID, "search").clear()
    browser.find_element(By.ID, "search").send_keys(" ")  # (clear() fires no input event)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(ARTIFACTS / "report-40.png"))


def test_a_report_of_400_jobs_pages_its_cards(simulator, tmp_path, monkeypatch, browser):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    out = shop_folder(simulator, tmp_path, 400)
    browser.get((out / "report.html").as_uri())

    assert browser.find_element(By.ID, "shown-count").text == "120 of 400 shown"
    browser.find_element(By.ID, "more").click()
    assert browser.find_element(By.ID, "shown-count").text == "240 of 400 shown"
    Select(browser.find_element(By.ID, "sort")).select_by_visible_text("job id")
    first = next(c for c in browser.find_elements(By.CSS_SELECTOR, "article.card") if c.is_displayed())
    assert first.get_attribute("data-id") == "edit-003"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(ARTIFACTS / "report-400.png"))
