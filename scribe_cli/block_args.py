"""The arguments of each template block (the `a` every macro takes): names, Stan types, link functions,
centres and scales of the hierarchical priors, the likelihood's operands. Which blocks a program has is
blocks.py's job; the text is render.py's.
"""

from __future__ import annotations

from .config import BASE_PRIORS, ModelConfig
from .plan import (GD, Plan, as_gd, integrates_gate, lift_shape, marginal_neg, native_capture_terms, neg_forms, output_only,
                   gates_log_mean, samples_dataset_log_mean, samples_dataset_r_mean, samples_log_mean, scales_dataset_log_mean, scales_log_mean, scales_prob_hyper,
                   shifts_capture, splits_dataset_gate, splits_nonzero_terms, times_shape)

# Hierarchical targets (priors.md): the parameter each defines, its link, the normal prior of a scalar
# population centre (None: expression has one centre per gene, with the base prior), the Gaussian s_raw prior.
_TARGETS = {
    "prob": ("p", "logit", (0, 1), (0, 0.5)),
    "gate": ("gate", "logit", (-5, 1), (-2, 0.5)),
    "overdispersion": ("omega", "log", (-5, 1), (-2, 0.5)),
    "expression": (None, "log", None, (-2, 0.5)),
}


def derived_dataset_args(config: ModelConfig, sh: dict) -> dict:
    """(type, expression) of the derived quantities of the parameterization and BNB, broadcast."""
    def ratio(num: str, den: str) -> str:  # p / (1 - p) or (1 - p) / p, in p's shape
        return f"{num} / {den}" if sh["p"] == "real" else f"{num} ./ {den}"

    out = {}
    if samples_dataset_log_mean(config):
        out["mu"] = (sh["mu"], "exp(log_mu)")  # log mu per (gene, dataset) is sampled (params/log_mean_dataset.stan.j2)
    elif config.parameterization == "canonical":
        out["mu"] = (sh["mu"], times_shape("r", sh["r"], ratio("p", "(1 - p)"), sh["p"]))
    elif config.parameterization == "mean-prob":
        out["r"] = (sh["r"], times_shape("mu", sh["mu"], ratio("(1 - p)", "p"), sh["p"]))
    elif config.parameterization == "mean-odds":
        out["p"] = (sh["p"], "inv(1 + phi)")
        out["r"] = (sh["r"], times_shape("mu", sh["mu"], "phi", sh["phi"]))
    else:
        mu, r = lift_shape("mu", sh["mu"], sh["p"]), lift_shape("r", sh["r"], sh["p"])
        out["p"] = (sh["p"], f"{mu} ./ ({mu} + {r})")
    if config.bnb:
        r, omega = lift_shape("r", sh["r"], sh["kappa"]), lift_shape("omega", sh["omega"], sh["kappa"])
        out["kappa"] = (sh["kappa"], f"2 + ({r} + 1) ./ {omega}")
    return out


def _bounded(shape: str, unit: bool) -> str:
    """``vector[G]`` -> ``vector<lower=0, upper=1>[G]`` (unit) or ``vector<lower=0>[G]``."""
    bounds = "<lower=0, upper=1>" if unit else "<lower=0>"
    if shape == "real":
        return "real" + bounds
    kind, size = shape.split("[", 1)
    return f"{kind}{bounds}[{size}"


def base_specs(config: ModelConfig, pl: Plan) -> list[dict]:
    """The quantities sampled with a base prior, in declaration order."""
    in_comp = " and component" if pl.mix else ""
    docs = {
        "r": f"NB size (dispersion) per gene{in_comp}",
        "mu": f"mean expression per gene{in_comp}",
        "r_pop": "population centre of each gene's r across components",
        "mu_pop": "population centre of each gene's mean across components",
        "p": "success probability, shared by all genes" + (" and components" if pl.mix else ""),
        "phi": "odds (1 - p) / p, shared by all genes" + (" and components" if pl.mix else ""),
        "gate": f"zero-inflation probability per gene{in_comp}",
        "capture": "capture probability per cell",
        "capture_odds": "capture odds per cell: capture = 1 / (1 + capture_odds)",
    }
    expression = "r" if config.parameterization == "canonical" else "mu"
    other = {"canonical": ("p", "real"), "mean-prob": ("p", "real"), "mean-odds": ("phi", "real"),
             "mean-disp": ("r", pl.elt)}[config.parameterization]
    dp = config.dataset_priors()
    if "expression" in dp:
        docs["r_pop"] = "shared size of each gene, the population level of its per-dataset r"
        docs["mu_pop"] = "shared mean of each gene, the population level of its per-dataset means"
    wanted: list[tuple[str, str, str]] = []  # (name, prior, shape)
    if samples_dataset_r_mean(config):
        pass  # r_pop integrated out, drawn in generated quantities (params/log_mean_dataset.stan.j2)
    elif config.expression_prior != "none" or "expression" in dp:
        wanted.append((f"{expression}_pop", expression, "vector[G]"))
    else:
        wanted.append((expression, expression, pl.elt))
    if not (other[0] in ("p", "phi") and (config.prob_prior != "none" or "prob" in dp)):
        wanted.append((other[0], other[0], other[1]))
    if config.zero_inflated and config.gate_prior == "none" and "gate" not in dp:
        wanted.append(("gate", "gate", pl.elt))
    if config.variable_capture and config.capture_prior is None:  # --organism: params/capture_organism
        name = "capture_odds" if config.parameterization == "mean-odds" else "capture"
        wanted.append((name, name, "vector[C]"))
    specs = []
    for i, (name, prior, shape) in enumerate(wanted):
        unit = prior in ("p", "gate", "capture")
        specs.append({
            "name": name,
            "prior": prior,
            "doc": docs[name],
            "shape": shape,
            "decl": _bounded(shape, unit),
            "is_matrix": shape.startswith("matrix"),
            "unconstrained": config.unconstrained,
            "link": "logit" if unit else "softplus",
            "dist": {"beta": "beta", "lognormal": "lognormal", "betaprime": "beta_prime"}[BASE_PRIORS[prior][0]],
            "first": i == 0,
            "anchor": name == config.anchored,
            "log_mean": name == "r" and samples_log_mean(config),
            "logit_p": logit_p_expr(config, pl),
            "capture_shift": name == "r" and shifts_capture(config),
            "scaled": name == "r" and scales_log_mean(config),
            "gated": name == "r" and gates_log_mean(config),
        })
    return specs


# Dataset-level targets (datasets.md): link, normal prior of a scalar population centre (None: the centre
# is the shared per-gene value), Gaussian s_raw prior, and what the local scales are per.
_DATASET_TARGETS = {
    "expression": ("log", None, (-2, 0.5), "vector[G]"),
    "prob": ("logit", (0, 1), (0, 0.5), None),  # per element (mode-dependent)
    "gate": ("logit", (-5, 0.01), (-2, 0.5), "vector[G]"),  # tight centre: zero inflation off by default
    "overdispersion": ("log", None, (-2, 0.5), "vector[G]"),
}


def dataset_hier_args(config: ModelConfig, pl: Plan, target: str, family: str, declare_data: bool) -> dict:
    """Arguments of a family block for a dataset-level prior: same non-centred form as the gene-level
    targets, with elements per (gene, dataset), or per dataset for the scalar p mode."""
    link, loc_prior, sigma_prior, local = _DATASET_TARGETS[target]
    T = f"{target}_dataset"
    q = {"expression": "r" if config.parameterization == "canonical" else "mu",
         "prob": "phi" if config.parameterization == "mean-odds" else "p",
         "gate": "gate", "overdispersion": "omega"}[target]
    if target == "prob":
        link = "log" if q == "phi" else "logit"
    elt = pl.shapes[q]
    local = local or elt
    if loc_prior is None:
        centre = f"rep_matrix(log({q}_pop), D)"
    elif elt == GD and config.prob_dataset_mode == "two_level" and target == "prob":
        centre = f"rep_matrix({T}_loc_d', G)"
    else:
        centre = f"{T}_loc"
    a = _family_args(T, family, q, elt, local, link, centre, loc_prior, sigma_prior, declare_data,
                     across="datasets", copies="D", label=" dataset-level")
    a["neg_forms"] = neg_forms(config)
    if target == "prob" and samples_dataset_log_mean(config):
        a["centred_on"] = "logit_p"  # from the sampled log mean (params/log_mean_dataset.stan.j2)
        # with r's mean over datasets sampled through p's (plan.samples_dataset_r_mean), only p's contrasts
        a["contrasts_only"] = samples_dataset_r_mean(config)
    if target == "expression" and samples_dataset_r_mean(config):
        a["mean_contrast"] = True  # z holds the contrasts; r itself is params/log_mean_dataset.stan.j2's
    if target == "gate" and splits_dataset_gate(config):  # columns (gene, dataset) centred or not, by the data
        a["split"] = dict(_split_args(T, family, "noncentred_gene", "centred_gene"), flat=True)
    return a


def log_mean_dataset_args(config: ModelConfig, pl: Plan) -> dict:
    """Arguments of params/log_mean_dataset.stan.j2 (plan.samples_dataset_log_mean)."""
    r_mean = None
    if samples_dataset_r_mean(config):
        T, family = "expression_dataset", config.dataset_priors()["expression"]
        scale = _family_scale(T, family)
        r_mean = {"scale": scale,
                  "contrasts": f"{scale} * {T}_z" if family == "gaussian" else f"diag_pre_multiply({scale}, {T}_z)"}
    return {"shift": shifts_capture(config), "scaled": scales_dataset_log_mean(config), "r_mean": r_mean,
            "log_r": as_gd("log(r)", pl.shapes["r"])}


def two_level_args(config: ModelConfig, pl: Plan, family: str, declare_data: bool) -> dict:
    """prob-dataset-mode two_level: each dataset its own centre and scale of logit p (log phi)."""
    a = dataset_hier_args(config, pl, "prob", family, declare_data)
    T = a["T"]
    local = {"gaussian": None, "horseshoe": f"{T}_lambda_tilde", "neg": f"sqrt({T}_psi)"}[family]
    z = f"{local} .* {T}_z" if local else f"{T}_z"
    a.update(family=a["family"].replace("dataset-level", "two-level"), two_level=True,
             scaled_z=f"diag_post_multiply({z}, {T}_sigma)", local=GD, local_matrix=True,
             local_unit=_bounded(GD, True), local_pos=_bounded(GD, False))
    return a


def _num(x: float) -> str:
    return f"{x:g}"


def hier_args(config: ModelConfig, pl: Plan, target: str, family: str, declare_data: bool) -> dict:
    q, link, loc_prior, sigma_prior = _TARGETS[target]
    T = target
    if target == "overdispersion" and "overdispersion" in config.dataset_priors():
        q = "omega_pop"  # the shared per-gene level of the dataset-level prior
    if target == "expression":
        q = "r" if config.parameterization == "canonical" else "mu"
        elt, local = "matrix[G, K]", "vector[G]"  # local scales per gene, shared by the components
        centre = f"rep_matrix(log({q}_pop), K)"
    else:
        elt = local = pl.elt
        centre = f"{T}_loc"
    args = _family_args(T, family, q, elt, local, link, centre, loc_prior, sigma_prior, declare_data,
                        across="components" if target == "expression" else "", copies="K")
    args["marginal"] = marginal_neg(config, target)
    args["neg_forms"] = neg_forms(config)
    args["scaled_hyper"] = target == "prob" and scales_prob_hyper(config)
    if args["marginal"]:  # no local scale: the deviation is a fixed function of z (priors/neg.stan.j2)
        args.update(scaled_z=f"sqrt(neg_tau) * sinh({T}_z)", z_doc="asinh of the scaled deviations",
                    family="marginal NEG")  # its local scales integrated out
    if target == "gate" and integrates_gate(config):  # the likelihood sums the deviations out
        args["summed"] = {"log0": f"nb_log0(r, {log_p_exprs(config, pl)[1]})"}
    if (config.gate_split and target == "gate") or (config.prob_split and target == "prob"):
        args["split"] = _split_args(T, family)
        args["q_in_gq"] = q in output_only(config)  # q from its link in generated quantities (plan.output_only)
        if args["marginal"]:
            args["split"]["scaled_z"] = args["scaled_z"]
    return args


def _split_args(T: str, family: str, noncentred: str = "noncentred_idx", centred: str = "centred_idx") -> dict:
    """The scale expressions of a split target (priors/_target.stan.j2): for the non-centred elements times
    their z, and for the centred ones as the normal's scale. Local scales are indexed by the data arrays
    T_<noncentred> and T_<centred>: the elements' genes (for a flat split over (gene, dataset) columns, the
    gene of each column)."""
    def at(idx: str) -> str:
        return {"gaussian": f"{T}_sigma", "horseshoe": f"{T}_tau * {T}_lambda_tilde[{T}_{idx}]",
                "neg": f"sqrt({T}_psi[{T}_{idx}])"}[family]

    nc = at(noncentred)
    return {"scaled_z": f"{nc} * {T}_z" if family == "gaussian" else f"{nc} .* {T}_z",
            "scale_centred": at(centred), "flat": False}


_FAMILY_NAMES = {"gaussian": "Gaussian", "horseshoe": "regularized horseshoe", "neg": "NEG"}


def _family_scale(T: str, family: str) -> str:
    """The elements' scale of a family's hierarchy on target T: one sigma, or tau x lambda_tilde / sqrt(psi) per
    element of the local scales."""
    return {"gaussian": f"{T}_sigma", "horseshoe": f"{T}_tau * {T}_lambda_tilde", "neg": f"sqrt({T}_psi)"}[family]


def _family_args(T: str, family: str, q: str, elt: str, local: str, link: str, centre: str, loc_prior, sigma_prior,
                 declare_data: bool, across: str, copies: str, label: str = "") -> dict:
    """Arguments of a family block (priors/*.stan.j2): link(q) = centre + scale * z, the scale the family's;
    local scales shaped ``local`` are repeated ``copies`` times (columns) when the element is a matrix."""
    scale = _family_scale(T, family)
    if family == "gaussian":
        scaled_z = f"{T}_sigma * {T}_z"
    elif local != elt:
        scaled_z = f"rep_matrix({scale}, {copies}) .* {T}_z"
    else:
        scaled_z = f"{scale} .* {T}_z"
    return {
        "T": T,
        "family": _FAMILY_NAMES[family] + label,
        "q": q,
        "elt": elt,
        "link": link,
        "inv_link": "exp" if link == "log" else "inv_logit",
        "centre": centre,
        "scaled_z": scaled_z,
        "scale": scale,  # the elements' scale (an expression; local scales not repeated)
        "loc_prior": tuple(map(_num, loc_prior)) if loc_prior else None,
        "sigma_prior": tuple(map(_num, sigma_prior)),
        "local": local,
        "local_matrix": local.startswith("matrix"),
        "local_unit": _bounded(local, True),
        "local_pos": _bounded(local, False),
        "declare_data": declare_data,
        "across": across,
        "split": None,
        "q_in_gq": False,
        "marginal": False,  # NEG with its local scales integrated out (plan.marginal_neg)
        "scaled_hyper": False,  # the centre in units of the data's standard error (plan.scales_prob_hyper)
        "z_doc": None,  # what T_z is, when not the standardised deviations
        "centred_on": None,  # every element centred, on this link-scale expression (no T_z): plan.samples_dataset_log_mean
        "contrasts_only": False,  # with centred_on: only its contrasts between the datasets (plan.samples_dataset_r_mean)
        "mean_contrast": False,  # T_z holds contrasts between the datasets, q defined elsewhere (the same)
        "neg_forms": None,
        "summed": None,  # NEG gate summed out of the likelihood on a grid (plan.integrates_gate): {log0: expression}
    }


def links_p_per_gene(config: ModelConfig, pl: Plan) -> bool:
    """p is a vector over genes, inv_logit of the gene-level hierarchy's prob_link (no mixture, no datasets)."""
    return config.prob_split and not pl.dparams  # prob_split: a gene-level p hierarchy, no mixture


def logit_p_expr(config: ModelConfig, pl: Plan) -> str:
    """logit(p) as the program holds it: the hierarchy's prob_link, or from p."""
    return "prob_link" if links_p_per_gene(config, pl) else "logit(p)"


def log_p_exprs(config: ModelConfig, pl: Plan) -> tuple[str, str]:
    """log(p) and log(1 - p) as the likelihood takes them (per gene, or per gene and component)."""
    if pl.p_scalar:
        rep = "rep_matrix({}, G, K)" if pl.mix else "rep_vector({}, G)"
        return rep.format("log(p)"), rep.format("log1m(p)")
    if links_p_per_gene(config, pl):  # from logit p itself: accurate where p nears 0 or 1, and no log of p
        return "log_inv_logit(prob_link)", "log1m_inv_logit(prob_link)"
    return "log(p)", "log1m(p)"


def likelihood_args(config: ModelConfig, pl: Plan, check_loglik: bool, log_lik: bool = False) -> dict:
    log_p, log1m_p = log_p_exprs(config, pl)
    return {
        "zi": config.zero_inflated,
        "bnb": config.bnb,
        "mix": pl.mix,
        "pairs": pl.form in ("pairs", "pairs_mixture"),
        "split_nonzero": splits_nonzero_terms(config),
        "native": native_capture_terms(config),
        "native_rise": config.native_gradients,  # rise_sum's table in C++ (stan/cpp/rise_sum.hpp)
        # the per-gene NB / ZINB terms from logit p in C++ (stan/cpp/logit_gene_sum.hpp)
        "native_logit": (config.native_gradients and pl.form == "pairs" and not config.bnb
                         and links_p_per_gene(config, pl) and not integrates_gate(config)),
        "summed_gate": integrates_gate(config),  # the gates summed out (stan/cpp/gate_quadrature.hpp)
        "obs": pl.obs,
        "log_p": log_p,
        "log1m_p": log1m_p,
        # mean-preserving alpha = (kappa - 1) m / r with m the NB mean (models.md, decisions.md item 2)
        "alpha": "(kappa - 1) .* mu ./ r",
        "assignments": config.assignments,
        "check_loglik": check_loglik,
        "log_lik": log_lik,
        "dparams": pl.dparams,
        "dweights": pl.dweights,
        "log_weights": "cell_log_weights(dataset_weights, cell_dataset)" if pl.dweights else "log(weights)",
        "r": "r", "mu": "mu", "gate": "gate", "kappa": "kappa",
        **(dataset_likelihood_args(config, pl) if pl.dparams else {}),
    }


def dataset_likelihood_args(config: ModelConfig, pl: Plan) -> dict:
    """Every gene-level quantity as a genes x datasets matrix; the pair form takes them as vectors over
    the columns (gene, dataset), in the order of the data's pair_gene."""
    sh = pl.shapes
    wrap = (lambda e: f"to_vector({e})") if pl.form == "pairs" else (lambda e: e)
    gd = {q: as_gd(q, sh[q]) for q in sh}
    out = {q: wrap(gd[q]) for q in ("r", "mu", "gate", "kappa") if q in sh}
    if samples_dataset_log_mean(config):  # from logit p itself, as links_p_per_gene: no log of p
        out["log_p"], out["log1m_p"] = wrap("log_inv_logit(logit_p)"), wrap("log1m_inv_logit(logit_p)")
    else:
        out["log_p"] = wrap(as_gd("log(p)", sh["p"]))
        out["log1m_p"] = wrap(as_gd("log1m(p)", sh["p"]))
    if config.bnb:
        out["alpha"] = wrap(f"({gd['kappa']} - 1) .* {gd['mu']} ./ {gd['r']}")
    if pl.form == "capture_shared_p":  # one p per dataset at most: p_hat per cell
        out["p_cell"] = "rep_vector(p, C)" if sh["p"] == "real" else "p[cell_dataset]"
    return out
