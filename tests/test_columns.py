"""The column registry: every published column defined once, read by the stages, the tables, harmonisation and the
dictionary; a column it does not define is refused, never taken for a feature."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO
from pydicom.datadict import tag_for_keyword

from palmares_radiomics import columns, pet
from palmares_radiomics.errors import ConfigError
from palmares_radiomics.features import load_params
from palmares_radiomics.harmonise import lesion_features
from palmares_radiomics.tables import (UnknownColumnError, aggregate_patients, clinical_definitions, describe,
                                      dictionary)

FEATURE = "firstorder_Mean_Q4LE"


def _lesions(**extra: object) -> pd.DataFrame:
    rows = [{"patient": "PAL2-A", "site": "IT01", "modality": "ct", "lesion_id": f"L{i}", "organ": "liver",
             **{c.name: "" for c in columns.SCANNER}, "volume_ml": 1.0 + i, FEATURE: 10.0 * i, **extra}
            for i in (1, 2)]
    return pd.DataFrame(rows)


def _clinical_columns() -> pd.DataFrame:
    return pd.DataFrame([("patient", "pseudonym", "", "identifier"), ("os_days", "overall survival", "days",
                                                                     "outcome")],
                        columns=["column", "description", "unit", "time_basis"])


def test_each_column_is_defined_once_with_a_known_table_stage_and_time_basis() -> None:
    every = [*columns.LESION_INDEX, *columns.SCANNER, columns.VOLUME, *columns.PET_LESION,
             *columns.PET_LESION_NORMALISED, *columns.PET_PATIENT, *columns.PET_ORGAN, *columns.PET_PATIENT_NORMALISED]
    assert len({c.name for c in every}) == len(every), "a name defined twice"
    assert [*columns.LESION_COLUMNS.values(), *columns.PET_PATIENT_COLUMNS.values()] == every
    for column in every:
        assert column.table in (columns.LESIONS, columns.PATIENTS)
        assert column.time_basis in ("identifier", "baseline"), column  # outcomes come from the clinical schema only
        assert column.source_stage in ("index", "masks", "image", "pet") and len(column.description) > 10


def test_the_normalised_columns_follow_their_naming_rule() -> None:
    """The normalised PET columns are listed with their descriptions; the stage names them by rule: both agree."""
    lesion = {columns.normalised_lesion_column(n, s) for n in columns.NORMALISATIONS
              for s in columns.NORMALISED_LESION_STATISTICS}
    patient = {columns.normalised_patient_column(n, s) for n in columns.NORMALISATIONS
               for s in columns.NORMALISED_PATIENT_STATISTICS}
    assert lesion == {c.name for c in columns.PET_LESION_NORMALISED}
    assert patient == {c.name for c in columns.PET_PATIENT_NORMALISED}


def test_every_source_names_a_real_field_or_dicom_keyword() -> None:
    lesion_fields = {f.name for f in dataclasses.fields(pet.LesionPetMetrics)}
    patient_fields = {f.name for f in dataclasses.fields(pet.OrganPetMetrics)} | {"sdmax_per_m"}
    assert all(c.source in lesion_fields for c in columns.PET_LESION)
    assert all(c.source in patient_fields for c in (*columns.PET_PATIENT, *columns.PET_ORGAN))
    assert all(tag_for_keyword(c.source) is not None for c in columns.SCANNER if c.source)
    assert {c.name for c in columns.SCANNER if not c.source} == {"earl"}  # computed from two header elements


def test_the_dictionary_is_generated_from_the_registry() -> None:
    lesions = _lesions()
    patients = aggregate_patients(lesions, pd.DataFrame({"patient": ["PAL2-A"], "os_days": [100]}), ["ct"])
    table = dictionary(lesions, patients, ["ct"], _clinical_columns())
    clinical = clinical_definitions(_clinical_columns().itertuples(index=False))
    for row in table.itertuples(index=False):
        frame = lesions if row.table == "lesions" else patients
        expected = describe(row.column, row.table, ["ct"], clinical).row(str(frame[row.column].dtype))
        assert tuple(row) == expected
    assert columns.LESION_COLUMNS["volume_ml"].row("float64") in set(map(tuple, table.itertuples(index=False)))


def test_a_change_in_the_registry_is_a_change_in_the_dictionary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated, not merely agreeing: a column's definition changed in the registry is what the dictionary says."""
    from palmares_radiomics import tables

    changed = dataclasses.replace(columns.VOLUME, description="lesion volume, redefined", unit="cm3")
    monkeypatch.setattr(tables, "LESION_COLUMNS", {**columns.LESION_COLUMNS, "volume_ml": changed})
    lesions = _lesions()
    patients = aggregate_patients(lesions, pd.DataFrame({"patient": ["PAL2-A"]}), ["ct"])
    table = dictionary(lesions, patients, ["ct"], _clinical_columns()).set_index(["table", "column"])
    assert tuple(table.loc[("lesions", "volume_ml"), ["description", "unit"]]) == ("lesion volume, redefined", "cm3")
    assert table.loc[("lesions", "site"), "description"] == "centre code"
    assert table.loc[("patients", "ct_lesion_count"), "description"] == "number of lesions on CT"
    assert table.loc[("lesions", FEATURE), "description"] == ("Mean intensity (intensity-based statistics), "
                                                             "pyradiomics firstorder_Mean")


def test_a_column_the_registry_does_not_define_is_refused_not_taken_for_a_feature() -> None:
    stray = _lesions(centroid_x=1.0)  # e.g. a metric a stage started writing without declaring it
    with pytest.raises(UnknownColumnError, match="lesions column centroid_x is neither a declared column"):
        aggregate_patients(stray, pd.DataFrame({"patient": ["PAL2-A"]}), ["ct"])
    with pytest.raises(UnknownColumnError, match="lesions column centroid_x"):
        lesion_features(stray)
    patients = aggregate_patients(_lesions(), pd.DataFrame({"patient": ["PAL2-A"]}), ["ct"])
    with pytest.raises(UnknownColumnError, match="column centroid_x is neither a declared column"):
        dictionary(stray, patients, ["ct"], _clinical_columns())
    with pytest.raises(UnknownColumnError, match="patients column bmi is neither declared"):
        dictionary(_lesions(), patients.assign(bmi=1.0), ["ct"], _clinical_columns())


def test_a_parameter_file_cannot_ask_for_a_feature_the_registry_does_not_know(tmp_path: Path) -> None:
    """pyradiomics still lists its deprecated glcm Homogeneity1/2; they have no IBSI definition and no column."""
    document = yaml.safe_load((REPO / "params" / "ct.yaml").read_text(encoding="utf-8"))
    document["featureClass"]["glcm"] = ["Homogeneity1", "JointEntropy"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    load_params(REPO / "params" / "ct.yaml")  # the study's own file passes
    with pytest.raises(ConfigError, match=r"\['Homogeneity1'\] of class 'glcm' are not in the reviewed IBSI mapping"):
        load_params(path)


def test_the_config_schema_and_the_command_line_offer_the_registry_normalisations(
        capsys: pytest.CaptureFixture[str]) -> None:
    from palmares_radiomics.cli import build_parser

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
    assert schema["properties"]["suv_normalisations"]["items"]["enum"] == list(columns.NORMALISATIONS)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stage", "patient", "--suv-normalisations", "suvlbm"])
    error = capsys.readouterr().err
    assert "argument --suv-normalisations: invalid choice: 'suvlbm'" in error and "sul" in error and "suvbsa" in error


def test_the_report_names_only_columns_the_registry_defines() -> None:
    """The QC report picks its outlier and distribution columns by name: each is a registry column or a reviewed
    feature, so renaming one cannot silently drop it from the report."""
    from palmares_radiomics.features import ibsi_table
    from palmares_radiomics.report.pages import OUTLIER_FEATURES
    from palmares_radiomics.report.plots import DISTRIBUTION_STEMS

    named = {stem for stem, _ in OUTLIER_FEATURES.values()} | {
        stem for stems in DISTRIBUTION_STEMS.values() for stem in stems}
    assert named == {"firstorder_Mean", "pet_suvmax", "shape_VoxelVolume", "firstorder_Entropy", "glcm_JointEntropy",
                     "pet_mtv_41pct_ml"}
    assert all(stem in columns.LESION_COLUMNS or stem in ibsi_table() for stem in named)
