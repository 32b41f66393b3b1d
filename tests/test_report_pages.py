"""The QC report of a real pipeline run, as a reviewer meets it: every lesion row has its pictures, the counts are
the tables', nothing is referenced outside the report; then in a real browser (Debian chromium + Playwright),
opened from disk: every picture decodes, two lesions are rated, the ratings are downloaded, fed back through the
config, and the next run's tables leave the rejected lesion out."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import yaml

from test_workflow import _snakemake, prepare_study

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REFERENCE = re.compile(r"""(?:src|href)="([^"]*)\"""")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = prepare_study(tmp_path_factory.mktemp("report"), patients=3)
    result = _snakemake(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def pages(run: Path) -> list[Path]:
    return [run / "results/qc/report.html", *sorted((run / "results/qc/report").glob("*.html"))]


def test_every_lesion_row_has_its_pictures_and_the_counts_are_the_tables(run: Path) -> None:
    lesions = pd.read_parquet(run / "results/features/lesions.parquet")
    patients = pd.read_parquet(run / "results/tables/patients.parquet")
    cohort = (run / "results/qc/report.html").read_text(encoding="utf-8")
    assert f'id="n-patients">{len(patients)}<' in cohort and f'id="n-lesions">{len(lesions)}<' in cohort
    site_html = "".join(p.read_text(encoding="utf-8") for p in pages(run)[1:])
    blocks = {chunk.split('"', 1)[0]: chunk for chunk in site_html.split('data-lesion-row="')[1:]}
    for row in lesions.itertuples():
        block = blocks.get(f"{row.patient}|{row.modality}|{row.lesion_id}")
        assert block, (row.patient, row.modality, row.lesion_id)
        block = block.split("</section>")[0]
        pictures = re.findall(r'<img src="([^"]+)"', block)
        assert len(pictures) == 2, block  # original grid and resampled
        for src in pictures:
            picture = run / "results/qc/report" / src
            assert picture.read_bytes()[:4] == b"\x89PNG", src
    for patient in patients["patient"]:
        assert f'id="{patient}"' in site_html
    pet = lesions[lesions["modality"] == "pet"]
    assert site_html.count('class="mip"') == pet["patient"].nunique()


def test_the_report_refers_to_nothing_outside_its_folder(run: Path) -> None:
    qc = (run / "results/qc").resolve()
    for page in pages(run):
        for ref in REFERENCE.findall(page.read_text(encoding="utf-8")):
            if ref.startswith("#"):
                continue
            assert not re.match(r"^[a-z]+:", ref) and not ref.startswith("/"), (page.name, ref)
            target = (page.parent / unquote(ref.split("#")[0])).resolve()
            assert target.is_file(), (page.name, ref)
            assert target == qc / "report.html" or (qc / "report") in target.parents, (page.name, ref)


def test_a_reviewer_rates_lesions_in_a_browser_and_the_next_run_leaves_the_rejected_one_out(run: Path) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    lesions = pd.read_parquet(run / "results/features/lesions.parquet")
    counts = lesions.groupby(["patient", "modality"]).size()
    patient, modality = counts[counts >= 2].index[0]  # a patient keeping a lesion after the rejection
    rejected, accepted = sorted(lesions.loc[(lesions["patient"] == patient) & (lesions["modality"] == modality),
                                            "lesion_id"])[:2]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(accept_downloads=True)
        page.goto((run / "results/qc/report.html").as_uri())
        for img in page.query_selector_all("img"):
            img.scroll_into_view_if_needed()
        page.wait_for_function("[...document.images].every(i => i.complete)")
        assert page.eval_on_selector_all("img", "imgs => imgs.every(i => i.naturalWidth > 0)")
        links = page.eval_on_selector_all("#pages a", "as => as.map(a => a.getAttribute('href'))")
        assert links
        page.fill("#rater", "AB")
        for link in links:
            page.goto((run / "results/qc" / link).as_uri())
            images = page.query_selector_all("img")
            for img in images:  # lazy pictures load as the reviewer scrolls
                img.scroll_into_view_if_needed()
            page.wait_for_function("[...document.images].every(i => i.complete)")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert widths and all(w > 0 for w in widths), (link, widths)
            for lesion_id, rating, comment in ((rejected, "reject", "contour includes the adjacent vessel"),
                                               (accepted, "accept", "")):
                widget = page.locator(f'.rating[data-pseudonym="{patient}"][data-modality="{modality}"]'
                                      f'[data-lesion="{lesion_id}"]')
                if widget.count():
                    widget.locator(f'input[value="{rating}"]').check()
                    widget.locator('input[type="text"]').fill(comment)
        assert "2 lesion(s) rated" in page.inner_text("#rated")
        with page.expect_download() as info:
            page.click("#download")
        target = run / "qc_ratings.csv"
        info.value.save_as(target)
        browser.close()
    ratings = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert list(ratings.columns) == ["pseudonym", "modality", "lesion_id", "rating", "comment", "rater"]
    assert set(zip(ratings["lesion_id"], ratings["rating"], ratings["rater"])) == {(rejected, "reject", "AB"),
                                                                                  (accepted, "accept", "AB")}
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    config["qc_ratings"] = "qc_ratings.csv"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(run)
    assert result.returncode == 0, result.stderr[-3000:]
    after = pd.read_parquet(run / "results/features/lesions.parquet")
    assert len(after) == len(lesions) - 1
    assert not ((after["patient"] == patient) & (after["modality"] == modality) & (after["lesion_id"] == rejected)).any()
    failures = pd.read_csv(run / "results/qc/failures.csv", dtype=str, keep_default_na=False)
    row = failures[(failures["patient"] == patient) & (failures["lesion_id"] == rejected)]
    assert len(row) == 1 and row.iloc[0]["stage"] == "qc" and "AB" in row.iloc[0]["reason"] \
        and "adjacent vessel" in row.iloc[0]["reason"]
    site_html = "".join(p.read_text(encoding="utf-8") for p in pages(run)[1:])
    assert "rejected by AB: contour includes the adjacent vessel" in site_html


def test_snakemake_report_carries_the_main_figures_with_captions(run: Path) -> None:
    result = _snakemake(run, "--report", "snakemake-report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (run / "snakemake-report.html").read_text(encoding="utf-8")
    for words in ("Patients remaining at each step", "Batch effects", "QC report", "Cohort"):
        assert words in text, words


def test_a_patient_is_lost_where_its_last_modality_failed() -> None:
    """CT failing at image and PET at mask: lost at 'segmented', with both reasons; a patient with one failing
    and one working modality is not lost."""
    from palmares_radiomics.report.pages import _lost_between_steps

    flow = pd.DataFrame({"patient": ["P1", "P2", "P3"], "site": "IT01", "source": "x", "row": ["2", "3", "4"],
                         "status": "eligible", "reason": "", "in_patients_table": ["False", "True", "True"]})
    modalities = pd.DataFrame({"patient": ["P1", "P1", "P2", "P2", "P3"], "modality": ["ct", "pet", "ct", "pet", "ct"],
                               "status": "selected", "reason": ""})
    failures = pd.DataFrame({"patient": ["P1", "P1", "P2"], "modality": ["ct", "pet", "ct"],
                             "stage": ["image", "mask", "deid"], "lesion_id": "",
                             "reason": ["slices missing", "lesion L1 not found", "unreadable"]})
    steps = {s["step"]: s for s in _lost_between_steps(flow, failures, pd.DataFrame(), modalities)}
    assert [s["patients"] for s in steps.values()] == [3, 3, 3, 3, 3, 2, 2, 2]
    assert steps["segmented"]["lost"] == [("P1", "CT at image: slices missing; PET at mask: lesion L1 not found")]
    assert steps["volume read (HU / SUV)"]["lost"] == [] and steps["in patients.parquet"]["lost"] == []
