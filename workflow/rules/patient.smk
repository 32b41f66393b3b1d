# One job per patient, all in one process (`palmares stage patient`): the PHI boundary (de-identification of the
# selected baseline series, the intake record), then for each modality the image volume (CT in HU, PET in SUVbw),
# the lesion label map on its grid and the features of every lesion (crop, IBSI resampling, extraction).
#
# One process instead of seven saves their start-ups (benchmarks/bench_cohort.py) and most of the DAG's jobs.
# Each stage still writes its own status record, as when they ran apart (a modality the patient has no series of:
# `skipped`, left out of the tables). The job reads raw DICOM and the radiologist's raw segmentations, so its whole
# log stays in work/phi/logs; the image and features stages also log to work/logs. Anything new or changed for a
# patient (a series file, a segmentation, a lesion-table row, a parameter file) reruns that patient's job only.

#: The stages of one series, in the order the job runs them (palmares_radiomics.stages.patient.SERIES_STAGES).
SERIES_STAGES = ("image", "mask", "features")


rule patient:
    input:
        records=patient_records,
        params=[config["params"][m] for m in MODALITIES],
    output:
        deid=f"{WORK}/status/deid/{{patient}}.json",
        series=[f"{WORK}/status/{stage}/{{patient}}_{m}.json" for m in MODALITIES for stage in SERIES_STAGES],
    log:
        job=f"{PHI}/logs/patient/{{patient}}.log",
        stages=[f"{WORK}/logs/{stage}/{{patient}}_{m}.log" for m in MODALITIES for stage in ("image", "features")],
    benchmark:
        f"{WORK}/benchmarks/patient/{{patient}}.tsv"
    conda:
        "../../environment.yml"
    threads: stage_threads("patient")
    resources:
        mem_mb=scaled_mem_mb("patient"),
        runtime=scaled_runtime("patient"),
    params:
        # the work folder, from the output's path (workflow/rules/common.smk: work_dir)
        work=lambda w, output: Path(output.deid).parents[2],
        modalities=" ".join(MODALITIES),
        key=KEY_OPTIONS,
        params=" ".join(f"{m}={shlex.quote(str(config['params'][m]))}" for m in MODALITIES),
        min_volume_ml=config.get("min_lesion_volume_ml", 0.5),
        suv=" ".join(config["suv_normalisations"]),
        # the patient's audited SUV override (config suv_overrides), for its PET; empty for everyone else
        suv_override=lambda w: (
            f"--suv-override {shlex.quote(json.dumps(config['suv_overrides'][w.patient], sort_keys=True))}"
            if "pet" in MODALITIES and w.patient in config.get("suv_overrides", {})
            else ""
        ),
    shell:
        "palmares stage patient --patient {wildcards.patient} --work-dir {params.work:q} --modalities {params.modalities}"
        " --params {params.params} {params.key} --suv-normalisations {params.suv} {params.suv_override}"
        " --min-volume-ml {params.min_volume_ml} 2> {log.job}"
