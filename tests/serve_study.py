"""A synthetic study whose intake has run (the state in which a centre's radiologists upload), for the serve tests.

The synthetic cohort's own segmentations are moved out of the folder the DAG reads (``cohort/uploads/``),
so every patient starts with no segmentation and the tests upload those real files through the page.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from test_workflow import _snakemake, prepare_study


def make_study(workdir: Path, patients: int = 3, **options) -> Path:
    """prepare_study (``options``: its seed and synth options) + the DAG's PHI side (``--until intake``), the
    segmentations moved to ``cohort/uploads``. benchmarks/bench_upload.py builds its study here too."""
    prepare_study(workdir, patients=patients, **options)
    result = _snakemake(workdir, "--until", "intake")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    shutil.move(workdir / "cohort/raw/segmentations", workdir / "cohort/uploads")
    (workdir / "cohort/raw/segmentations").mkdir()
    return workdir


def source(workdir: Path, fmt: str, modality: str = "ct") -> tuple[str, str, Path]:
    """(site, patient_id, file) of the synthetic patient whose segmentation has format ``fmt`` (mask.nii.gz,
    seg.dcm or rtstruct.dcm)."""
    for path in sorted((workdir / "cohort/uploads").glob(f"*/*/{modality}/{fmt}")):
        return path.parts[-4], path.parts[-3], path
    raise LookupError(fmt)


def shifted_nifti(src: Path, out: Path, shift_mm: tuple[float, float, float]) -> Path:
    """The same label map with its origin moved by ``shift_mm`` (LPS): drawn on another grid."""
    image = sitk.ReadImage(str(src))
    image.SetOrigin(tuple(o + s for o, s in zip(image.GetOrigin(), shift_mm, strict=True)))
    sitk.WriteImage(image, str(out))
    return out


def png_file(out: Path) -> Path:
    """A real PNG (a screenshot someone uploads by mistake)."""
    from matplotlib.image import imsave

    with open(out, "wb") as handle:  # whatever the name says (a screenshot renamed .nii.gz), the content is PNG
        imsave(handle, np.zeros((8, 8, 3)), format="png")
    return out


def lesion_table(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "cohort/raw/lesions.csv", dtype=str, keep_default_na=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``palmares serve --configfile config.yaml --port N`` in the study folder, as a user starts it; waits for it."""
    port = free_port()
    palmares = Path(sys.executable).parent / "palmares"
    with open(workdir / f"serve-{port}.log", "w") as log:  # the server keeps its own copy of the descriptor
        server = subprocess.Popen([str(palmares), "serve", "--configfile", "config.yaml", "--port", str(port), *extra],
                                  cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        if server.poll() is not None:
            raise AssertionError((workdir / f"serve-{port}.log").read_text())
        try:
            urllib.request.urlopen(f"{url}/login", timeout=2)
            return server, url
        except OSError:
            time.sleep(0.25)
    server.kill()
    raise AssertionError("palmares serve did not answer in 30 s")
