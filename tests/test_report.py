"""The provenance record: inputs hashed under their full path."""

from __future__ import annotations

import json
from pathlib import Path

from palmares_radiomics.report import sha256_file, write_provenance


def test_inputs_with_the_same_file_name_are_recorded_apart(tmp_path: Path) -> None:
    """Two centres' export.csv in different folders are two inputs, each with its own hash."""
    paths = []
    for folder, text in (("IT01", "site,patient_id\nIT01,1\n"), ("IT02", "site,patient_id\nIT02,1\n")):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "export.csv"
        path.write_text(text)
        paths.append(path)
    write_provenance(tmp_path / "provenance.json", {}, {}, paths)
    inputs = json.loads((tmp_path / "provenance.json").read_text())["inputs"]
    assert inputs == {str(p): sha256_file(p) for p in paths}
    assert len(set(inputs.values())) == 2
