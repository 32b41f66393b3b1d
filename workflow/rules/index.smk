# PHI side: index each site's export (headers only) and choose the baseline series per patient.


rule index:
    input:
        ancient(f"{config['raw_dicom']}/{{site}}"),
    output:
        f"{PHI}/index/{{site}}.csv",
    log:
        f"{PHI}/logs/index/{{site}}.log",
    benchmark:
        f"{PHI}/benchmarks/index/{{site}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "palmares stage index --site {wildcards.site} --raw-dir {input} --out {output} 2> {log}"


rule select:
    input:
        index=f"{PHI}/index/{{site}}.csv",
        clinical=CLINICAL_FILES,
        schema=CLINICAL_SCHEMA,
    output:
        f"{PHI}/selection/{{site}}.csv",
    params:
        before=config["baseline_window"]["days_before"],
        after=config["baseline_window"]["days_after"],
        modalities=" ".join(MODALITIES),
        key=KEY_OPTIONS,
        clinical=CLINICAL_ARGS,
    log:
        f"{PHI}/logs/select/{{site}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "palmares stage select --site {wildcards.site} --index {input.index} {params.clinical}"
        " --days-before {params.before} --days-after {params.after} --modalities {params.modalities}"
        " {params.key} --out {output} 2> {log}"
