# Two commands on a fresh machine: `make demo` and `make test`. Everything installs from PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_OUT := out/demo_pbmc_500genes.nbdm.nc

.PHONY: install toolchain demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Downloads the pinned httpstan wheel (stanc + Stan headers) and builds our CmdStan-compatible
# driver in the user cache ($$SCRIBE_CACHE_DIR, default ~/.cache/scribe-cli). Once; ~3 minutes.
toolchain: install
	$(BIN)/python -m scribe_cli.toolchain

demo: toolchain
	@mkdir -p out
	$(BIN)/scribe run data/demo_pbmc_500genes.h5ad --model nbdm --seed 1 -o $(DEMO_OUT) --overwrite
	@echo ""
	@echo "Posterior written to $(DEMO_OUT) (ArviZ InferenceData, NetCDF). Open it with:"
	@echo "  $(BIN)/python -c \"import arviz as az; idata = az.from_netcdf('$(DEMO_OUT)'); print(az.summary(idata, var_names=['p']))\""

test: toolchain
	$(BIN)/python -m pytest -q

bench: toolchain
	$(BIN)/python bench/nbdm_speed.py

clean:
	rm -rf out .pytest_cache
