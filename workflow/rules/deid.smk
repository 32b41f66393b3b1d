# The PHI boundary: one job per patient de-identifies the selected baseline series (the intake record).


rule deid:
    input:
        record=intake_record(""),
    output:
        status=f"{WORK}/status/deid/{{patient}}.json",
    params:
        out_dir=f"{WORK}/deid/{{patient}}",
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
        "{PALMARES} stage deid --patient {wildcards.patient} --record {input.record}"
        " {params.key} --out-dir {params.out_dir} --status {output.status}"
        " --audit {PHI}/audit/{wildcards.patient}.json 2> {log}"
