# The PHI boundary: one job per patient de-identifies the selected series and the segmentations.


rule deid:
    input:
        selection=site_file(f"{PHI}/selection/{{site}}.csv"),
        index=site_file(f"{PHI}/index/{{site}}.csv"),
        lesions=config["lesions"],
    output:
        status=f"{WORK}/status/deid/{{patient}}.json",
    params:
        out_dir=f"{WORK}/deid/{{patient}}",
        segmentations=config["segmentations"],
        modalities=" ".join(MODALITIES),
        key=KEY_OPTIONS,
    log:
        f"{PHI}/logs/deid/{{patient}}.log",
    benchmark:
        f"{PHI}/benchmarks/deid/{{patient}}.tsv"
    threads: stage_threads("deid")
    resources:
        mem_mb=scaled_mem_mb("deid"),
        runtime=scaled_runtime("deid"),
    shell:
        "palmares stage deid --patient {wildcards.patient} --selection {input.selection} --index {input.index}"
        " --segmentations {params.segmentations} --lesions {input.lesions} --modalities {params.modalities}"
        " {params.key} --out-dir {params.out_dir} --status {output.status}"
        " --audit {PHI}/audit/{wildcards.patient}.json 2> {log}"
