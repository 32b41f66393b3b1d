# palmares-radiomics: raw DICOM + segmentations + clinical export -> IBSI-coded feature tables with outcomes.
# Stages live in workflow/rules/<stage>.smk; every rule calls `palmares stage <name>` and holds no logic.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# `snakemake --report report.html`: the main figures and tables with their captions (workflow/report/*.rst)
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/patient.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
