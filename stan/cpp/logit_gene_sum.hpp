// Hand-written value and gradient of the per-gene part of the pair-statistics NB and ZINB likelihoods when p
// comes from the gene-level hierarchy's logit, eta = prob_link (stan/templates/likelihoods/pairs.stan.j2):
//   NB:   sum_g  C r_g log(1 - p_g) + n_g log p_g
//   ZINB: sum_g (C - m_g) z_g + m_g (log(1 - pi_g) + A_g) + n_g log p_g,
//         A_g = r_g log(1 - p_g), z_g = log(pi_g + (1 - pi_g) exp(A_g)),
// with C cells, n_g the gene's total count, m_g its cells with a count and pi_g its gate. The rising-factorial
// table (rise_sum.hpp) and the tail stay separate terms.
//
// Why C++: in Stan each gene costs a log_inv_logit and a log1m_inv_logit node (two exp and two log1p), the
// products and sums over G, and for ZINB a loop of scalar log_sum_exp, log and log1m nodes: on the full PBMC
// matrix (14,561 genes) the NBDM likelihood took 2.5 ms of a 5.1 ms gradient (bench/profile_gradient.py), most
// of it these per-gene nodes. Here a call is one node: one exp and one log1p per gene (with a gate one exp and
// two logs more), the partials in the same pass. The Stan-language form stays in the template (--stan-gradients) as
// the reference this function is tested against (tests/test_likelihoods.py).
//
// In the global namespace: the generated model calls it unqualified from its own namespace.
#ifndef SCRIBE_LOGIT_GENE_SUM_HPP
#define SCRIBE_LOGIT_GENE_SUM_HPP

#include <stan/math.hpp>

#include <cmath>
#include <limits>
#include <ostream>

namespace scribe_native {

// Value and (when `grad`) the partials d/dr, d/deta, d/dgate; gate null for NB.
template <typename T_m, typename T_n>
double logit_gene_sum(int C, const T_m* nonzero, const T_n& total, const Eigen::VectorXd& r,
                      const Eigen::VectorXd& eta, const Eigen::VectorXd* gate, bool grad, Eigen::VectorXd& d_r,
                      Eigen::VectorXd& d_eta, Eigen::VectorXd& d_gate) {
  const Eigen::Index G = r.size();
  if (grad) {
    d_r.resize(G);
    d_eta.resize(G);
    if (gate) d_gate.resize(G);
  }
  double value = 0;
  for (Eigen::Index g = 0; g < G; ++g) {
    const double e = eta.coeff(g);
    // log(1 - p) = -log1p(exp(eta)) and log p = eta + log(1 - p), each from q = exp(-|eta|) <= 1
    const double q = std::exp(-std::fabs(e));
    const double softplus = (e > 0 ? e : 0.0) + std::log1p(q);
    const double log1m_p = -softplus, log_p = e - softplus;
    const double p = e > 0 ? 1 / (1 + q) : q / (1 + q), one_m_p = e > 0 ? q / (1 + q) : 1 / (1 + q);
    const double n = total.coeff(g), rg = r.coeff(g);
    const double A = rg * log1m_p;
    double dA;  // d value / d A
    if (gate) {
      const double pi = gate->coeff(g), m = nonzero->coeff(g);
      const double log1m_pi = std::log1p(-pi), b = log1m_pi + A;
      // z = log P(0) = log(pi + (1 - pi) exp(A)). On the natural scale (two transcendentals) while that sum is
      // far from underflow; else as log_sum_exp(log pi, b), finite when pi underflows to 0 (as Stan's form).
      const double P0 = std::exp(A), mix = pi + (1 - pi) * P0;
      double z, dz_dA, dz_dpi;
      if (mix > 1e-280) {
        z = std::log(mix);
        dz_dA = (1 - pi) * P0 / mix;
        dz_dpi = (A > -0.5 ? -std::expm1(A) : 1 - P0) / mix;  // 1 - exp(A) without cancellation near A = 0
      } else {
        const double log_pi = std::log(pi), hi = std::fmax(log_pi, b);
        z = hi == -std::numeric_limits<double>::infinity() ? hi
                                                            : hi + std::log(std::exp(log_pi - hi) + std::exp(b - hi));
        dz_dA = std::exp(b - z);
        dz_dpi = std::exp(-z) - std::exp(A - z);
      }
      value += (C - m) * z + m * b + n * log_p;
      if (grad) {
        dA = (C - m) * dz_dA + m;
        d_gate.coeffRef(g) = (C - m) * dz_dpi - m / (1 - pi);
      }
    } else {
      value += C * A + n * log_p;
      dA = C;
    }
    if (grad) {
      d_r.coeffRef(g) = dA * log1m_p;
      d_eta.coeffRef(g) = -dA * rg * p + n * one_m_p;
    }
  }
  return value;
}

}  // namespace scribe_native

// gene_total and gene_nonzero are data (declared `data vector` in Stan).
template <typename T_n, typename T_r, typename T_eta>
stan::promote_args_t<stan::base_type_t<T_r>, stan::base_type_t<T_eta>> nb_logit_gene_sum(
    const int& C, const T_n& gene_total, const T_r& r, const T_eta& eta, std::ostream* pstream__) {
  const auto& r_ref = stan::math::to_ref(r);
  const auto& eta_ref = stan::math::to_ref(eta);
  const Eigen::VectorXd rv = stan::math::value_of(r_ref), ev = stan::math::value_of(eta_ref);
  const auto& n = stan::math::to_ref(gene_total);
  constexpr bool need_gradient = !stan::is_constant_all<T_r, T_eta>::value;
  Eigen::VectorXd d_r, d_eta, unused;
  const double value = scribe_native::logit_gene_sum(C, static_cast<const Eigen::VectorXd*>(nullptr), n, rv, ev,
                                                     nullptr, need_gradient, d_r, d_eta, unused);
  auto ops = stan::math::make_partials_propagator(r_ref, eta_ref);
  if constexpr (!stan::is_constant_all<T_r>::value) stan::math::partials<0>(ops) = d_r;
  if constexpr (!stan::is_constant_all<T_eta>::value) stan::math::partials<1>(ops) = d_eta;
  return ops.build(value);
}

template <typename T_m, typename T_n, typename T_r, typename T_eta, typename T_gate>
stan::promote_args_t<stan::base_type_t<T_r>, stan::base_type_t<T_eta>, stan::base_type_t<T_gate>>
zinb_logit_gene_sum(const int& C, const T_m& gene_nonzero, const T_n& gene_total, const T_r& r, const T_eta& eta,
                    const T_gate& gate, std::ostream* pstream__) {
  const auto& r_ref = stan::math::to_ref(r);
  const auto& eta_ref = stan::math::to_ref(eta);
  const auto& gate_ref = stan::math::to_ref(gate);
  const Eigen::VectorXd rv = stan::math::value_of(r_ref), ev = stan::math::value_of(eta_ref);
  const Eigen::VectorXd gv = stan::math::value_of(gate_ref);
  const auto& m = stan::math::to_ref(gene_nonzero);
  const auto& n = stan::math::to_ref(gene_total);
  constexpr bool need_gradient = !stan::is_constant_all<T_r, T_eta, T_gate>::value;
  Eigen::VectorXd d_r, d_eta, d_gate;
  const double value = scribe_native::logit_gene_sum(C, &m, n, rv, ev, &gv, need_gradient, d_r, d_eta, d_gate);
  auto ops = stan::math::make_partials_propagator(r_ref, eta_ref, gate_ref);
  if constexpr (!stan::is_constant_all<T_r>::value) stan::math::partials<0>(ops) = d_r;
  if constexpr (!stan::is_constant_all<T_eta>::value) stan::math::partials<1>(ops) = d_eta;
  if constexpr (!stan::is_constant_all<T_gate>::value) stan::math::partials<2>(ops) = d_gate;
  return ops.build(value);
}

#endif  // SCRIBE_LOGIT_GENE_SUM_HPP
