# Per patient x modality: crop, IBSI resampling and pyradiomics extraction, one row per lesion.


rule features:
    input:
        image=f"{WORK}/status/image/{{patient}}_{{modality}}.json",
        mask=f"{WORK}/status/mask/{{patient}}_{{modality}}.json",
        params=lambda wc: config["params"][wc.modality],
    output:
        status=f"{WORK}/status/features/{{patient}}_{{modality}}.json",
    params:
        out=f"{WORK}/features/{{patient}}/{{modality}}.parquet",
        qc=f"{WORK}/qc/{{patient}}/{{modality}}",
    log:
        f"{WORK}/logs/features/{{patient}}_{{modality}}.log",
    benchmark:
        f"{WORK}/benchmarks/features/{{patient}}_{{modality}}.tsv"
    threads: stage_threads("features")
    resources:
        mem_mb=scaled_mem_mb("features"),
        runtime=scaled_runtime("features"),
    shell:
        "{PALMARES} stage features --patient {wildcards.patient} --modality {wildcards.modality}"
        " --image-status {input.image} --mask-status {input.mask} --params {input.params}"
        " --out {params.out} --qc-dir {params.qc} --status {output.status} 2> {log}"
