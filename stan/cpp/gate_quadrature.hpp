// Hand-written value and gradient of the zero-inflation gates summed out of the pair-statistics ZINB likelihood
// (stan/templates/likelihoods/pairs.stan.j2, plan.integrates_gate), and the gates' draws from their conditionals
// (priors/neg.stan.j2's generated quantities). Without cell-level parameters gene g's gate pi enters only through
// its Z_g = C - m_g zeros and m_g non-zeros, so its integral against the NEG prior of x = logit(pi) - gate_loc is
// one dimension per gene, taken on a fixed grid of x (nodes equally spaced, log_w the NEG mass of each node's
// cell: data, scribe_cli/gate_grid.py):
//   sum_g log sum_k exp(L_gk),  L_gk = log_w_k + Z_g log P_gk + m_g log(1 - s_k),  P_gk = s_k + (1 - s_k) f0_g,
// s_k = inv_logit(gate_loc + node_k), f0_g = exp(log0_g) the count distribution's zero probability.
//
// Why C++: in the Stan language that is a genes x nodes matrix of autodiff nodes (~450,000 on 1,500 genes);
// here one node, the partials d/dlog0 and d/dgate_loc from the same sums.
//
// Why not every node of every gene (4.7 ms a gradient on 1,500 genes x 301 nodes against 2.0): most nodes of a
// gene add nothing or add what a formula gives. (1) L's two parts are unimodal in k: the prior's mode is the
// middle node; the counts' is where P = Z / C (P is monotone in s). Outside the span of the two modes L falls
// monotonically, so from that span outward a walk stops at the first node 36 nats below the running maximum
// (what it leaves is < K e^-36 of the sum). (2) Left of the node where s A <= eps, A = max(Z a, m),
// a = (1 - f0) / f0, the counts' part is its s = 0 limit times a power series in s:
//   exp(L_k - log_w_k - Z log0) = (1 + a s)^Z (1 - s)^m = 1 + c1 s + c2 s^2 + c3 s^3 + O((2 s A)^4 / 24),
// so those nodes sum to exp(Z log0) (W0 + c1 W1 + c2 W2 + c3 W3) with W_j = sum_k w_k s_k^j, prefix sums over
// the nodes computed once per call (they depend on gate_loc only). eps = 0.01: the series' error is ~1e-8 of the
// sum. Both shortcuts move with the parameters, so the sum is continuous only to those 1e-8, far below what
// HMC's energy error resolves. (3) A gene whose conditional is broad is summed on the coarse grid (every 4th node,
// its own weights) with the prior kink's next error term added back (kink_ok, peak_ok below: 75-85% of PBMC's genes;
// a 1.4x faster gradient). tests/test_gate_quadrature.py checks the value against numpy's every-node sum on the
// grid the rule chooses and a dense integral, the gradient with Stan's finite differences and the draws (fine grid
// only: they run once per draw) against their conditionals.
//
// In the global namespace: the generated model calls these unqualified from its own namespace.
#ifndef SCRIBE_GATE_QUADRATURE_HPP
#define SCRIBE_GATE_QUADRATURE_HPP

#include <stan/math.hpp>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <vector>

namespace scribe_native {

// The grid at one gate_loc: per node s, 1 - s, log(1 - s), and the prefix sums W_j[k] = sum_{i < k} w_i s_i^j.
struct GateGrid {
  Eigen::Index K, middle;
  double x0, h;  // x_k = x0 + k h
  Eigen::ArrayXd lw, sig, one_m_sig, b;
  std::vector<double> W[5];

  GateGrid(double loc, const Eigen::VectorXd& node, const Eigen::VectorXd& log_w)
      : K(node.size()), middle((node.size() - 1) / 2), x0(loc + node[0]),
        h((node[node.size() - 1] - node[0]) / (node.size() - 1)), lw(log_w.array()), sig(K), one_m_sig(K), b(K) {
    for (auto& Wj : W) Wj.assign(K + 1, 0.0);
    for (Eigen::Index k = 0; k < K; ++k) {  // without cancellation on either side of x = 0
      const double x = loc + node[k], e = std::exp(-std::fabs(x));
      sig[k] = x > 0 ? 1 / (1 + e) : e / (1 + e);
      one_m_sig[k] = x > 0 ? e / (1 + e) : 1 / (1 + e);
      b[k] = -((x > 0 ? x : 0.0) + std::log1p(e));
      double term = std::exp(lw[k]);
      for (auto& Wj : W) {
        Wj[k + 1] = Wj[k] + term;
        term *= sig[k];
      }
    }
  }
};

// One gene's sum: the explicit nodes [lo, hi] (L and P filled there; lo = K: none), the series' nodes [0, kg)
// with its coefficients when `series`, and the scale M that the exponentials are taken against.
struct GeneSum {
  Eigen::Index lo, hi, kg;
  bool series;
  double M, f0, Z, N, a, q1, q2, q3, c1, c2, c3;

  double series_sum(const GateGrid& q, Eigen::Index upto) const {
    return q.W[0][upto] + c1 * q.W[1][upto] + c2 * q.W[2][upto] + c3 * q.W[3][upto];
  }
};

inline void gate_terms(const GateGrid& q, Eigen::Index from, Eigen::Index to, const GeneSum& g, Eigen::ArrayXd& L,
                       Eigen::ArrayXd& P) {
  const Eigen::Index n = to - from;
  if (n <= 0) return;
  P.segment(from, n) = q.sig.segment(from, n) + q.one_m_sig.segment(from, n) * g.f0;
  L.segment(from, n) = q.lw.segment(from, n) + g.Z * P.segment(from, n).log() + g.N * q.b.segment(from, n);
}

inline GeneSum gene_sum(const GateGrid& q, double log0, double C, double N, Eigen::ArrayXd& L, Eigen::ArrayXd& P) {
  using Eigen::Index;
  constexpr double eps = 0.01, drop = 36.0;
  constexpr Index chunk = 16;  // walk nodes computed together (vectorised)
  const Index K = q.K;
  GeneSum g;
  g.f0 = std::exp(log0);
  g.N = N;
  g.Z = C - N;
  g.a = std::expm1(-log0);  // (1 - f0) / f0
  const double A = std::max(g.Z * g.a, N);
  g.kg = 0;  // the series' nodes: 0 .. kg - 1, where s A <= eps
  if (A <= eps) {
    g.kg = K;
  } else if (std::isfinite(A) && eps / A > 1e-300) {
    const double sc = eps / A, xc = std::log(sc) - std::log1p(-sc);
    g.kg = static_cast<Index>(std::clamp(std::floor((xc - q.x0) / q.h) + 1, 0.0, static_cast<double>(K)));
  }
  g.series = g.kg > 0;
  if (g.series) {  // log((1 + a s)^Z (1 - s)^m) = q1 s + q2 s^2 + q3 s^3 + ..., exp'd
    g.q1 = g.Z * g.a - N;
    g.q2 = -(g.Z * g.a * g.a + N) / 2;
    g.q3 = (g.Z * g.a * g.a * g.a - N) / 3;
    g.c1 = g.q1;
    g.c2 = g.q2 + g.q1 * g.q1 / 2;
    g.c3 = g.q3 + g.q1 * g.q2 + g.q1 * g.q1 * g.q1 / 6;
  }
  // the counts' mode: P = Z / C, i.e. s = (Z / C - f0) / (1 - f0), or the left end when f0 >= Z / C
  const double pi0 = g.Z / C;
  Index kc = 0;
  if (pi0 > g.f0) {
    if (N == 0) {
      kc = K - 1;
    } else {
      const double s = (pi0 - g.f0) / (1 - g.f0), xs = std::log(s) - std::log1p(-s);
      kc = static_cast<Index>(std::clamp(std::round((xs - q.x0) / q.h), 0.0, static_cast<double>(K - 1)));
    }
  }
  g.lo = std::max(std::min(kc, q.middle), g.kg);
  g.hi = std::min(std::max(std::max(kc, q.middle), g.lo), K - 1);
  g.M = g.Z * log0;  // the series' own scale when no node is explicit
  if (g.lo >= K) return g;
  gate_terms(q, g.lo, g.hi + 1, g, L, P);
  g.M = L.segment(g.lo, g.hi - g.lo + 1).maxCoeff();
  // outward from the span of the modes L falls: stop at the first node `drop` below the maximum
  for (Index k = g.hi + 1; k < K;) {
    const Index to = std::min<Index>(K, k + chunk);
    gate_terms(q, k, to, g, L, P);
    g.M = std::max(g.M, L.segment(k, to - k).maxCoeff());
    Index j = k;
    while (j < to && L[j] >= g.M - drop) ++j;
    g.hi = std::min(j, to - 1);
    if (j < to) break;
    k = to;
  }
  for (Index k = g.lo; k > g.kg;) {
    const Index from = std::max<Index>(g.kg, k - chunk);
    gate_terms(q, from, k, g, L, P);
    g.M = std::max(g.M, L.segment(from, k - from).maxCoeff());
    Index j = k - 1;
    while (j >= from && L[j] >= g.M - drop) --j;
    g.lo = std::max(j, from);
    if (j >= from) {
      g.series = false;  // the nodes further left are smaller still
      break;
    }
    k = from;
  }
  return g;
}

// l'' of the counts' log likelihood l(x) = Z log P + N log(1 - s) at a node, with u = s (1 - s) and g = (1 - f0) / P
inline double counts_curvature(double s, double u, double g, double Z, double N) {
  return Z * (u * (1 - 2 * s) * g - u * u * g * g) - N * u;
}

// The counts' log likelihood l(x) = Z log P + N log(1 - s) of one gene at the prior's kink (d = 0, x = gate_loc),
// with P = s + (1 - s) f0, its derivatives in x and the partials in log0 that the kink's correction needs.
// With u = s (1 - s) and g = (1 - f0) / P: l' = Z u g - N s, l'' = Z (u (1 - 2 s) g - u^2 g^2) - N u, and
// d g / d x = -u g^2, d g / d f0 = -1 / P^2.
struct KinkTerms {
  double l0, l1, l2, l3, dl0, dl1, dl2;  // l and its first three x-derivatives at d = 0; d/dlog0 of the first three
};

inline KinkTerms kink_terms(const GateGrid& q, double f0, double Z, double N) {
  const double s = q.sig[q.middle], u = s * q.one_m_sig[q.middle], P = s + q.one_m_sig[q.middle] * f0;
  const double g = (1 - f0) / P, v = 1 - 2 * s;
  KinkTerms k;
  k.l0 = Z * std::log(P) + N * std::log1p(-s);
  k.l1 = Z * u * g - N * s;
  k.l2 = counts_curvature(s, u, g, Z, N);
  k.l3 = Z * ((u * v * v - 2 * u * u) * g - 3 * u * u * v * g * g + 2 * u * u * u * g * g * g) - N * u * v;
  const double dg = -f0 / (P * P);  // d g / d log0
  k.dl0 = Z * q.one_m_sig[q.middle] * f0 / P;
  k.dl1 = Z * u * dg;
  k.dl2 = Z * (u * v - 2 * u * u * g) * dg;
  return k;
}

// Whether a gene's sum on the coarse grid is as good as on the fine one (scribe_cli/gate_grid.py). The trapezoid's
// error at spacing h: (1) on a peak of sd sigma, ~2 exp(-2 pi^2 sigma^2 / h^2), 5e-9 of the integral at h^2 |l''| = 1
// with l'' at the largest node (peak_ok); (2) at the prior's kink, a series in h^2 whose h^2 term the weights'
// normalisation removes and whose h^4 term, -h^4 / (120 tau) lik''(0) with lik'' / lik = l'' + l'^2, the sum adds
// back (the kink's Euler-Maclaurin terms: the NEG density's slope jumps by -2 / tau there). What is left is h^6 and
// beyond: kink_ok asks h^2 (|l''| + l'^2) < 0.5 at d = 0. On PBMC's top 1,500 genes at posterior draws (shared p,
// gate_loc -7.1; p per gene, gate_loc -4.1) and simulated genes with gate centres from -3 to 3, every coarse sum is
// then within 3e-4 nat of a 0.005 grid, as the fine grid is.
inline bool kink_ok(const GateGrid& q, const KinkTerms& k) {
  return q.h * q.h * (std::fabs(k.l2) + k.l1 * k.l1) < 0.5;
}

inline bool peak_ok(const GateGrid& q, const GeneSum& g, const Eigen::ArrayXd& L, const Eigen::ArrayXd& P) {
  if (g.lo >= q.K) return true;  // no explicit node: the power series alone, smooth in s
  Eigen::Index k;
  L.segment(g.lo, g.hi - g.lo + 1).maxCoeff(&k);
  k += g.lo;
  const double s = q.sig[k];
  return std::fabs(counts_curvature(s, s * q.one_m_sig[k], (1 - g.f0) / P[k], g.Z, g.N)) * q.h * q.h < 1.0;
}

}  // namespace scribe_native

template <typename T_m, typename T_l0, typename T_loc, typename T_node, typename T_w, typename T_cn, typename T_cw>
stan::promote_args_t<stan::base_type_t<T_l0>, T_loc> zinb_gate_quadrature(
    const int& C, const T_m& gene_nonzero, const T_l0& log0, const T_loc& gate_loc, const T_node& node,
    const T_w& log_w, const T_cn& coarse_node, const T_cw& coarse_log_w, const double& coarse_kink,
    std::ostream* pstream__) {
  using Eigen::ArrayXd;
  using Eigen::Index;
  const auto& l0_ref = stan::math::to_ref(log0);
  const Eigen::VectorXd l0 = stan::math::value_of(l0_ref);
  const auto& m = stan::math::to_ref(gene_nonzero);
  const Eigen::VectorXd nd = node, lw = log_w, cnd = coarse_node, clw = coarse_log_w;
  const Index K = nd.size(), G = l0.size();
  stan::math::check_size_match("zinb_gate_quadrature", "nodes", K, "weights", lw.size());
  stan::math::check_size_match("zinb_gate_quadrature", "coarse nodes", cnd.size(), "coarse weights", clw.size());
  stan::math::check_size_match("zinb_gate_quadrature", "genes", G, "gene_nonzero", m.size());
  stan::math::check_greater_or_equal("zinb_gate_quadrature", "nodes", K, 3);
  stan::math::check_greater_or_equal("zinb_gate_quadrature", "coarse nodes", cnd.size(), 3);
  const double loc = stan::math::value_of(gate_loc);
  const scribe_native::GateGrid fine(loc, nd, lw), coarse(loc, cnd, clw);
  const bool two_levels = coarse.K < K;

  Eigen::VectorXd d_l0(G);
  double d_loc = 0, value = 0;
  ArrayXd L(K), P(K), E(K);  // per-gene buffers, allocated once per call
  for (Index g = 0; g < G; ++g) {
    // the coarse grid where both its errors are small (kink_ok, peak_ok), else the fine one
    const double N = m.coeff(g);
    scribe_native::KinkTerms kink{};
    bool on_coarse = false;
    scribe_native::GeneSum s;
    if (two_levels) {
      kink = scribe_native::kink_terms(coarse, std::exp(l0[g]), C - N, N);
      if (scribe_native::kink_ok(coarse, kink)) {
        s = scribe_native::gene_sum(coarse, l0[g], C, N, L, P);
        on_coarse = scribe_native::peak_ok(coarse, s, L, P);
      }
    }
    if (!on_coarse) s = scribe_native::gene_sum(fine, l0[g], C, N, L, P);
    const scribe_native::GateGrid& q = on_coarse ? coarse : fine;
    double S = 0, Sl0 = 0, Sloc = 0;
    if (s.lo < q.K) {
      const Index n = s.hi - s.lo + 1;
      auto e = E.segment(s.lo, n);
      e = (L.segment(s.lo, n) - s.M).exp();
      const double ws = (e * q.sig.segment(s.lo, n)).sum();
      const double wt = s.f0 * (e * q.one_m_sig.segment(s.lo, n) / P.segment(s.lo, n)).sum();
      S = e.sum();
      // d L / d log0 = Z t, d L / d loc = Z (1 - s - t) - m s, with t = (1 - s) f0 / P
      Sl0 = s.Z * wt;
      Sloc = s.Z * (S - ws - wt) - s.N * ws;
    }
    if (s.series) {
      const auto& W = q.W;
      const Index k = s.kg;
      const double E = std::exp(s.Z * l0[g] - s.M), T = E * s.series_sum(q, k);
      // d a / d log0 = -(1 + a); d s / d loc = s (1 - s), so d W_j / d loc = j (W_j - W_{j+1})
      const double da = -(1 + s.a), dq1 = s.Z * da, dq2 = -s.Z * s.a * da, dq3 = s.Z * s.a * s.a * da;
      const double dc2 = dq2 + s.q1 * dq1, dc3 = dq3 + dq1 * s.q2 + s.q1 * dq2 + s.q1 * s.q1 * dq1 / 2;
      S += T;
      Sl0 += s.Z * T + E * (dq1 * W[1][k] + dc2 * W[2][k] + dc3 * W[3][k]);
      Sloc += E * (s.c1 * (W[1][k] - W[2][k]) + 2 * s.c2 * (W[2][k] - W[3][k]) + 3 * s.c3 * (W[3][k] - W[4][k]));
    }
    if (on_coarse) {  // the kink's h^4 term, coarse_kink x lik''(0) with lik'' = lik (l'' + l'^2), and its partials
      const double Q = kink.l2 + kink.l1 * kink.l1, T = coarse_kink * std::exp(kink.l0 - s.M);
      S += T * Q;
      Sl0 += T * (kink.dl2 + 2 * kink.l1 * kink.dl1 + Q * kink.dl0);
      Sloc += T * (kink.l3 + 2 * kink.l1 * kink.l2 + Q * kink.l1);
    }
    value += s.M + std::log(S);
    d_l0[g] = Sl0 / S;
    d_loc += Sloc / S;
  }
  auto ops = stan::math::make_partials_propagator(l0_ref, gate_loc);
  if constexpr (!stan::is_constant_all<T_l0>::value) stan::math::partials<0>(ops) = d_l0;
  if constexpr (!stan::is_constant_all<T_loc>::value) stan::math::partials<1>(ops) = d_loc;
  return ops.build(value);
}

// Each gene's logit(gate) - gate_loc drawn from the grid's conditional given the draw (prior_only: its prior
// alone): a node by its weight (the same explicit nodes and series as the sum; in the series' nodes by inverse
// CDF over its prefix sums), then uniform within the node's cell. Returns logit(gate).
template <typename T_m, typename T_l0, typename T_node, typename T_w, class RNG>
Eigen::VectorXd zinb_gate_draw_rng(const int& C, const T_m& gene_nonzero, const T_l0& log0, const double& gate_loc,
                                   const T_node& node, const T_w& log_w, const int& prior_only, RNG& base_rng__,
                                   std::ostream* pstream__) {
  using Eigen::ArrayXd;
  using Eigen::Index;
  const Eigen::VectorXd l0 = log0, nd = node, lw = log_w;
  const auto& m = stan::math::to_ref(gene_nonzero);
  const Index K = nd.size(), G = l0.size();
  const scribe_native::GateGrid q(gate_loc, nd, lw);
  boost::variate_generator<RNG&, boost::uniform_01<>> unif(base_rng__, boost::uniform_01<>());
  // inverse CDF over the series' nodes [0, upto), whose prefix sums are F(j) = s.series_sum(q, j) (increasing)
  auto series_node = [&](const scribe_native::GeneSum& s, Index upto, double u) {
    const double target = u * s.series_sum(q, upto);
    Index lo = 0, hi = upto - 1;  // the first j with F(j + 1) > target
    while (lo < hi) {
      const Index mid = (lo + hi) / 2;
      if (s.series_sum(q, mid + 1) > target) hi = mid; else lo = mid + 1;
    }
    return lo;
  };
  Eigen::VectorXd out(G);
  ArrayXd L(K), P(K), E(K);
  for (Index g = 0; g < G; ++g) {
    Index k;
    if (prior_only) {
      scribe_native::GeneSum flat{};  // c = 0: the weights alone
      k = series_node(flat, K, unif());
    } else {
      const auto s = scribe_native::gene_sum(q, l0[g], C, m.coeff(g), L, P);
      double S = 0, T = 0;
      const Index n = s.lo < K ? s.hi - s.lo + 1 : 0;
      auto e = E.segment(s.lo < K ? s.lo : 0, n);
      if (n > 0) {
        e = (L.segment(s.lo, n) - s.M).exp();
        S = e.sum();
      }
      if (s.series) T = std::exp(s.Z * l0[g] - s.M) * s.series_sum(q, s.kg);
      double u = unif() * (S + T);
      if (u < T) {
        k = series_node(s, s.kg, u / T);
      } else {
        u -= T;
        k = s.hi;
        for (Index j = 0; j < e.size(); ++j) {
          u -= e[j];
          if (u < 0) {
            k = s.lo + j;
            break;
          }
        }
      }
    }
    out[g] = q.x0 + (k + unif() - 0.5) * q.h;
  }
  return out;
}

#endif  // SCRIBE_GATE_QUADRATURE_HPP
