# Per patient x modality, past the PHI boundary: the image volume (CT in HU, PET in SUVbw), the lesion label map
# on its grid, and the features of every lesion (crop, IBSI resampling, extraction: one row per lesion).
#
# One job runs the image, mask and features stages in turn (`palmares stage radiomics`): one process start-up
# instead of three (benchmarks/bench_cohort.py). Each stage writes its own status record, as when they ran apart.
# The job reads the radiologist's raw segmentation and de-identifies it before import, so its whole log stays in
# work/phi/logs; the image and features stages also log to work/logs. A new or re-exported segmentation, or a
# changed parameter file, reruns this patient's job of that modality only.


rule radiomics:
    input:
        record=intake_record("_{modality}"),
        deid=f"{WORK}/status/deid/{{patient}}.json",
        params=lambda wc: config["params"][wc.modality],
    output:
        image=f"{WORK}/status/image/{{patient}}_{{modality}}.json",
        mask=f"{WORK}/status/mask/{{patient}}_{{modality}}.json",
        features=f"{WORK}/status/features/{{patient}}_{{modality}}.json",
    params:
        image=f"{WORK}/images/{{patient}}/{{modality}}.nii",
        mask=f"{WORK}/masks/{{patient}}/{{modality}}.nii.gz",
        features=f"{WORK}/features/{{patient}}/{{modality}}.json",
        qc=f"{WORK}/qc/{{patient}}/{{modality}}",
        audit=f"{PHI}/audit/{{patient}}_{{modality}}_segmentation.json",
        key=KEY_OPTIONS,
        min_volume_ml=config.get("min_lesion_volume_ml", 0.5),
        suv=" ".join(config["suv_normalisations"]),
        # the patient's audited SUV override (config suv_overrides), PET only; empty for everyone else
        suv_override=lambda w: (
            "--suv-override " + shlex.quote(json.dumps(config["suv_overrides"][w.patient], sort_keys=True))
            if w.modality == "pet" and w.patient in config.get("suv_overrides", {})
            else ""
        ),
    log:
        job=f"{PHI}/logs/radiomics/{{patient}}_{{modality}}.log",
        image=f"{WORK}/logs/image/{{patient}}_{{modality}}.log",
        features=f"{WORK}/logs/features/{{patient}}_{{modality}}.log",
    benchmark:
        f"{WORK}/benchmarks/radiomics/{{patient}}_{{modality}}.tsv"
    threads: stage_threads("radiomics")
    resources:
        mem_mb=scaled_mem_mb("radiomics"),
        runtime=scaled_runtime("radiomics"),
    shell:
        "{PALMARES} stage radiomics --patient {wildcards.patient} --modality {wildcards.modality}"
        " --record {input.record} --deid-status {input.deid} --params {input.params} {params.key}"
        " --suv-normalisations {params.suv} {params.suv_override} --min-volume-ml {params.min_volume_ml}"
        " --image-out {params.image} --image-status {output.image} --image-log {log.image}"
        " --mask-out {params.mask} --mask-status {output.mask} --audit {params.audit}"
        " --features-out {params.features} --features-status {output.features} --features-log {log.features}"
        " --qc-dir {params.qc} 2> {log.job}"
