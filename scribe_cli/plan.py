"""What a configuration implies before any text is emitted: its likelihood form (which data it needs and
what a gradient costs) and the Stan type of every gene-level quantity (vectors per gene, matrices per gene
and component, or per gene and dataset). Shared by blocks.py, block_args.py and standata.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .config import ModelConfig


@dataclass(frozen=True)
class Plan:
    """Shapes and the likelihood form implied by a configuration."""

    mix: bool
    elt: str  # Stan type of a gene-level parameter: vector[G], or matrix[G, K] (genes x components)
    p_scalar: bool  # one p for all genes (and components)
    form: str  # pairs | pairs_mixture | capture_shared_p | capture_cells
    obs: str  # nb | zinb | bnb | zibnb
    dparams: bool = False  # dataset-specific gene parameters (genes x datasets matrices, datasets.md)
    dweights: bool = False  # mixture weights per dataset
    shapes: dict = field(default_factory=dict)  # dparams: Stan type of every gene-level quantity


def likelihood_form(config: ModelConfig) -> str:
    """Which likelihood template, i.e. which data the program needs and what it costs per gradient.

    pairs / pairs_mixture: no cell-specific parameters, per-gene sufficient statistics.
    capture_shared_p: variable capture with one shared p (NB only): p_hat depends on the cell alone.
    capture_cells: every other variable-capture model; O(C G) zero terms, reduce_sum over cells.
    """
    if not config.variable_capture:
        return "pairs_mixture" if config.mixture else "pairs"
    if not config.zero_inflated and not config.bnb and not config.gene_specific_p:
        return "capture_shared_p"
    return "capture_cells"


def plan(config: ModelConfig) -> Plan:
    obs = ("zi" if config.zero_inflated else "") + ("bnb" if config.bnb else "nb")
    return Plan(
        mix=config.mixture,
        elt="matrix[G, K]" if config.mixture else "vector[G]",
        p_scalar=not config.gene_specific_p,
        form=likelihood_form(config),
        obs=obs,
        dparams=config.dataset_params,
        dweights=config.dataset_axis and config.mixture,
        shapes=dataset_shapes(config) if config.dataset_params else {},
    )


# --- Multi-dataset programs (datasets.md) -----------------------------------------------------------------
# A quantity is shared by the datasets (real, vector[G]) or dataset-specific (vector[D]: one per dataset;
# matrix[G, D]: one per gene and dataset). Derived quantities take the broadcast shape of their inputs, and
# the likelihood sees every gene-level quantity as a genes x datasets matrix.
GD = "matrix[G, D]"


def bcast_shape(a: str, b: str) -> str:
    if a == b or b == "real":
        return a
    if a == "real":
        return b
    return GD  # vector[G] with vector[D], or anything with a matrix


def dataset_shapes(config: ModelConfig) -> dict[str, str]:
    """Stan type of each gene-level quantity of a program with dataset-specific parameters."""
    dp = config.dataset_priors()
    expression = "r" if config.parameterization == "canonical" else "mu"
    if "prob" in dp:
        prob_shape = "vector[D]" if config.prob_dataset_mode == "scalar" else GD
    else:
        prob_shape = "vector[G]" if config.prob_prior != "none" else "real"
    sh = {expression: GD if "expression" in dp else "vector[G]"}
    if config.parameterization in ("canonical", "mean-prob"):
        sh["p"] = prob_shape
    elif config.parameterization == "mean-odds":
        sh["phi"] = sh["p"] = prob_shape
    else:
        sh["r"] = "vector[G]"
        sh["p"] = bcast_shape(sh["mu"], sh["r"])
    derived = "mu" if expression == "r" else "r"
    if derived not in sh:
        sh[derived] = bcast_shape(sh[expression], sh.get("phi", sh["p"]))
    if config.zero_inflated:
        sh["gate"] = GD if "gate" in dp else "vector[G]"
    if config.bnb:
        sh["omega"] = GD if "overdispersion" in dp else "vector[G]"
        sh["kappa"] = bcast_shape(sh["r"], sh["omega"])
    return sh


def as_gd(expr: str, shape: str) -> str:
    """``expr`` (of type ``shape``) as a genes x datasets matrix."""
    return {"real": f"rep_matrix({expr}, G, D)", "vector[G]": f"rep_matrix({expr}, D)",
            "vector[D]": f"rep_matrix(({expr})', G)", GD: expr}[shape]


def times_shape(x: str, x_shape: str, f: str, f_shape: str) -> str:
    """x times f elementwise, broadcast (f: an expression, parenthesised where needed)."""
    out = bcast_shape(x_shape, f_shape)
    if x_shape != out:
        x, x_shape = as_gd(x, x_shape), out
    if f_shape == "real":
        return f"{x} * ({f})"
    if x_shape == GD and f_shape == "vector[G]":
        return f"diag_pre_multiply({f}, {x})"  # row g times f[g]
    if x_shape == GD and f_shape == "vector[D]":
        return f"diag_post_multiply({x}, {f})"  # column d times f[d]
    return f"{x} .* {f}"


def lift_shape(name: str, shape: str, to: str) -> str:
    """``name`` as an operand of type ``to``: itself, or broadcast to genes x datasets."""
    return name if shape == to else as_gd(name, shape)


def splits_nonzero_terms(config: ModelConfig) -> bool:
    """capture_cells with NB or ZINB counts and no mixture sums the (gene, count)-only parts of its non-zero
    terms from the pair statistics (capture_cells.stan.j2, nonzero_gene_terms): the program then needs the
    pairs, their rising-factorial table and the library sizes too."""
    return likelihood_form(config) == "capture_cells" and not config.mixture and not config.bnb


def native_capture_terms(config: ModelConfig) -> bool:
    """The split capture_cells terms call the hand-written C++ of stan/cpp/capture_cells.hpp (one autodiff
    node per call instead of several per (cell, gene); the zero terms summed by interpolation) unless the
    config asks for the Stan-language reference."""
    return splits_nonzero_terms(config) and config.native_gradients


def output_only(config: ModelConfig) -> frozenset[str]:
    """Derived gene-level quantities that the model block never reads, computed in generated quantities (once
    per draw) instead of transformed parameters (every gradient): the same draws in the output. In a canonical
    log-mean program with the plain pair likelihood (r, log p, log(1 - p): no BNB alpha), mu = exp(log mu) is
    only reported, and so is p = inv_logit(prob_link) when p comes from a gene-level hierarchy (the likelihood
    takes log_inv_logit(prob_link)). On full PBMC those two cost ~0.35 ms of a ~3 ms gradient
    (docs/performance.md)."""
    if not (samples_log_mean(config) and likelihood_form(config) == "pairs" and not config.bnb):
        return frozenset()
    return frozenset({"mu", "p"} if config.prob_split else {"mu"})


def shifts_capture(config: ModelConfig) -> bool:
    """A log-mean program with the --organism capture prior samples the cells' common capture shift as one
    coordinate, with log mu moving along it (params/capture_organism.stan.j2, base.stan.j2).

    Why: the likelihood sees mu_g x capture_c only; the prior pins their common scale to sd / sqrt(C), while the
    data pin each cell to ~1 / sqrt(its UMIs). In per-cell coordinates that scale is a direction through all
    cells and the high-count genes that a diagonal metric cannot follow: simulated nbvcp 10,000 x 2,000, NUTS
    4 x (1000 + 1000), the top genes' log mu had bulk ESS 82 and R-hat 1.065; with the shift, bulk ESS >= 3,797
    and R-hat <= 1.009 but for 3 of the 10,000 captures (1.012), at the same 31 steps per draw
    (docs/performance.md). Other parameterizations sample mu or
    r on a bounded scale, where a shift is not a coordinate: they keep per-cell eta."""
    return (samples_log_mean(config) or samples_dataset_log_mean(config)) and config.capture_prior is not None


def scales_log_mean(config: ModelConfig) -> bool:
    """A log-mean program (samples_log_mean) with a gene-level p hierarchy declares log_mu (log_mu_shifted under
    the capture shift) with an offset and a multiplier from each gene's counts (centring.log_mean_scales): the
    sampler moves in units of the mean's standard error, the model is unchanged (Stan adds the constant Jacobian).

    Why: Stan's windowed adaptation regularises each window's variance estimate towards 1e-3 (n / (n + 5) var
    + 1e-3 x 5 / (n + 5)), so after its first 25-draw window the metric gives a coordinate of posterior sd
    0.0008 (the highest-count genes' log mean at 10,000 cells) a scale of 0.013, and the step size has to fit
    that 16x mismatch: simulated nbdm 10,000 x 2,000, one chain, the 50 iterations after that window took
    38,384 of the warmup's 85,475 leapfrog steps (bench/warmup_metric.py). With the capture shift the sampled
    coordinate is log mu - shift, pinned as tightly by the gene's counts; its offset divides by the prior's
    mean capture.

    Only with a gene-level p hierarchy, whose centre and scale are scaled with it (scales_prob_hyper): scaling
    must leave no coordinate far tighter than the rest. A shared p (one logit p, sd 0.006 on the brief's
    2,000 x 1,000 benchmark) would then be alone at its scale, and Stan's first 100 iterations, on the unit
    metric, took 60,000-65,000 leapfrog steps instead of 3,900-5,400 (bench/warmup_metric.py, three seeds).
    Its bounded declaration takes no offset/multiplier; so a shared p keeps plain log mu."""
    return samples_log_mean(config) and config.scaled_coordinates and config.prob_split


def scales_prob_hyper(config: ModelConfig) -> bool:
    """The centre of a gene-level logit p hierarchy, and under the Gaussian family its scale's sigma_raw, are
    declared with offsets and multipliers from the empirical-Bayes fit of the per-gene estimates
    (centring.prob_hyper_scales). Every gene informs them, so their posterior sds are ~sigma / sqrt(G): the
    centre's 0.0009 at 10,000 x 2,000 with one shared p, sigma_raw's 0.014 on PBMC's 14,561 genes, below what
    Stan's warmup learns from its early windows (scales_log_mean). Scaling log mu alone left the centre the
    tightest coordinate at 10,000 x 2,000, and the unit-metric phase then cost 5x (bench/warmup_metric.py)."""
    return config.prob_split and config.scaled_coordinates


def samples_log_mean(config: ModelConfig) -> bool:
    """A canonical program whose r is a base-prior vector per gene samples log mu_g = log r_g + logit(p_g) in
    place of r_g, with r derived and the Jacobian of the change added (params/base.stan.j2, canonical.stan.j2).

    Why: the data pin each gene's mean far more tightly than its r, and in (log r, logit p) the mean is
    log r + logit p, a diagonal ridge that a diagonal mass matrix cannot follow; with a shared p every r_g moves
    with it. In (log mu, p) the ridge is axis-aligned. PBMC, 2,000 genes, default nbdm, 1 chain x (150 + 100):
    255 -> 63 leapfrog steps per draw (docs/performance.md). Mixtures, dataset-level and hierarchical r
    (r_pop), and --unconstrained keep sampling r."""
    return (config.mean_coordinates and config.parameterization == "canonical" and not config.unconstrained
            and not config.mixture and not config.dataset_params and config.expression_prior == "none"
            and config.expression_dataset_prior == "none")


def gates_log_mean(config: ModelConfig) -> bool:
    """A zero-inflated log-mean program samples each gene's mean after its gate, log((1 - gate) mu) (minus the
    capture shift where there is one), and derives log mu = that - log1m(gate) (params/canonical.stan.j2). At
    fixed gate that is a shift, so its Jacobian is 1: the same model and priors.

    Why: the counts pin the gene's mean count, (1 - gate) mu (times the capture), and its share of zeros; in
    (logit gate, log mu) a gene whose zeros the gate shares lies on the ridge d log mu = gate d logit(gate),
    steep in log mu's units of its standard error (plan.scales_log_mean, centred on the observed mean, which is
    this coordinate's). Mean-field ADVI puts each marginal at the ridge's narrow width and L-BFGS crawls along
    it: simulated zinbvcp 2,000 x 500, ADVI's 90% intervals covered 64% of the true means in log mu and 84% in
    this coordinate (docs/performance.md). --ungated-mean samples log mu.

    Only with the gate's base prior (Beta on (0, 1), light-tailed in logit). Under a gate hierarchy, an
    approximation's draws of a loose gene's gate reach 1 - 1e-12 (NEG's and the horseshoe's tails, which a
    Gaussian in their coordinates carries), and mu = mean / (1 - gate) with them: simulated zinb 1,000 x 500,
    `--gate-prior neg`, ADVI's posterior mean of mu reached 2e14 for a gene of mean 0.03 (log-mean correlation
    0.20 against 0.99). NUTS on PBMC with `--gate-prior neg` took 511 leapfrog steps per draw either way.

    Joint programs (samples_dataset_log_mean) keep log mu per (gene, dataset): there logit p = log mu - log r sits
    under p's centred hierarchy, so a moving gate moved p with it, and NUTS on the simulated joint 1,000 x 500
    took 492 leapfrog steps per draw against 223 (bench/joint_coordinates.py, seed 1; docs/performance.md)."""
    return samples_log_mean(config) and config.zero_inflated and config.gate_prior == "none" and config.gated_mean


def marginal_neg(config: ModelConfig, target: str) -> bool:
    """A gene-level NEG prior with u = a = 1 (the defaults) and one local scale per element (prob, gate,
    overdispersion; not expression, whose local scale is shared by the components) samples each element's
    deviation from the centre with both local variables integrated out, through z = asinh(d / sqrt(tau_neg)),
    and draws psi from its exact conditional afterwards (priors/neg.stan.j2). The same posterior.

    Why: in (z, log psi) a gene whose data only bound its gate from above sits in a funnel, and in d itself
    its tail falls as |d|^-3. PBMC top 300 genes, zinb --gate-prior neg, one chain x (200 + 200), seeds 1-3
    (bench/gate_geometry.py): 5, 7 and 4 divergences in the psi form, 0, 6 and 0 in this one, at similar steps
    per draw; in SBC the NUTS replicates with divergences fell from 100, 98, 67 to 91, 23, 26
    (docs/performance.md). Other u and a have no closed form here; dataset-level NEG shares psi
    across datasets (or scales it by a sampled sigma): both keep psi_raw."""
    return (config.neg_marginal is not False and getattr(config, f"{target}_prior") == "neg" and target != "expression"
            and config.neg_u == 1.0 and config.neg_a == 1.0)


def integrates_gate(config: ModelConfig) -> bool:
    """zinb with a marginal NEG gate hierarchy (plan.marginal_neg), one component, no capture, no dataset-level
    parameters and the C++ likelihood sums each gene's gate out on a fixed grid of logit(gate) - gate_loc
    (stan/cpp/gate_quadrature.hpp, standata.gate_grid): NUTS samples the means, p and gate_loc only, and each gate
    is drawn from its grid conditional in generated quantities (priors/neg.stan.j2). The same posterior; the
    grid's error is below 2.5e-4 nat per gene on PBMC (bench/gate_quadrature.py --accuracy).

    Why: without cell-level parameters a gene's gate sees only its zero and non-zero counts, a one-dimensional
    integral. Sampled, the gates whose data bound them from one side (pinned by the zeros above, the NEG tail
    below) set the step size: PBMC top 1,500 genes, one chain x (300 + 100), 511 leapfrog steps per draw at step
    0.0104 and 145,000 warmup steps sampled against 31 at 0.161 and 14,000 summed out; 207 s against 70 s
    (bench/hessian_spectrum.py, bench/gate_quadrature.py, docs/performance.md). Pathfinder keeps the sampled
    gates (its NEG local scales are sampled: ModelConfig.for_method); --stan-gradients renders the sampled-gate
    program, the Stan-language reference."""
    return (config.summed_gates and config.native_gradients and config.model == "zinb" and not config.bnb
            and not config.mixture and not config.dataset_params and marginal_neg(config, "gate"))


def dense_reference(config: ModelConfig) -> ModelConfig:
    """The configuration whose program render(check_loglik=True or dense=True) writes: the summed gates
    (integrates_gate) sampled, since the dense reference sums the likelihood at one gate per gene. The summed
    likelihood has its own test against a dense numerical integral (tests/test_gate_quadrature.py)."""
    return dataclasses.replace(config, summed_gates=False) if integrates_gate(config) else config


def neg_forms(config: ModelConfig) -> dict[str, bool]:
    """Which NEG forms the program's blocks use: their Stan functions are declared once, by the first."""
    gene = [t for t, f in config.hierarchical().items() if f == "neg"]
    dataset = [t for t, f in config.dataset_priors().items() if f == "neg"]
    marginal = [t for t in gene if marginal_neg(config, t)]
    return {"marginal": bool(marginal), "psi_raw": bool(dataset) or len(marginal) < len(gene)}


def samples_dataset_log_mean(config: ModelConfig) -> bool:
    """A canonical joint program with a Gaussian dataset-level p hierarchy per (gene, dataset) samples each
    column's log mean log mu[g, d] in place of p's standardised deviations: logit p = log mu - log r (r from its
    own level: the expression hierarchy or the shared r), the p hierarchy written centred on logit p
    (params/log_mean_dataset.stan.j2). The map (log mu at fixed r) -> logit p is a shift: its Jacobian is 1.

    Why: the likelihood pins each column's mean far more tightly than its r or p, and in (log r, logit p) the
    mean is a diagonal ridge, as in the single-dataset programs (samples_log_mean). Under capture the mean also
    slides along the cells' capture (shifts_capture). Simulated joint zinbvcp 1,000 x 500, one chain x
    (150 + 100) (bench/joint_coordinates.py): 589 leapfrog steps per draw as (r, z) and 158 as log mu with the
    capture shift. r keeps its own level (with an expression hierarchy: samples_dataset_r_mean); p's hierarchy
    becomes centred, whose one global scale the G x D columns pin. Only the Gaussian family: horseshoe and NEG have a local scale per gene, each a funnel
    when centred. Other dataset modes (scalar p, two_level) keep sampling z."""
    return (config.mean_coordinates and config.parameterization == "canonical" and not config.unconstrained
            and not config.mixture and config.dataset_params and config.expression_prior == "none"
            and config.prob_dataset_prior == "gaussian" and config.prob_dataset_mode == "gene_specific")


def samples_dataset_r_mean(config: ModelConfig) -> bool:
    """samples_dataset_log_mean with a dataset-level expression hierarchy (r_g^(d) around r_pop_g) samples, per
    gene, p's mean over the datasets non-centred (w_g) and r's contrasts between the datasets (z_g, D - 1
    orthonormal Helmert contrasts in units of the hierarchy's scale s_g); log r's mean over the datasets follows:
    mean_d log mu_gd - prob_loc - prob_sigma / sqrt(D) w_g (params/log_mean_dataset.stan.j2). r_pop is integrated
    out: under log r_pop ~ Normal(m0, s0), (log r_g1 .. log r_gD) ~ N(m0 1, s_g^2 I + s0^2 1 1^T), whose mean over
    the datasets is Normal(m0, sqrt(s0^2 + s_g^2 / D)) and whose orthonormal contrasts are Normal(0, s_g), all
    independent; r_pop is drawn from its normal conditional in generated quantities. p's hierarchy keeps its
    contrasts centred on logit p; the Jacobian sigma / sqrt(D) of w -> log r's mean cancels the normal density
    of p's gene mean, leaving w ~ Normal(0, 1). The same posterior.

    Why: with r_pop sampled, a gene whose r the data pin per dataset left r_pop and its local scale a ridge
    (centre + scale z = constant); and where the data leave r loose, the centred p hierarchy was all that pinned
    log r, so its one scale prob_sigma sat in a funnel through every such gene. Simulated joint zinbvcp 1,000 x
    475 (genes with >= 3 non-zero cells per dataset), one chain x (150 + 100), three seeds each (docs/performance.md,
    session 20): lowest bulk ESS 1.4-1.5 -> 2.0-5.1 and 15-20% fewer warmup steps; steps per draw and divergences
    within the seeds' spread."""
    return samples_dataset_log_mean(config) and "expression" in config.dataset_priors()


def splits_dataset_gate(config: ModelConfig) -> bool:
    """A dataset-level gate hierarchy (no mixture) samples each (gene, dataset) column centred or non-centred as
    the data choose (centring.dataset_gate_split_data: the gene-level gate's test on each dataset's cells), as
    the gene-level gate does (config.gate_split).

    Why: a column whose zeros demand a gate is pinned by the data, and non-centred its gate is the ridge
    sqrt(psi_g) z = constant that forced NUTS into tiny steps on the single-dataset gate. The joint zinbvcp
    1,000 x 500 with log-mean coordinates, one chain x (150 + 100): the lowest bulk ESS were a gate's psi and
    78 of the 100 draws diverged (docs/performance.md)."""
    return "gate" in config.dataset_priors() and not config.mixture


def scales_dataset_log_mean(config: ModelConfig) -> bool:
    """samples_dataset_log_mean's log mu in units of each column's standard error (offset and multiplier per
    (gene, dataset), as scales_log_mean per gene). Its centre and scale's coordinates stay plain: the G x D
    columns pin the one centre and sigma to ~sigma / sqrt(G D), looser than the columns themselves."""
    return samples_dataset_log_mean(config) and config.scaled_coordinates
