// Prototype (session 24; bench/gate_quadrature.py): each gene's gate integrated out of the pair-statistics ZINB
// likelihood on a fixed grid of logit(gate) - gate_loc (trapezoid weights against the NEG marginal density, data):
//   sum_g log sum_k exp(log_w_k + (C - m_g) log P_gk + m_g log(1 - s_k)),  P_gk = s_k + (1 - s_k) f0_g,
// s_k = inv_logit(gate_loc + node_k), f0_g = exp(log0_g) the NB's zero probability. Value and partials in one pass
// over genes x nodes: one log and one exp per pair (P on the natural scale: s_k >= inv_logit(-37) keeps it > 0).
#ifndef SCRIBE_GATE_QUADRATURE_HPP
#define SCRIBE_GATE_QUADRATURE_HPP
#include <stan/math.hpp>
#include <cmath>
#include <ostream>

template <typename T_m, typename T_l0, typename T_loc, typename T_node, typename T_w>
stan::promote_args_t<stan::base_type_t<T_l0>, T_loc> zinb_gate_quadrature(
    const int& C, const T_m& gene_nonzero, const T_l0& log0, const T_loc& gate_loc, const T_node& node,
    const T_w& log_w, std::ostream* pstream__) {
  using Eigen::ArrayXd;
  const auto& l0_ref = stan::math::to_ref(log0);
  const Eigen::VectorXd l0 = stan::math::value_of(l0_ref);
  const double loc = stan::math::value_of(gate_loc);
  const auto& m = stan::math::to_ref(gene_nonzero);
  const Eigen::VectorXd nd = node, lw = log_w;
  const Eigen::Index K = nd.size(), G = l0.size();
  ArrayXd x = loc + nd.array();
  ArrayXd sig(K), one_m_sig(K), b(K);
  for (Eigen::Index k = 0; k < K; ++k) {
    const double q = std::exp(-std::fabs(x[k]));  // <= 1
    sig[k] = x[k] > 0 ? 1 / (1 + q) : q / (1 + q);
    one_m_sig[k] = x[k] > 0 ? q / (1 + q) : 1 / (1 + q);
    b[k] = -((x[k] > 0 ? x[k] : 0.0) + std::log1p(q));  // log(1 - s)
  }
  const ArrayXd lwa = lw.array();
  Eigen::VectorXd d_l0(G);
  double d_loc = 0, value = 0;
  ArrayXd P(K), L(K), w(K);
  for (Eigen::Index g = 0; g < G; ++g) {
    const double f0 = std::exp(l0[g]), N = m.coeff(g), Z = C - N;
    P = sig + one_m_sig * f0;
    L = lwa + Z * P.log() + N * b;
    const double M = L.maxCoeff();
    w = (L - M).exp();
    // with t = (1 - s) f0 / P: d log P / d log0 = t and d log P / d x = s (1 - s) (1 - f0) / P = (1 - s) - t,
    // so both partials are weighted sums of s and t: S, ws = sum w s, wt = sum w t
    const double S = w.sum(), ws = (w * sig).sum(), wt = f0 * (w * one_m_sig / P).sum();
    value += M + std::log(S);
    d_l0[g] = Z * wt / S;
    d_loc += (Z * (S - ws - wt) - N * ws) / S;
  }
  auto ops = stan::math::make_partials_propagator(l0_ref, gate_loc);
  if constexpr (!stan::is_constant_all<T_l0>::value) stan::math::partials<0>(ops) = d_l0;
  if constexpr (!stan::is_constant_all<T_loc>::value) stan::math::partials<1>(ops) = d_loc;
  return ops.build(value);
}
#endif
