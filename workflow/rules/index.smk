# PHI side: index each site's export (headers only), choose the baseline series per patient, and write the
# per-patient intake records whose changes decide which patients' jobs rerun (palmares_radiomics.intake).


rule index:
    output:
        f"{PHI}/index/{{site}}.csv",
    log:
        f"{PHI}/logs/index/{{site}}.log",
    benchmark:
        f"{PHI}/benchmarks/index/{{site}}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        raw=f"{config['raw_dicom']}/{{site}}",
        # any added, removed or rewritten file of the site's export reruns its index (names, sizes, times only)
        tree=tree_params(f"{config['raw_dicom']}/{{site}}"),
    shell:
        "palmares stage index --site {wildcards.site} --raw-dir {params.raw:q} --out {output} 2> {log}"


rule select:
    input:
        index=f"{PHI}/index/{{site}}.csv",
        clinical=CLINICAL_FILES,
        schema=CLINICAL_SCHEMA,
    output:
        f"{PHI}/selection/{{site}}.csv",
    log:
        f"{PHI}/logs/select/{{site}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        before=config["baseline_window"]["days_before"],
        after=config["baseline_window"]["days_after"],
        modalities=" ".join(MODALITIES),
        key=KEY_OPTIONS,
        clinical=CLINICAL_ARGS,
    shell:
        "palmares stage select --site {wildcards.site} --index {input.index} {params.clinical}"
        " --days-before {params.before} --days-after {params.after} --modalities {params.modalities}"
        " {params.key} --out {output} 2> {log}"


checkpoint intake:
    input:
        selection=expand(f"{PHI}/selection/{{site}}.csv", site=SITES),
        index=expand(f"{PHI}/index/{{site}}.csv", site=SITES),
        lesions=config["lesions"],
    output:
        patients=f"{INTAKE}/patients.csv",
        modalities=MODALITIES_TABLE,
        unmatched=f"{WORK}/intake/unmatched.csv",
    log:
        f"{PHI}/logs/intake.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        segmentations=config["segmentations"],
        # a new, changed or removed segmentation file reruns the intake, which rewrites only that patient's record
        tree=tree_params(config["segmentations"]),
        modalities=" ".join(MODALITIES),
        records=lambda w, output: Path(output.patients).parent,
    shell:
        "palmares stage intake --selection {input.selection} --index {input.index}"
        " --segmentations {params.segmentations:q} --lesions {input.lesions:q} --modalities {params.modalities}"
        " --records {params.records:q} --modalities-out {output.modalities} 2> {log}"
