"""The upload page in a real browser: Debian's chromium driven by Playwright against ``palmares serve`` started as a
user starts it, on a synthetic study. Uploads a good NIfTI, a misaligned NIfTI, a DICOM-SEG, an RTSTRUCT with
organs at risk and a PNG, and checks what the radiologist sees: the verdict, the fix, the previews decoded, the
version history; then the token form of a server reachable from the network."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from serve_study import make_study, png_file, shifted_nifti, source, start_server

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("browser"))


def choose(page, site: str, patient_id: str, modality: str) -> None:
    page.select_option("#site", site)
    page.select_option("#modality", modality)
    page.select_option("#patient_id", patient_id)


def upload(page, path: Path) -> str:
    """Choose a file (the page uploads it at once) and wait for the verdict; returns the verdict's text."""
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#verdict.accepted, #verdict.refused", timeout=60_000)
    return page.inner_text("#verdict")


def previews_decoded(page) -> list[int]:
    """naturalWidth of every preview image in the verdict, once each has loaded (the previews are drawn after the
    verdict; their route waits for them). Polled from here: the page's CSP forbids the eval of wait_for_function."""
    for _ in range(240):
        state = page.eval_on_selector_all("#verdict img.preview", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        if state and all(complete for complete, _ in state):
            return [width for _, width in state]
        page.wait_for_timeout(250)
    raise AssertionError(f"previews not loaded in 60 s: {state}")


def test_a_radiologist_uploads_each_format_and_understands_each_refusal(browser, study: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    server, url = start_server(study)
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#patient_id option", state="attached")

        # 1. a good NIfTI from 3D Slicer: accepted as version 1, one decoded preview per lesion, history row
        site, patient_id, nifti = source(study, "mask.nii.gz")
        choose(page, site, patient_id, "ct")
        text = upload(page, nifti)
        assert "Accepted: stored as version 1" in text, text
        widths = previews_decoded(page)
        assert widths and all(w > 0 for w in widths)
        page.wait_for_selector("#history tbody tr")
        assert "v1" in page.inner_text("#history") and "accepted" in page.inner_text("#history")
        assert "(accepted, v1)" in page.inner_text("#patient_id")

        # 2. the same mask shifted 50 mm: refused, in words, with the offset, the direction and the fix
        text = upload(page, shifted_nifti(nifti, tmp_path / "moved.nii.gz", (50.0, 0.0, 0.0)))
        assert "Not accepted: nothing was stored." in text, text
        assert "50.0 mm" in text and "patient's left" in text and "What to do:" in page.content()
        assert "baseline CT (series" in text
        rows = page.locator("#history tbody tr")
        expect(rows).to_have_count(2, timeout=30_000)  # the history reloads after the verdict is shown
        assert "refused" in rows.nth(0).inner_text() and "v1" in rows.nth(1).inner_text()

        # 3. a DICOM-SEG (another centre's patient)
        site, patient_id, seg = source(study, "seg.dcm")
        choose(page, site, patient_id, "ct")
        text = upload(page, seg)
        assert "Accepted: stored as version 1" in text and "Neoplasm, Secondary" in text, text
        assert all(w > 0 for w in previews_decoded(page))

        # 4. an RTSTRUCT holding organs at risk besides the lesions: accepted, the organs listed as ignored
        site, patient_id, rtstruct = source(study, "rtstruct.dcm")
        choose(page, site, patient_id, "ct")
        text = upload(page, rtstruct)
        assert "Accepted: stored as version 1" in text, text
        assert "ignored" in text and "Spinal-Cord" in text and "Liver" in text
        assert all(w > 0 for w in previews_decoded(page))

        # 5. a PNG screenshot: refused by its content, with what to export instead
        text = upload(page, png_file(tmp_path / "screenshot.nii.gz"))
        assert "Not accepted" in text and "not a NIfTI or NRRD label map" in text and "RTSTRUCT" in text, text
        assert page.get_attribute("#verdict", "data-status") == "415"
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_networked_server_asks_for_the_token_and_shows_only_the_centres_patients(browser, study: Path,
                                                                                   tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    work = tmp_path / "study"
    shutil.copytree(study, work, symlinks=True)
    (work / "tokens.txt").write_text(f"IT02 {token}\n")
    server, url = start_server(work, "--token-file", "tokens.txt")
    try:
        page = browser.new_page()
        page.goto(url)
        assert page.url.endswith("/login")
        page.fill("#token", "not-the-token-but-long-enough")
        page.click("button[type=submit]")
        assert "not valid" in page.inner_text("#login-error")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_selector("#patient_id option", state="attached")
        assert page.eval_on_selector_all("#site option", "o => o.map(x => x.value)") == ["IT02"]
        site, patient_id, seg = source(work, "seg.dcm", "pet")  # the PET: the first test uploaded the CT
        choose(page, site, patient_id, "pet")
        assert "Accepted: stored as version 1" in upload(page, seg)
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
