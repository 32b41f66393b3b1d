"""palmares-radiomics: the PALMARES-2 imaging pipeline.

Raw hospital DICOM (baseline CT and FDG-PET/CT), lesion segmentations and a clinical export go
in; de-identified, IBSI-coded per-lesion and per-patient feature tables joined to survival
outcomes come out. One module per pipeline stage; ``cli`` is the thin ``palmares`` command.
"""

__version__ = "0.1.0"
