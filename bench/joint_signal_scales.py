"""An experiment on the joint model's signal genes (session 21; not shipped): the genes whose observed log means
differ between the two datasets by more than K standard errors get their contrast of log r sampled centred, with
its horseshoe scale kappa = tau x lambda sampled directly (kappa ~ HalfCauchy(0, tau), so the global tau no longer
moves every such gene's lambda); the other genes keep the shipped non-centred horseshoe. A text edit of the
program bench/joint_coordinates.py runs (`log_mean`), with its data, starts and seeds; one NUTS chain x (150 +
100), warmup saved under /tmp/jc, one JSON line as joint_coordinates.py prints.

    python bench/joint_signal_scales.py /tmp/scribe-scale-data/zinbvcp_d2_1000x500_t20000_min3.h5ad 1 2

(arguments: the data, the seed, K; `... 1 2 shipped` runs the unedited program with the same script; K =
`genes=307,171,...` centres the genes named instead)
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from joint_coordinates import JOINT, run_chain  # noqa: E402
from scribe_cli.cache import compile_program  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402
from scribe_cli.data import read_counts  # noqa: E402
from scribe_cli.render import render  # noqa: E402
from scribe_cli.standata import stan_data  # noqa: E402

h5ad, seed, k = sys.argv[1], int(sys.argv[2]), sys.argv[3]
variant = sys.argv[4] if len(sys.argv) > 4 else "kappa"
config = validate(ModelConfig(**JOINT, mean_coordinates=True))
text = render(config)
def sub(old, new):
    global text
    assert text.count(old) == 1, old
    text = text.replace(old, new)
if variant == "kappa":
    # data
    sub("  vector[2] prior_r;", "  vector[2] prior_r;\n  int<lower=0, upper=G> S;\n  array[S] int<lower=1, upper=G> sig_idx;\n  array[G - S] int<lower=1, upper=G> nul_idx;")
    sub("  matrix[G, D - 1] expression_dataset_z;", "  matrix[G - S, D - 1] expression_dataset_z;\n  vector<lower=0>[S] expression_dataset_kappa;\n  matrix[S, D - 1] expression_dataset_delta;")
    sub("  vector<lower=0, upper=1>[G] expression_dataset_lambda_u;", "  vector<lower=0, upper=1>[G - S] expression_dataset_lambda_u;")
    sub("  vector[G] expression_dataset_lambda = tan(pi() / 2 * expression_dataset_lambda_u); // ~ HalfCauchy(1)",
        "  vector[G] expression_dataset_lambda;\n  expression_dataset_lambda[nul_idx] = tan(pi() / 2 * expression_dataset_lambda_u);\n  expression_dataset_lambda[sig_idx] = expression_dataset_kappa / expression_dataset_tau;")
    sub("  matrix[G, D] r = exp(rep_matrix(log_r_mean, D) + diag_pre_multiply(expression_dataset_tau * expression_dataset_lambda_tilde, expression_dataset_z) * dataset_contrasts');",
        "  vector[G] expression_dataset_scale = expression_dataset_tau * expression_dataset_lambda_tilde;\n"
        "  matrix[G, D - 1] expression_dataset_contrast;\n"
        "  expression_dataset_contrast[nul_idx] = diag_pre_multiply(expression_dataset_scale[nul_idx], expression_dataset_z);\n"
        "  expression_dataset_contrast[sig_idx] = expression_dataset_delta;\n"
        "  matrix[G, D] r = exp(rep_matrix(log_r_mean, D) + expression_dataset_contrast * dataset_contrasts');")
    sub("  to_vector(expression_dataset_z) ~ std_normal();",
        "  to_vector(expression_dataset_z) ~ std_normal();\n"
        "  expression_dataset_kappa ~ cauchy(0, expression_dataset_tau);\n"
        "  to_vector(expression_dataset_delta) ~ normal(0, to_vector(rep_matrix(expression_dataset_scale[sig_idx], D - 1)));")
counts = read_counts(Path(h5ad), dataset_key="dataset")
data = stan_data(config, counts)
off, se = np.asarray(data["log_mu_offset"]), np.asarray(data["log_mu_scale"])
zs = np.abs(off[:, 0] - off[:, 1]) / np.sqrt(se[:, 0] ** 2 + se[:, 1] ** 2)
# K = "genes=307,171" names the genes instead (bench/hessian_spectrum.py's stiffest contrasts, session 24)
sig = (np.array([int(g) for g in k.split("=", 1)[1].split(",")]) if k.startswith("genes=")
       else np.flatnonzero(zs > float(k)) + 1)
if variant == "kappa":
    data.update(S=int(sig.size), sig_idx=sig.tolist(), nul_idx=np.setdiff1d(np.arange(1, data["G"] + 1), sig).tolist())
print("signal genes:", sig.size, sig.tolist()[:30], file=sys.stderr)
model = compile_program(text, name=f"joint_{variant}").model
keep = Path(f"/tmp/jc/{variant}_s{seed}_k{k}")
keep.mkdir(parents=True, exist_ok=True)
row = run_chain(model, data, seed, 150, 100, str(keep))
print(json.dumps({"variant": variant, "k": k, "S": int(sig.size), **row}))
