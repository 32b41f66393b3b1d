"""Body-size formulas of SUV normalisation: lean body mass, ideal body weight, body surface area.

Pure functions of weight (kg), height (m) and sex, used by the SUV card (:mod:`palmares_radiomics.suv`,
SUL/SUVbsa factors and DICOM's LBM/IBW/BSA SUV types) and by the PET metrics (:mod:`palmares_radiomics.pet`).
A sex other than M/F is refused, or (``sex_other="mean"``) given the mean of both formulas.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import SuvError


def _by_sex(sex: str, male: Callable[[], float], female: Callable[[], float], sex_other: str, what: str) -> float:
    if sex == "M":
        return male()
    if sex == "F":
        return female()
    if sex_other == "mean":
        return (male() + female()) / 2.0
    raise SuvError(f"PatientSex is {sex or 'absent'!r}: {what} needs M or F (options.sex_other='refuse')")


def lbm_janmahasatian_kg(weight_kg: float, height_m: float, sex: str, sex_other: str = "refuse") -> float:
    """Lean body mass (Janmahasatian 2005, QIBA FDG profile App. H), kg.

    LBM_M = 9270 W / (6680 + 216 BMI), LBM_F = 9270 W / (8780 + 244 BMI), BMI = W / H^2 (kg, m).
    """
    bmi = weight_kg / height_m**2
    return _by_sex(
        sex,
        lambda: 9270.0 * weight_kg / (6680.0 + 216.0 * bmi),
        lambda: 9270.0 * weight_kg / (8780.0 + 244.0 * bmi),
        sex_other,
        "lean body mass (Janmahasatian)",
    )


def lbm_james_kg(
    weight_kg: float, height_m: float, sex: str, male_coefficient: float = 128.0, sex_other: str = "refuse"
) -> float:
    """Lean body mass after James (1976), kg: M 1.10 W - c (W/Hcm)^2 (c = 128, or 120 "Morgan"/DICOM LBM), F 1.07 W - 148 (W/Hcm)^2."""
    h_cm = height_m * 100.0
    return _by_sex(
        sex,
        lambda: 1.10 * weight_kg - male_coefficient * (weight_kg / h_cm) ** 2,
        lambda: 1.07 * weight_kg - 148.0 * (weight_kg / h_cm) ** 2,
        sex_other,
        "lean body mass (James)",
    )


def ibw_kg(height_m: float, sex: str, sex_other: str = "refuse") -> float:
    """Ideal body weight (IBSI SUV manual), kg: M 48.0 + 1.06 (Hcm - 152), F 45.5 + 0.91 (Hcm - 152)."""
    h_cm = height_m * 100.0
    return _by_sex(
        sex, lambda: 48.0 + 1.06 * (h_cm - 152.0), lambda: 45.5 + 0.91 * (h_cm - 152.0), sex_other, "ideal body weight"
    )


def bsa_du_bois_m2(weight_kg: float, height_m: float) -> float:
    """Body surface area (Du Bois 1916), m^2: 0.007184 W^0.425 Hcm^0.725."""
    return 0.007184 * weight_kg**0.425 * (height_m * 100.0) ** 0.725
