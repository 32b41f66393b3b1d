# Past the PHI boundary: image volumes (CT in HU, PET in SUVbw) and lesion label maps on the image grid.


rule image:
    input:
        deid=f"{WORK}/status/deid/{{patient}}.json",
    output:
        status=f"{WORK}/status/image/{{patient}}_{{modality}}.json",
    params:
        out=f"{WORK}/images/{{patient}}/{{modality}}.nii.gz",
    log:
        f"{WORK}/logs/image/{{patient}}_{{modality}}.log",
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "palmares stage image --patient {wildcards.patient} --modality {wildcards.modality}"
        " --deid-status {input.deid} --out {params.out} --status {output.status} 2> {log}"


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
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "palmares stage mask --patient {wildcards.patient} --modality {wildcards.modality}"
        " --deid-status {input.deid} --image-status {input.image} --out {params.out} --status {output.status} 2> {log}"
