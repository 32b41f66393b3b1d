# palmares-radiomics: `make demo` runs the pipeline on a synthetic cohort; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test test-fast test-slurm clean

install: $(BIN)/palmares

$(BIN)/palmares: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,harmonise]'
	@touch $@

demo: install
	rm -rf demo results
	$(BIN)/palmares synth demo --patients 4 --seed 7
	$(BIN)/python -c "import secrets; open('demo/secret.key', 'w').write(secrets.token_urlsafe(48))"
	$(BIN)/snakemake --configfile config/demo.yaml --profile workflow/profiles/default --cores $(CORES)
	@echo
	@echo "Feature tables: results/features/lesions.parquet (+ .csv), results/tables/patients.parquet (+ .csv)"
	@echo "Dictionary:     results/tables/dictionary.csv"
	@echo "QC report:      results/qc/report.html (failures: results/qc/failures.csv)"
	@echo "Provenance:     results/provenance.json"

test: install
	$(BIN)/python -m pytest -n $(CORES)

# A real single-node SLURM on localhost (as root: installs Debian's slurm + munge + mariadb packages when missing),
# the 3-patient pipeline through it with the slurm profile, then every daemon stopped: see .ci/slurm/.
test-slurm: install
	bash .ci/slurm/test.sh

clean:
	rm -rf demo results .snakemake
