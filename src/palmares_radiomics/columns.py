"""Every published column of the modelling tables, defined once: name, table, description, unit, IBSI code, source
stage, time basis, and where the stage takes its value from. Pure data: nothing here computes a column.

The stages build their rows from these definitions (:data:`SCANNER`, :data:`PET_LESION`, :data:`PET_PATIENT`, ...),
the tables stage orders and aggregates them, harmonisation picks its columns by them, and ``dictionary.csv`` is
written from them (:func:`palmares_radiomics.tables.describe`). Three families are defined by rule rather than
listed one by one:

- **features**: a column of ``lesions`` that is a reviewed pyradiomics feature (``data/ibsi_codes.csv``, with its
  texture aggregation and IBSI 2 filter: :func:`palmares_radiomics.features.feature_column`);
- **aggregates**: ``<modality>_lesion_count``, ``<modality>_total_volume_ml`` and ``<modality>_<prefix>_<feature>``
  in ``patients`` (config ``patient_aggregates``; :data:`AGGREGATE_PREFIX`, :data:`AGGREGATE_WORDS`);
- **clinical**: the clinical stage's columns, declared by the clinical schema (``config/clinical_schema.yaml``) and
  handed over in its ``columns.csv``.

A column that is none of these is an error (``tables.UnknownColumnError``), never taken for a feature.

Time basis: ``identifier``, ``baseline`` (known at CDK4/6i start: every imaging column, the series being the baseline
scan) or ``outcome``; only the declared outcome columns may use post-baseline information (the leakage guard).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from .records import ORGANS

#: What a column may know (the dictionary's ``time_basis``; the clinical schema's too): ``identifier``; ``baseline``,
#: known at CDK4/6i start; ``outcome``, after it (follow-up dates and the survival columns derived from them).
TIME_BASES = ("identifier", "baseline", "outcome")
#: The two modelling tables.
LESIONS, PATIENTS = "lesions", "patients"
#: The columns of ``dictionary.csv``: one row per column of each table.
DICTIONARY_COLUMNS = ("column", "table", "description", "unit", "dtype", "ibsi_code", "source_stage", "time_basis")


@dataclass(frozen=True, slots=True)
class Column:
    """One published column. ``source``: what the stage reads it from (a DICOM keyword, a metric's field), "" when
    the column is computed where it is written."""

    name: str
    table: str
    description: str
    unit: str
    source_stage: str
    time_basis: str = "baseline"
    ibsi_code: str = ""
    source: str = ""

    def row(self, dtype: str) -> tuple[str, ...]:
        """This column's row of ``dictionary.csv`` (DICTIONARY_COLUMNS), ``dtype`` the table's own."""
        return (self.name, self.table, self.description, self.unit, dtype, self.ibsi_code, self.source_stage,
                self.time_basis)


#: The lesion's identity (index and masks stages).
LESION_INDEX = (
    Column("patient", LESIONS, "patient pseudonym PAL2-XXXXXXXXXX (keyed hash of site + local id)", "", "index",
           "identifier"),
    Column("site", LESIONS, "centre code", "", "index", "identifier"),
    Column("modality", LESIONS, "imaging modality: ct or pet", "", "index", "identifier"),
    Column("lesion_id", LESIONS, "lesion identifier from the lesion table", "", "masks", "identifier"),
    Column("organ", LESIONS, "organ site of the lesion: liver, bone, lymph_node, lung, breast, other", "", "masks"),
)
#: Scanner / batch variables, read by the image stage from the series header (``source``: its DICOM keyword) and
#: copied into every lesion row.
SCANNER = (
    Column("manufacturer", LESIONS, "scanner manufacturer (batch variable)", "", "image", source="Manufacturer"),
    Column("model", LESIONS, "scanner model (batch variable)", "", "image", source="ManufacturerModelName"),
    Column("kernel", LESIONS, "convolution kernel / reconstruction filter (batch variable)", "", "image",
            source="ConvolutionKernel"),
    Column("reconstruction", LESIONS, "PET reconstruction method (batch variable; empty for CT)", "", "image",
            source="ReconstructionMethod"),
    Column("earl", LESIONS, "PET EARL status stated in the header (ReconstructionMethod or SeriesDescription): "
           "EARL1, EARL2, EARL; empty when not stated and for CT (batch variable)", "", "image"),
    Column("slice_thickness_mm", LESIONS, "reconstructed slice thickness (batch variable)", "mm", "image",
            source="SliceThickness"),
    Column("pixel_spacing_mm", LESIONS, "in-plane pixel spacing (batch variable)", "mm", "image",
           source="PixelSpacing"),
)
#: The lesion's volume on its original grid (mask stage): the weight of the patient aggregates.
VOLUME = Column("volume_ml", LESIONS, "lesion volume on the original image grid (voxel count x voxel volume)", "ml",
                "masks")
#: PET lesion metrics (``source``: the field of ``pet.LesionPetMetrics``), PET rows only.
PET_LESION = (
    Column("pet_suvmax", LESIONS, "PET rows: maximum SUVbw in the lesion", "g/ml", "pet", source="suvmax"),
    Column("pet_suvmean", LESIONS, "PET rows: mean SUVbw in the lesion", "g/ml", "pet", source="suvmean"),
    Column("pet_suvpeak", LESIONS, "PET rows: SUVpeak, mean SUVbw in a 1 cm3 sphere centred on the maximum (IBSI local "
            "intensity peak) on the native PET grid; localintensity_LocalIntensityPeak_VJGA is the same definition on "
            "the features' resampled grid", "g/ml", "pet", source="suvpeak"),
    Column("pet_mtv_suv2p5_ml", LESIONS, "PET rows: metabolic tumour volume, voxels with SUVbw >= 2.5", "ml", "pet",
            source="mtv_suv2p5_ml"),
    Column("pet_tlg_suv2p5", LESIONS, "PET rows: total lesion glycolysis = MTV(SUV>=2.5) x its mean SUVbw", "g", "pet",
            source="tlg_suv2p5"),
    Column("pet_mtv_41pct_ml", LESIONS, "PET rows: metabolic tumour volume, voxels with SUVbw >= 41 % of SUVmax", "ml",
           "pet", source="mtv_41pct_ml"),
    Column("pet_tlg_41pct", LESIONS, "PET rows: total lesion glycolysis = MTV(41 %) x its mean SUVbw", "g", "pet",
            source="tlg_41pct"),
)


#: The extra SUV normalisations (config ``suv_normalisations``; SUVbw is always computed), in the order their columns
#: appear: the SUV card's scale factor ``<name>_scale_factor`` over SUVbw's re-expresses a lesion's SUVbw max, mean and
#: peak (``pet_<name>_<statistic>``) and the patient's hottest max and peak (``pet_hottest_<name>_<statistic>``).
NORMALISATIONS = ("sul", "suvbsa")
#: The lesion SUVbw statistics re-expressed in each extra normalisation (``pet.LesionPetMetrics.suv<statistic>``).
NORMALISED_LESION_STATISTICS = ("max", "mean", "peak")
#: The patient's hottest-lesion statistics re-expressed (``pet.OrganPetMetrics.hottest_suv<statistic>``).
NORMALISED_PATIENT_STATISTICS = ("max", "peak")
#: The lesion SUVbw statistics in the extra normalisations: empty when the card could not compute the factor (height
#: or sex missing: see qc/suv_checks.csv).
PET_LESION_NORMALISED = (
    Column("pet_sul_max", LESIONS, "PET rows: SULmax = SUVmax x lean body mass (Janmahasatian) / weight", "g/ml",
           "pet"),
    Column("pet_sul_mean", LESIONS, "PET rows: SULmean = SUVmean x lean body mass (Janmahasatian) / weight", "g/ml",
           "pet"),
    Column("pet_sul_peak", LESIONS, "PET rows: SULpeak = SUVpeak x lean body mass (Janmahasatian) / weight (PERCIST)",
           "g/ml", "pet"),
    Column("pet_suvbsa_max", LESIONS, "PET rows: SUVbsa max = SUVmax x body surface area (Du Bois) / weight",
           "cm2/ml", "pet"),
    Column("pet_suvbsa_mean", LESIONS, "PET rows: SUVbsa mean = SUVmean x body surface area (Du Bois) / weight",
           "cm2/ml", "pet"),
    Column("pet_suvbsa_peak", LESIONS, "PET rows: SUVbsa peak = SUVpeak x body surface area (Du Bois) / weight",
           "cm2/ml", "pet"),
)
#: Every lesion-table column other than the features, in table order.
LESION_COLUMNS = MappingProxyType({c.name: c for c in (*LESION_INDEX, *SCANNER, VOLUME, *PET_LESION,
                                                       *PET_LESION_NORMALISED)})

#: The PET stage's patient totals over all lesions (``source``: the field of ``pet.OrganPetMetrics`` or
#: ``pet.PatientPetMetrics``).
PET_PATIENT = (
    Column("pet_total_mtv_suv2p5_ml", PATIENTS, "sum of lesion MTVs at SUVbw >= 2.5", "ml", "pet",
           source="total_mtv_suv2p5_ml"),
    Column("pet_total_tlg_suv2p5", PATIENTS, "sum of lesion TLGs at SUVbw >= 2.5", "g", "pet",
           source="total_tlg_suv2p5"),
    Column("pet_total_mtv_41pct_ml", PATIENTS, "sum of lesion MTVs at 41 % of SUVmax", "ml", "pet",
           source="total_mtv_41pct_ml"),
    Column("pet_total_tlg_41pct", PATIENTS, "sum of lesion TLGs at 41 % of SUVmax", "g", "pet",
           source="total_tlg_41pct"),
    Column("pet_hottest_suvmax", PATIENTS, "SUVmax of the hottest lesion", "g/ml", "pet", source="hottest_suvmax"),
    Column("pet_hottest_suvpeak", PATIENTS, "highest lesion SUVpeak", "g/ml", "pet", source="hottest_suvpeak"),
    Column("pet_dmax_mm", PATIENTS, "Dmax: largest distance between PET lesion centroids (0 with one lesion)", "mm",
           "pet", source="dmax_mm"),
    Column("pet_sdmax_per_m", PATIENTS, "Dmax normalised by body surface area (Du Bois), when height and weight are "
           "known", "1/m", "pet", source="sdmax_per_m"),
)
#: Per-organ PET metrics (``pet.OrganPetMetrics`` of the lesions in one organ): field -> description, unit.
ORGAN_METRICS = MappingProxyType({
    "lesion_count": ("number of PET lesions", ""),
    "total_mtv_suv2p5_ml": ("sum of MTVs at SUVbw >= 2.5", "ml"),
    "total_tlg_suv2p5": ("sum of TLGs at SUVbw >= 2.5", "g"),
    "total_mtv_41pct_ml": ("sum of MTVs at 41 % of SUVmax", "ml"),
    "total_tlg_41pct": ("sum of TLGs at 41 % of SUVmax", "g"),
    "hottest_suvmax": ("SUVmax of the hottest lesion (empty without lesion)", "g/ml"),
    "hottest_suvpeak": ("highest lesion SUVpeak (empty without lesion)", "g/ml"),
    "dmax_mm": ("largest distance between lesion centroids (0 with one lesion, empty without lesion)", "mm"),
})
#: ``pet_<organ>_<field>`` for every organ site and per-organ metric.
PET_ORGAN = tuple(Column(f"pet_{organ}_{field}", PATIENTS, f"PET lesions in {organ.replace('_', ' ')}: {description}",
                         unit, "pet", source=field)
                  for organ in ORGANS for field, (description, unit) in ORGAN_METRICS.items())
#: The patient's hottest lesion in the extra normalisations (empty when the card could not compute the factor).
PET_PATIENT_NORMALISED = (
    Column("pet_hottest_sul_max", PATIENTS, "SULmax of the hottest lesion (SUVmax x lean body mass / weight)", "g/ml",
           "pet"),
    Column("pet_hottest_sul_peak", PATIENTS, "highest lesion SULpeak (PERCIST)", "g/ml", "pet"),
    Column("pet_hottest_suvbsa_max", PATIENTS, "SUVbsa max of the hottest lesion (SUVmax x BSA / weight)", "cm2/ml",
           "pet"),
    Column("pet_hottest_suvbsa_peak", PATIENTS, "highest lesion SUVbsa peak", "cm2/ml", "pet"),
)
#: Every PET column of the patient table, in table order.
PET_PATIENT_COLUMNS = MappingProxyType({c.name: c for c in (*PET_PATIENT, *PET_ORGAN, *PET_PATIENT_NORMALISED)})

#: Column prefix each lesion -> patient aggregate (records.AGGREGATES) gives per modality.
AGGREGATE_PREFIX = MappingProxyType({"largest": "largest", "volume_weighted_mean": "vwmean", "min": "min",
                                     "max": "max"})
#: How the dictionary describes each aggregate ({M}: the modality, upper case).
AGGREGATE_WORDS = MappingProxyType({"largest": "largest {M} lesion (by volume_ml)",
                                    "vwmean": "volume-weighted mean over {M} lesions (weights volume_ml)",
                                    "min": "minimum over {M} lesions", "max": "maximum over {M} lesions"})


#: Columns renamed since a study may have run its patient jobs (former name: name). The tables stage reads a features
#: record's rows and patient totals through it, so a study resumed across the rename needs no patient job rerun.
FORMER_NAMES = MappingProxyType({"pet_sulmax": "pet_sul_max", "pet_sulmean": "pet_sul_mean",
                                 "pet_sulpeak": "pet_sul_peak", "pet_hottest_sulmax": "pet_hottest_sul_max",
                                 "pet_hottest_sulpeak": "pet_hottest_sul_peak"})


def normalised_lesion_column(normalisation: str, statistic: str) -> str:
    """``pet_sul_max``, ``pet_suvbsa_mean``: a lesion's SUVbw ``statistic`` in an extra normalisation."""
    return f"pet_{normalisation}_{statistic}"


def normalised_patient_column(normalisation: str, statistic: str) -> str:
    """``pet_hottest_sul_max``, ``pet_hottest_suvbsa_peak``: the hottest lesion's statistic in a normalisation."""
    return f"pet_hottest_{normalisation}_{statistic}"
