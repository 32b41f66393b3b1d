# Clinical outcomes, the modelling tables, optional ComBat, the QC report and provenance.
import json


rule clinical:
    input:
        clinical=CLINICAL_FILES,
        schema=CLINICAL_SCHEMA,
    output:
        table=f"{WORK}/clinical/clinical.parquet",
        issues=f"{WORK}/clinical/issues.csv",
        flow=f"{WORK}/clinical/flow.csv",
        columns=f"{WORK}/clinical/columns.csv",
    log:
        f"{PHI}/logs/clinical.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cutoff=config["data_cutoff"],
        key=KEY_OPTIONS,
        clinical=CLINICAL_ARGS,
        eligibility=json.dumps(config["eligibility"], sort_keys=True),
    shell:
        "palmares stage clinical {params.clinical} --eligibility {params.eligibility:q} --cutoff {params.cutoff}"
        " {params.key} --out {output.table} --issues {output.issues} --flow {output.flow} --columns {output.columns}"
        " 2> {log}"


rule tables:
    input:
        statuses=study_statuses,
        modalities=MODALITIES_TABLE,
        # plain paths: referring to `rules.clinical.output` makes Snakemake's DAG construction quadratic in the
        # number of patients (3,500 patients: 63 s instead of ~33 s dry run, benchmarks/bench_dag.py)
        clinical=[f"{WORK}/clinical/{name}" for name in ("clinical.parquet", "issues.csv", "flow.csv", "columns.csv")],
        # visual QC ratings (config qc_ratings): an input, so editing them rebuilds the tables
        qc_ratings=[config["qc_ratings"]] if config.get("qc_ratings") else [],
    output:
        lesions=f"{RESULTS}/features/lesions.parquet",
        lesions_csv=f"{RESULTS}/features/lesions.csv",
        patients=f"{RESULTS}/tables/patients.parquet",
        patients_csv=f"{RESULTS}/tables/patients.csv",
        dictionary=f"{RESULTS}/tables/dictionary.csv",
        failures=f"{RESULTS}/qc/failures.csv",
        clinical_issues=f"{RESULTS}/qc/clinical_issues.csv",
        suv_checks=f"{RESULTS}/qc/suv_checks.csv",
        flow=f"{RESULTS}/qc/patient_flow.csv",
        notes=f"{RESULTS}/qc/segmentation_notes.csv",
        qc_ratings=f"{RESULTS}/qc/qc_ratings_applied.csv",
    log:
        f"{WORK}/logs/tables.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        work=work_of_intake_table,
        results=results_of_lesion_table,
        modalities=" ".join(MODALITIES),
        aggregates=" ".join(config["patient_aggregates"]),
        qc_ratings=f"--qc-ratings {shlex.quote(config['qc_ratings'])}" if config.get("qc_ratings") else "",
    shell:
        "palmares stage tables --status-dir {params.work:q}/status --clinical-dir {params.work:q}/clinical"
        " --modalities-table {input.modalities}"
        " --modalities {params.modalities} --aggregates {params.aggregates} --results {params.results:q} {params.qc_ratings}"
        " 2> {log}"


rule harmonise:
    input:
        lesions=rules.tables.output.lesions,
        patients=rules.tables.output.patients,
    output:
        lesions=f"{RESULTS}/features/lesions_combat.parquet",
        lesions_csv=f"{RESULTS}/features/lesions_combat.csv",
        patients=f"{RESULTS}/tables/patients_combat.parquet",
        patients_csv=f"{RESULTS}/tables/patients_combat.csv",
        record=f"{RESULTS}/qc/combat.csv",
    log:
        f"{WORK}/logs/harmonise.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        results=results_of_lesion_table,
        modalities=" ".join(MODALITIES),
        covariates=" ".join(config["harmonisation"]["covariates"]),
        lesion_covariates=" ".join(config["harmonisation"]["lesion_covariates"]),
    shell:
        "palmares stage harmonise --results {params.results:q} --modalities {params.modalities}"
        " --covariates {params.covariates} --lesion-covariates {params.lesion_covariates} 2> {log}"


rule report:
    input:
        rules.tables.output,
        params=[config["params"][m] for m in MODALITIES],
        clinical=CLINICAL_FILES,
        lesions=config["lesions"],
        ratings=[config["qc_ratings"]] if config.get("qc_ratings") else [],
        combat=COMBAT_OUTPUTS,
        modalities=MODALITIES_TABLE,
    output:
        report=report(f"{RESULTS}/qc/report.html", caption="../report/qc_report.rst", category="QC report"),
        provenance=f"{RESULTS}/provenance.json",
        flow=report(f"{RESULTS}/qc/report/fig/flow.png", caption="../report/flow.rst", category="Cohort"),
        distributions=report(
            f"{RESULTS}/qc/report/fig/distributions.png",
            caption="../report/distributions.rst",
            category="Batch effects",
        ),
    log:
        f"{WORK}/logs/report.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        work=work_of_intake_table,
        results=lambda w, output: Path(output.provenance).parent,
        params_args=" ".join(f"{m}={config['params'][m]}" for m in MODALITIES),
        combat=f"--combat {RESULTS}/qc/combat.csv" if COMBAT_OUTPUTS else "",
        config_json=json.dumps(config, sort_keys=True),
    shell:
        "palmares stage report --results {params.results:q} --status-dir {params.work:q}/status"
        " --modalities-table {input.modalities}"
        " --config-json {params.config_json:q}"
        " --params {params.params_args} --inputs {input.clinical:q} {input.lesions:q} {input.ratings:q} {params.combat}"
        " 2> {log}"
