# Past the PHI boundary: image volumes (CT in HU, PET in SUVbw) and lesion label maps on the image grid.


rule image:
    input:
        deid=f"{WORK}/status/deid/{{patient}}.json",
    output:
        status=f"{WORK}/status/image/{{patient}}_{{modality}}.json",
    params:
        out=f"{WORK}/images/{{patient}}/{{modality}}.nii",
        suv=" ".join(config["suv_normalisations"]),
        # the patient's audited SUV override (config suv_overrides), PET only; empty for everyone else
        suv_override=lambda w: (
            "--suv-override " + shlex.quote(json.dumps(config["suv_overrides"][w.patient], sort_keys=True))
            if w.modality == "pet" and w.patient in config.get("suv_overrides", {})
            else ""
        ),
    log:
        f"{WORK}/logs/image/{{patient}}_{{modality}}.log",
    benchmark:
        f"{WORK}/benchmarks/image/{{patient}}_{{modality}}.tsv"
    threads: stage_threads("image")
    resources:
        mem_mb=scaled_mem_mb("image"),
        runtime=scaled_runtime("image"),
    shell:
        "{PALMARES} stage image --patient {wildcards.patient} --modality {wildcards.modality}"
        " --deid-status {input.deid} --suv-normalisations {params.suv} {params.suv_override} --out {params.out}"
        " --status {output.status}"
        " 2> {log}"


# The mask job reads the radiologist's raw segmentation (PHI side: its log stays in work/phi/logs) and
# de-identifies it before import, so a new or re-exported segmentation reruns only this job and the features.
rule mask:
    input:
        record=intake_record("_{modality}"),
        deid=f"{WORK}/status/deid/{{patient}}.json",
        image=f"{WORK}/status/image/{{patient}}_{{modality}}.json",
    output:
        status=f"{WORK}/status/mask/{{patient}}_{{modality}}.json",
    params:
        out=f"{WORK}/masks/{{patient}}/{{modality}}.nii.gz",
        key=KEY_OPTIONS,
        min_volume_ml=config.get("min_lesion_volume_ml", 0.5),
    log:
        f"{PHI}/logs/mask/{{patient}}_{{modality}}.log",
    benchmark:
        f"{WORK}/benchmarks/mask/{{patient}}_{{modality}}.tsv"
    threads: stage_threads("mask")
    resources:
        mem_mb=scaled_mem_mb("mask"),
        runtime=scaled_runtime("mask"),
    shell:
        "{PALMARES} stage mask --patient {wildcards.patient} --modality {wildcards.modality} --record {input.record}"
        " --deid-status {input.deid} --image-status {input.image} {params.key} --out {params.out}"
        " --min-volume-ml {params.min_volume_ml}"
        " --status {output.status} --audit {PHI}/audit/{wildcards.patient}_{wildcards.modality}_segmentation.json"
        " 2> {log}"
