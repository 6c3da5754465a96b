// Hand-written value and gradient of the zero-inflation gates summed out of the pair-statistics ZINB likelihood
// (stan/templates/likelihoods/pairs.stan.j2, plan.integrates_gate). Without cell-level parameters gene g's gate
// pi enters only through its Z_g = C - m_g zeros and m_g non-zeros, so its integral against the NEG prior of
// x = logit(pi) - gate_loc is one dimension per gene, taken on a fixed grid of x (nodes equally spaced, log_w the
// NEG mass of each node's cell: data, scribe_cli/gate_grid.py):
//   sum_g log sum_k exp(L_gk),  L_gk = log_w_k + Z_g log P_gk + m_g log(1 - s_k),  P_gk = s_k + (1 - s_k) f0_g,
// s_k = inv_logit(gate_loc + node_k), f0_g = exp(log0_g) the count distribution's zero probability.
//
// Why C++: in the Stan language that is a genes x nodes matrix of autodiff nodes (~450,000 on 1,500 genes);
// here one node, the partials d/dlog0 and d/dgate_loc from the same sums.
//
// Why not every node of every gene (3 ms a gradient on 1,500 genes x 301 nodes): most nodes of a gene add
// nothing or add what a formula gives. (1) L's two parts are unimodal in k: the prior's mode is the middle
// node; the counts' is where P = Z / C (P is monotone in s). Outside the span of the two modes L falls
// monotonically, so from that span outward a walk stops at the first node 36 nats below the running maximum
// (what it leaves is < K e^-36 of the sum). (2) Left of the node where s A <= eps, A = max(Z a, m),
// a = (1 - f0) / f0, the counts' part is its s = 0 limit times a power series in s:
//   exp(L_k - log_w_k - Z log0) = (1 + a s)^Z (1 - s)^m = 1 + c1 s + c2 s^2 + O((s A)^3),
//   c1 = Z a - m, c2 = (c1^2 - Z a^2 - m) / 2,
// so those nodes sum to exp(Z log0) (W0 + c1 W1 + c2 W2) with W_j = sum_k w_k s_k^j, prefix sums over the nodes
// computed once per call (they depend on gate_loc only). eps = 0.002: the series' error is ~(2 eps)^3 / 6 ~ 1e-8
// of the sum. Both shortcuts move with the parameters, so the sum is continuous only to those 1e-8, far below
// what HMC's energy error resolves. tests/test_gate_quadrature.py checks the value against the every-node sum
// and a dense integral, and the gradient with Stan's finite differences.
//
// In the global namespace: the generated model calls it unqualified from its own namespace.
#ifndef SCRIBE_GATE_QUADRATURE_HPP
#define SCRIBE_GATE_QUADRATURE_HPP

#include <stan/math.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <vector>

namespace scribe_native {

struct GateGrid {
  Eigen::Index K;
  double x0, h;                            // x_k = x0 + k h
  Eigen::ArrayXd lw, sig, one_m_sig, b;    // log weight, s, 1 - s, log(1 - s) per node
  std::vector<double> W0, W1, W2, W3;      // prefix sums: W_j[k] = sum_{i < k} w_i s_i^j
};

// L over nodes [from, to): Z log P + m log(1 - s) + log_w, P stored alongside.
inline void gate_terms(const GateGrid& q, Eigen::Index from, Eigen::Index to, double f0, double Z, double N,
                       Eigen::ArrayXd& L, Eigen::ArrayXd& P) {
  const Eigen::Index n = to - from;
  if (n <= 0) return;
  P.segment(from, n) = q.sig.segment(from, n) + q.one_m_sig.segment(from, n) * f0;
  L.segment(from, n) = q.lw.segment(from, n) + Z * P.segment(from, n).log() + N * q.b.segment(from, n);
}

}  // namespace scribe_native

template <typename T_m, typename T_l0, typename T_loc, typename T_node, typename T_w>
stan::promote_args_t<stan::base_type_t<T_l0>, T_loc> zinb_gate_quadrature(
    const int& C, const T_m& gene_nonzero, const T_l0& log0, const T_loc& gate_loc, const T_node& node,
    const T_w& log_w, std::ostream* pstream__) {
  using Eigen::ArrayXd;
  using Eigen::Index;
  constexpr double eps = 0.002, drop = 36.0;
  constexpr Index chunk = 16;  // walk nodes computed together (vectorised)
  const auto& l0_ref = stan::math::to_ref(log0);
  const Eigen::VectorXd l0 = stan::math::value_of(l0_ref);
  const double loc = stan::math::value_of(gate_loc);
  const auto& m = stan::math::to_ref(gene_nonzero);
  const Eigen::VectorXd nd = node, lwv = log_w;
  const Index K = nd.size(), G = l0.size();
  stan::math::check_size_match("zinb_gate_quadrature", "nodes", K, "weights", lwv.size());
  stan::math::check_size_match("zinb_gate_quadrature", "genes", G, "gene_nonzero", m.size());
  stan::math::check_greater_or_equal("zinb_gate_quadrature", "nodes", K, 3);

  scribe_native::GateGrid q;
  q.K = K;
  q.x0 = loc + nd[0];
  q.h = (nd[K - 1] - nd[0]) / (K - 1);
  q.lw = lwv.array();
  q.sig.resize(K);
  q.one_m_sig.resize(K);
  q.b.resize(K);
  for (auto* W : {&q.W0, &q.W1, &q.W2, &q.W3}) W->assign(K + 1, 0.0);
  for (Index k = 0; k < K; ++k) {  // s, 1 - s and log(1 - s) without cancellation on either side of x = 0
    const double x = loc + nd[k], e = std::exp(-std::fabs(x));
    q.sig[k] = x > 0 ? 1 / (1 + e) : e / (1 + e);
    q.one_m_sig[k] = x > 0 ? e / (1 + e) : 1 / (1 + e);
    q.b[k] = -((x > 0 ? x : 0.0) + std::log1p(e));
    const double w = std::exp(q.lw[k]), s = q.sig[k];
    q.W0[k + 1] = q.W0[k] + w;
    q.W1[k + 1] = q.W1[k] + w * s;
    q.W2[k + 1] = q.W2[k] + w * s * s;
    q.W3[k + 1] = q.W3[k] + w * s * s * s;
  }
  const Index middle = (K - 1) / 2;  // the prior's mode: the nodes are symmetric about 0

  Eigen::VectorXd d_l0(G);
  double d_loc = 0, value = 0;
  ArrayXd L(K), P(K);
  for (Index g = 0; g < G; ++g) {
    const double f0 = std::exp(l0[g]), N = m.coeff(g), Z = C - N;
    // the series' nodes: 0 .. kg - 1, where s A <= eps
    const double a = std::expm1(-l0[g]);  // (1 - f0) / f0
    const double A = std::max(Z * a, N);
    Index kg = 0;
    if (A <= eps) {
      kg = K;
    } else if (std::isfinite(A) && eps / A > 1e-300) {
      const double sc = eps / A, xc = std::log(sc) - std::log1p(-sc);
      kg = static_cast<Index>(std::clamp(std::floor((xc - q.x0) / q.h) + 1, 0.0, static_cast<double>(K)));
    }
    // the counts' mode: P = Z / C, i.e. s = (Z / C - f0) / (1 - f0), or the left end when f0 >= Z / C
    const double pi0 = Z / C;
    Index kc = 0;
    if (pi0 > f0) {
      if (N == 0) {
        kc = K - 1;
      } else {
        const double s = (pi0 - f0) / (1 - f0), xs = std::log(s) - std::log1p(-s);
        kc = static_cast<Index>(std::clamp(std::round((xs - q.x0) / q.h), 0.0, static_cast<double>(K - 1)));
      }
    }
    Index lo = std::max(std::min(kc, middle), kg), hi = std::max(std::max(kc, middle), lo);  // explicit: [lo, hi]
    double M = Z * l0[g];  // the series' scale when no node is explicit
    bool series = kg > 0;
    if (lo < K) {
      hi = std::min(hi, K - 1);
      scribe_native::gate_terms(q, lo, hi + 1, f0, Z, N, L, P);
      M = L.segment(lo, hi - lo + 1).maxCoeff();
      // outward from the span of the modes L falls: stop at the first node `drop` below the maximum
      for (Index k = hi + 1; k < K;) {
        const Index to = std::min<Index>(K, k + chunk);
        scribe_native::gate_terms(q, k, to, f0, Z, N, L, P);
        M = std::max(M, L.segment(k, to - k).maxCoeff());
        Index j = k;
        while (j < to && L[j] >= M - drop) ++j;
        hi = std::min(j, to - 1);
        if (j < to) break;
        k = to;
      }
      for (Index k = lo; k > kg;) {
        const Index from = std::max<Index>(kg, k - chunk);
        scribe_native::gate_terms(q, from, k, f0, Z, N, L, P);
        M = std::max(M, L.segment(from, k - from).maxCoeff());
        Index j = k - 1;
        while (j >= from && L[j] >= M - drop) --j;
        lo = std::max(j, from);
        if (j >= from) {
          series = false;  // the nodes further left are smaller still
          break;
        }
        k = from;
      }
    }
    double S = 0, Sl0 = 0, Sloc = 0;
    if (lo < K) {
      const Index n = hi - lo + 1;
      const ArrayXd e = (L.segment(lo, n) - M).exp();
      const double ws = (e * q.sig.segment(lo, n)).sum();
      const double wt = f0 * (e * q.one_m_sig.segment(lo, n) / P.segment(lo, n)).sum();
      S = e.sum();
      // d L / d log0 = Z t, d L / d loc = Z (1 - s - t) - m s, with t = (1 - s) f0 / P
      Sl0 = Z * wt;
      Sloc = Z * (S - ws - wt) - N * ws;
    }
    if (series) {
      const double c1 = Z * a - N, c2 = (c1 * c1 - Z * a * a - N) / 2;
      const double E = std::exp(Z * l0[g] - M);
      const double W0 = q.W0[kg], W1 = q.W1[kg], W2 = q.W2[kg], W3 = q.W3[kg];
      const double T = E * (W0 + c1 * W1 + c2 * W2);
      const double dc1 = -Z * (1 + a), dc2 = c1 * dc1 + Z * a * (1 + a);  // d a / d log0 = -(1 + a)
      S += T;
      Sl0 += Z * T + E * (dc1 * W1 + dc2 * W2);
      Sloc += E * (c1 * (W1 - W2) + 2 * c2 * (W2 - W3));  // d s / d loc = s (1 - s)
    }
    value += M + std::log(S);
    d_l0[g] = Sl0 / S;
    d_loc += Sloc / S;
  }
  auto ops = stan::math::make_partials_propagator(l0_ref, gate_loc);
  if constexpr (!stan::is_constant_all<T_l0>::value) stan::math::partials<0>(ops) = d_l0;
  if constexpr (!stan::is_constant_all<T_loc>::value) stan::math::partials<1>(ops) = d_loc;
  return ops.build(value);
}

#endif  // SCRIBE_GATE_QUADRATURE_HPP
