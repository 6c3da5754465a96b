# Two commands on a fresh machine: `make demo` and `make test`. Everything installs from PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_OUT := out/demo_pbmc_500genes.nbdm.nc

.PHONY: install toolchain demo test bench clean

# The exact versions come from constraints.txt (pyproject.toml has the compatible ranges).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Downloads the pinned httpstan wheel (stanc + Stan headers) and builds our CmdStan-compatible
# driver in the user cache ($$SCRIBE_CACHE_DIR, default ~/.cache/scribe-cli). Once; 3-4 minutes on 2 cores.
toolchain: install
	$(BIN)/python -m scribe_cli.toolchain

# NBDM with a gene-specific p (mean-disp): on the PBMC data a single shared p misfits the gene means
# (see README); this one passes its posterior predictive checks.
demo: toolchain
	@mkdir -p out
	$(BIN)/scribe run data/demo_pbmc_500genes.h5ad --model nbdm --parameterization mean-disp --seed 1 -o $(DEMO_OUT) --overwrite
	$(BIN)/scribe summary $(DEMO_OUT) --var mu
	$(BIN)/scribe ppc $(DEMO_OUT) data/demo_pbmc_500genes.h5ad -o out/demo_ppc
	@echo ""
	@echo "Posterior: $(DEMO_OUT) (ArviZ InferenceData, NetCDF); checks: out/demo_ppc.png and out/demo_ppc.tsv."
	@echo "Open the posterior with:"
	@echo "  $(BIN)/python -c \"import arviz as az; idata = az.from_netcdf('$(DEMO_OUT)'); print(idata.posterior)\""

# Two workers (pytest-xdist): compiling a Stan program is single-threaded, so two compile-bound tests
# run side by side; the content-hash cache's lock keeps any program from compiling twice.
test: toolchain
	$(BIN)/python -m pytest -q -n 2 --durations=15

bench: toolchain
	$(BIN)/python bench/nbdm_speed.py

clean:
	rm -rf out .pytest_cache
