# Past the PHI boundary: image volumes (CT in HU, PET in SUVbw) and lesion label maps on the image grid.


rule image:
    input:
        deid=f"{WORK}/status/deid/{{patient}}.json",
    output:
        status=f"{WORK}/status/image/{{patient}}_{{modality}}.json",
    params:
        out=f"{WORK}/images/{{patient}}/{{modality}}.nii.gz",
        suv=" ".join(config["suv_normalisations"]),
    log:
        f"{WORK}/logs/image/{{patient}}_{{modality}}.log",
    benchmark:
        f"{WORK}/benchmarks/image/{{patient}}_{{modality}}.tsv"
    threads: stage_threads("image")
    resources:
        mem_mb=scaled_mem_mb("image"),
        runtime=scaled_runtime("image"),
    shell:
        "palmares stage image --patient {wildcards.patient} --modality {wildcards.modality}"
        " --deid-status {input.deid} --suv-normalisations {params.suv} --out {params.out} --status {output.status}"
        " 2> {log}"


rule mask:
    input:
        deid=f"{WORK}/status/deid/{{patient}}.json",
        image=f"{WORK}/status/image/{{patient}}_{{modality}}.json",
    output:
        status=f"{WORK}/status/mask/{{patient}}_{{modality}}.json",
    params:
        out=f"{WORK}/masks/{{patient}}/{{modality}}.nii.gz",
    log:
        f"{WORK}/logs/mask/{{patient}}_{{modality}}.log",
    benchmark:
        f"{WORK}/benchmarks/mask/{{patient}}_{{modality}}.tsv"
    threads: stage_threads("mask")
    resources:
        mem_mb=scaled_mem_mb("mask"),
        runtime=scaled_runtime("mask"),
    shell:
        "palmares stage mask --patient {wildcards.patient} --modality {wildcards.modality}"
        " --deid-status {input.deid} --image-status {input.image} --out {params.out} --status {output.status} 2> {log}"
