# Clinical outcomes, the modelling tables, the QC report and provenance.
import json


rule clinical:
    input:
        config["clinical"],
    output:
        table=f"{WORK}/clinical/clinical.parquet",
        issues=f"{WORK}/clinical/issues.csv",
    params:
        cutoff=config["data_cutoff"],
        key=KEY_OPTIONS,
    log:
        f"{PHI}/logs/clinical.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "palmares stage clinical --clinical {input} --cutoff {params.cutoff} {params.key}"
        " --out {output.table} --issues {output.issues} 2> {log}"


rule tables:
    input:
        statuses=expand(
            f"{WORK}/status/{{stage}}/{{patient}}_{{modality}}.json",
            stage=["image", "mask", "features"],
            patient=PATIENTS,
            modality=MODALITIES,
        ),
        deid=expand(f"{WORK}/status/deid/{{patient}}.json", patient=PATIENTS),
        clinical=f"{WORK}/clinical/clinical.parquet",
        issues=f"{WORK}/clinical/issues.csv",
    output:
        lesions=f"{RESULTS}/features/lesions.parquet",
        lesions_csv=f"{RESULTS}/features/lesions.csv",
        patients=f"{RESULTS}/tables/patients.parquet",
        patients_csv=f"{RESULTS}/tables/patients.csv",
        dictionary=f"{RESULTS}/tables/dictionary.csv",
        failures=f"{RESULTS}/qc/failures.csv",
        clinical_issues=f"{RESULTS}/qc/clinical_issues.csv",
        suv_checks=f"{RESULTS}/qc/suv_checks.csv",
    params:
        modalities=" ".join(MODALITIES),
    log:
        f"{WORK}/logs/tables.log",
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "palmares stage tables --status-dir {WORK}/status --clinical {input.clinical}"
        " --clinical-issues {input.issues} --modalities {params.modalities} --results {RESULTS} 2> {log}"


rule report:
    input:
        rules.tables.output,
        params=[config["params"][m] for m in MODALITIES],
        clinical=config["clinical"],
        lesions=config["lesions"],
    output:
        report=f"{RESULTS}/qc/report.html",
        provenance=f"{RESULTS}/provenance.json",
    params:
        params_args=" ".join(f"{m}={config['params'][m]}" for m in MODALITIES),
        config_json=json.dumps(config, sort_keys=True),
    log:
        f"{WORK}/logs/report.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "palmares stage report --results {RESULTS} --config-json {params.config_json:q}"
        " --params {params.params_args} --inputs {input.clinical} {input.lesions} 2> {log}"
