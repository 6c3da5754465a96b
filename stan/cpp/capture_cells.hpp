// Hand-written value and gradient of the per-cell likelihood terms of the variable-capture models with a
// gene-specific p or zero inflation (stan/templates/likelihoods/capture_cells.stan.j2, the native form).
//
// Why C++: written in Stan, every (cell, gene) term is a handful of autodiff nodes, and the tape, not the
// arithmetic, is what a gradient costs; here each call is one node whose partials are accumulated in plain
// loops. The Stan-language form stays in the template (--stan-gradients) as the reference these functions
// are tested against (tests/test_likelihoods.py).
//
// The terms. For cell c of dataset d with capture nu and gene g with q = mu / r, r (and gate pi):
//   l = log1p(nu q) = -log(1 - p_hat),  zero term f = log P(0) = -r l  (NB)
//                                                   = log(pi + (1 - pi) exp(-r l))  (ZINB)
//   a non-zero count u adds -(r + u) l instead (its (gene, count)-only parts are summed elsewhere, from the
//   pair statistics), and each cell adds L_c log(nu) (L_c its total count).
// capture_*_zero_terms sums f over every (cell, gene) as if every count were zero; capture_*_nonzero_terms
// then swaps, for each non-zero, its zero term for its own (O(non-zeros)), inside reduce_sum, over arrays of
// non-zeros so that Eigen vectorises the logs and exps.
//
// Why the zero terms do not cost cells x genes: for one gene, f depends on the cell only through
// s = log(nu), smoothly (in s its singularities sit at distance pi from the real axis). So the sum over a
// dataset's cells of f(s_c) is the sum of a Chebyshev interpolant of f on [min s, max s]: with K nodes x_k,
//   sum_c f(s_c) ~= sum_k W_k f(x_k),  W_k = (1/K) [tau_0 + 2 sum_{j>=1} tau_j T_j(x_k)],  tau_j = sum_c T_j(t_c),
// where t_c maps s_c to [-1, 1]. Cost: O(cells K) for the moments tau and O(genes K) for the node values,
// instead of O(cells x genes). The gradient is the exact gradient of this sum (the capture's through the
// derivative of the interpolant, by Chebyshev coefficients and Clenshaw's recurrence).
// Accuracy: the last Chebyshev coefficients of each gene's node values bound its interpolation error. A gene
// is accepted when (cells x those coefficients) <= 1e-9, its sum then exact to about that absolute error
// (against a log density of order -1e6 and more). Genes with a sharp bend (zero inflation with a large r and a
// small gate: f ~ max(log pi, -r l)) are tried again with 128 nodes, and the few that still fail are summed
// cell by cell. Datasets with fewer than 64 cells are summed cell by cell.
//
// The functions live in the global namespace: the generated model calls them unqualified from its own
// namespace, so they are found whatever name stanc gives the model.
#ifndef SCRIBE_CAPTURE_CELLS_HPP
#define SCRIBE_CAPTURE_CELLS_HPP

#include <stan/math.hpp>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <vector>

namespace scribe_native {

// One zero term and its partial derivatives with respect to l, r, log gate (A) and log1m gate (B).
struct ZeroTerm {
  double t, l;  // nu q and log1p(nu q)
  double f;
  double df_dl, df_dr, df_dA, df_dB;
};

// Below this, pi + (1 - pi) P_NB(0) is summed on the log scale (both parts underflow on the natural one).
constexpr double NATURAL_SCALE_MIN = 1e-280;

// log(e^A + e^b) and the share e^b of it, on the log scale: the zero term's underflow branch.
inline void log_p0_log_scale(double A, double b, double& f, double& w) {
  const double m = A > b ? A : b;
  f = m + std::log1p(std::exp(-std::fabs(A - b)));
  w = std::exp(b - f);
}

inline ZeroTerm zero_term(bool zi, double nu, double q, double r, double A, double B, double pi) {
  ZeroTerm z;
  z.t = nu * q;
  z.l = std::log1p(z.t);
  if (!zi) {
    z.f = -r * z.l;
    z.df_dl = -r;
    z.df_dr = -z.l;
    z.df_dA = z.df_dB = 0;
    return z;
  }
  // log(pi + (1 - pi) P_NB(0)) on the natural scale (one exp, one log); the log scale only where both parts
  // underflow
  const double nb0 = std::exp(B - r * z.l);
  const double sum = pi + nb0;
  double w;  // the share of P(0) that the NB explains
  if (sum > NATURAL_SCALE_MIN) {
    z.f = std::log(sum);
    w = nb0 / sum;
  } else {
    log_p0_log_scale(A, B - r * z.l, z.f, w);
  }
  z.df_dA = 1.0 - w;
  z.df_dB = w;
  z.df_dl = -w * r;
  z.df_dr = -w * z.l;
  return z;
}

// The gene-level inputs (genes x datasets) and their partials.
struct Genes {
  bool zi;
  const Eigen::MatrixXd& q;
  const Eigen::MatrixXd& r;
  const Eigen::MatrixXd& A;   // log gate (ZINB only)
  const Eigen::MatrixXd& B;   // log1m gate
  const Eigen::MatrixXd& pi;  // gate
  ZeroTerm at(double nu, int g, int d) const {
    return zi ? zero_term(true, nu, q(g, d), r(g, d), A(g, d), B(g, d), pi(g, d))
              : zero_term(false, nu, q(g, d), r(g, d), 0, 0, 0);
  }
};

struct Grad {
  bool on;
  Eigen::VectorXd capture;
  Eigen::MatrixXd q, r, A, B;
  // the partials of a term with derivatives df_dl, df_dr, df_dA, df_dB at (capture index i, gene g, dataset d)
  void add(const Genes& in, int i, int g, int d, double nu, const ZeroTerm& z, double df_dl, double df_dr,
           double df_dA, double df_dB) {
    r(g, d) += df_dr;
    q(g, d) += df_dl * nu / (1.0 + z.t);
    capture[i] += df_dl * in.q(g, d) / (1.0 + z.t);
    if (in.zi) {
      A(g, d) += df_dA;
      B(g, d) += df_dB;
    }
  }
};

template <int K>
struct Chebyshev {
  double x[K];     // nodes of the first kind on [-1, 1]
  double T[K][K];  // T[j][k] = T_j(x_k)
  Chebyshev() {
    for (int k = 0; k < K; ++k) {
      x[k] = std::cos((2 * k + 1) * M_PI / (2 * K));
      for (int j = 0; j < K; ++j) T[j][k] = std::cos(j * (2 * k + 1) * M_PI / (2 * K));
    }
  }
};

constexpr int MIN_CELLS_TO_INTERPOLATE = 64;
constexpr double TAIL_TOLERANCE = 1e-9;

// One level of interpolation with K nodes for the genes in `genes` (dataset d, its cells `cells` with log
// captures s in [lo, hi]). Adds the accepted genes' sums to total (and their partials); leaves in `genes` those
// whose tail exceeds the tolerance.
template <int K>
void interpolate(const Genes& in, Grad& grad, const std::vector<int>& cells, const std::vector<double>& s,
                 double lo, double hi, int d, std::vector<int>& genes, double& total) {
  static const Chebyshev<K> cheb;
  const int n = cells.size();
  const double mid = 0.5 * (hi + lo), half = 0.5 * (hi - lo);
  std::vector<double> t(n);
  double tau[K] = {0};
  for (int c = 0; c < n; ++c) {
    const double tc = std::min(1.0, std::max(-1.0, (s[c] - mid) / half));
    t[c] = tc;
    double Tm = 1.0, Tj = tc;
    tau[0] += 1.0;
    tau[1] += tc;
    for (int j = 2; j < K; ++j) {
      const double Tn = 2.0 * tc * Tj - Tm;
      tau[j] += Tn;
      Tm = Tj;
      Tj = Tn;
    }
  }
  double W[K], nu[K];
  for (int k = 0; k < K; ++k) {
    double w = tau[0];
    for (int j = 1; j < K; ++j) w += 2.0 * tau[j] * cheb.T[j][k];
    W[k] = w / K;
    nu[k] = std::exp(mid + half * cheb.x[k]);
  }
  double F[K] = {0};  // the accepted genes' terms summed at each node: the capture gradient interpolates it
  std::vector<int> failed;
  ZeroTerm z[K];
  for (int g : genes) {
    for (int k = 0; k < K; ++k) z[k] = in.at(nu[k], g, d);
    double tail = 0;
    for (int j = K - 3; j < K; ++j) {
      double cj = 0;
      for (int k = 0; k < K; ++k) cj += z[k].f * cheb.T[j][k];
      tail = std::max(tail, std::fabs(2.0 * cj / K));
    }
    if (!(n * tail <= TAIL_TOLERANCE)) {
      failed.push_back(g);
      continue;
    }
    double sum = 0, d_q = 0, d_r = 0, d_A = 0, d_B = 0;
    for (int k = 0; k < K; ++k) {
      sum += W[k] * z[k].f;
      F[k] += z[k].f;
      d_q += W[k] * z[k].df_dl * nu[k] / (1.0 + z[k].t);
      d_r += W[k] * z[k].df_dr;
      d_A += W[k] * z[k].df_dA;
      d_B += W[k] * z[k].df_dB;
    }
    total += sum;
    if (grad.on) {
      grad.q(g, d) += d_q;
      grad.r(g, d) += d_r;
      if (in.zi) {
        grad.A(g, d) += d_A;
        grad.B(g, d) += d_B;
      }
    }
  }
  genes.swap(failed);
  if (!grad.on) return;
  // d/dt of the interpolant of F at each cell: the Chebyshev coefficients of F, of its derivative, Clenshaw
  double cF[K], dc[K + 1];
  for (int j = 0; j < K; ++j) {
    double cj = 0;
    for (int k = 0; k < K; ++k) cj += F[k] * cheb.T[j][k];
    cF[j] = (j == 0 ? 1.0 : 2.0) * cj / K;
  }
  dc[K] = dc[K - 1] = 0;
  for (int j = K - 1; j >= 1; --j) dc[j - 1] = dc[j + 1] + 2.0 * j * cF[j];
  dc[0] *= 0.5;
  for (int c = 0; c < n; ++c) {
    double b1 = 0, b2 = 0;
    for (int j = K - 2; j >= 1; --j) {
      const double b0 = 2.0 * t[c] * b1 - b2 + dc[j];
      b2 = b1;
      b1 = b0;
    }
    const double dF_dt = t[c] * b1 - b2 + dc[0];
    const int i = cells[c];
    grad.capture[i] += dF_dt / half / std::exp(s[c]);  // dt/ds = 1 / half, ds/dnu = 1 / nu
  }
}

// Every (cell, gene) zero term, summed per dataset (see the header comment).
inline double zero_terms(Grad& grad, const std::vector<int>& cell_dataset, const Eigen::VectorXd& capture,
                         const Genes& in) {
  const int G = in.q.rows(), D = in.q.cols(), C = capture.size();
  std::vector<std::vector<int>> groups(D);
  for (int c = 0; c < C; ++c) groups[cell_dataset[c] - 1].push_back(c);
  double total = 0;
  for (int d = 0; d < D; ++d) {
    const std::vector<int>& cells = groups[d];
    const int n = cells.size();
    std::vector<int> genes(G);
    for (int g = 0; g < G; ++g) genes[g] = g;
    if (n >= MIN_CELLS_TO_INTERPOLATE) {
      std::vector<double> s(n);
      double lo = INFINITY, hi = -INFINITY;
      for (int c = 0; c < n; ++c) {
        s[c] = std::log(capture[cells[c]]);
        lo = std::min(lo, s[c]);
        hi = std::max(hi, s[c]);
      }
      if (!(hi - lo > 1e-8)) hi = lo + 1e-8;  // all captures equal: any short interval interpolates exactly
      interpolate<32>(in, grad, cells, s, lo, hi, d, genes, total);
      if (!genes.empty()) interpolate<128>(in, grad, cells, s, lo, hi, d, genes, total);
    }
    for (int g : genes) {  // cell by cell
      for (int i : cells) {
        const ZeroTerm z = in.at(capture[i], g, d);
        total += z.f;
        if (grad.on) grad.add(in, i, g, d, capture[i], z, z.df_dl, z.df_dr, z.df_dA, z.df_dB);
      }
    }
  }
  return total;
}

// Non-zeros are handled in chunks of whole cells, about this many non-zeros each: their inputs gathered into
// arrays (a dozen of them, 12 KB, stay in the L1 cache), the logs and exps computed over the arrays by Eigen's
// vectorised functions, the partials scattered back. 128 to 2048 timed alike (bench/native_terms.py); 128 also
// puts chunk boundaries inside the slices of tests/test_likelihoods.py's native cases.
constexpr int CHUNK = 128;

// One chunk's arrays, allocated once per call and reused by every chunk: the inputs gathered per non-zero and the
// intermediate results (a dozen arrays allocated per chunk of 128 cost ~240,000 mallocs per gradient at 10,000 x
// 2,000).
struct Chunk {
  Eigen::ArrayXd t, r, u, A, B, pi;            // nu q, r, the count, log gate, log1m gate, gate
  Eigen::ArrayXd xp1, dx, l, nb0, sum, f, w, dl, dr;
  std::vector<int> gene, cell, dset;
  explicit Chunk(Eigen::Index n) { resize(n); }
  void resize(Eigen::Index n) {  // keeps the gathered inputs (a chunk grows while it gathers)
    for (auto* a : {&t, &r, &u, &A, &B, &pi}) a->conservativeResize(n);
    for (auto* a : {&xp1, &dx, &l, &nb0, &sum, &f, &w, &dl, &dr}) a->resize(n);
    for (auto* v : {&gene, &cell, &dset}) v->resize(n);
  }
};

// log1p(t) from the vectorised log (Eigen 3.4 vectorises log and exp but not log1p for doubles): log(1 + t)
// rescaled by t / ((1 + t) - 1), which cancels the rounding of 1 + t (Goldberg's correction; a few ulp).
// (Eigen 3.4's select is not vectorised: the log is evaluated into its own array first.)
template <typename In, typename Out>
inline void log1p_vectorised(const In& t, Out xp1, Out dx, Out l) {
  xp1 = 1.0 + t;
  dx = xp1 - 1.0;
  l = xp1.log();
  l *= t / dx;
  for (Eigen::Index k = 0; k < t.size(); ++k)
    if (dx[k] == 0.0) l[k] = t[k];  // 1 + t rounds to 1: log1p(t) = t to double precision
}

// Cells start..end (1-based; capture is their slice): L_c log(nu_c), and each non-zero's own term in place of
// its zero term, -(r + u) l - f, i.e. -u l (NB: f = -r l) or -(r + u) l - log(pi + (1 - pi) exp(-r l)) (ZINB).
// The same arithmetic as zero_term, over arrays: one autodiff node per call still, and the transcendental
// functions vectorised (2 doubles per SSE2 instruction, 4 with AVX2), which is what a non-zero costs.
inline double nonzero_terms(Grad& grad, int start, int end, const std::vector<int>& cell_start,
                            const std::vector<int>& nz_gene, const std::vector<int>& nz_count,
                            const Eigen::VectorXd& cell_total, const std::vector<int>& cell_dataset,
                            const Eigen::VectorXd& capture, const Genes& in) {
  double total = 0;
  for (int c = start; c <= end; ++c) {
    const double nu = capture[c - start];
    total += cell_total[c - 1] * std::log(nu);
    if (grad.on) grad.capture[c - start] += cell_total[c - 1] / nu;
  }
  const int first = cell_start[start - 1] - 1, last = cell_start[end] - 1;  // the slice's non-zeros
  const int most = std::min(last - first, 2 * CHUNK);  // a chunk ends with its last cell
  Chunk b(most);
  int c = start;
  for (int k0 = first; k0 < last;) {
    // gather whole cells until the chunk holds at least CHUNK non-zeros (or the slice ends)
    int m = 0;
    while (c <= end && m < CHUNK) {
      const int n_c = cell_start[c] - cell_start[c - 1];
      if (m > 0 && m + n_c > most) break;
      if (m + n_c > b.t.size()) b.resize(m + n_c);  // one cell with more non-zeros than the buffers hold
      const int d = cell_dataset[c - 1] - 1;
      const double nu = capture[c - start];
      for (int k = cell_start[c - 1] - 1; k < cell_start[c] - 1; ++k, ++m) {
        const int g = nz_gene[k] - 1;
        b.gene[m] = g;
        b.cell[m] = c - start;
        b.dset[m] = d;
        b.t[m] = nu * in.q(g, d);
        b.r[m] = in.r(g, d);
        b.u[m] = nz_count[k];
        if (in.zi) {
          b.A[m] = in.A(g, d);
          b.B[m] = in.B(g, d);
          b.pi[m] = in.pi(g, d);
        }
      }
      ++c;
    }
    k0 += m;
    const auto t = b.t.head(m), r = b.r.head(m), u = b.u.head(m);
    auto l = b.l.head(m), dl = b.dl.head(m);  // dl: the term's partial with respect to l
    log1p_vectorised(t, b.xp1.head(m), b.dx.head(m), l);
    if (!in.zi) {
      total -= (u * l).sum();
      dl = -u;
    } else {
      auto nb0 = b.nb0.head(m), sum = b.sum.head(m), f = b.f.head(m), w = b.w.head(m);  // w: the NB's share of P(0)
      nb0 = (b.B.head(m) - r * l).exp();
      sum = b.pi.head(m) + nb0;
      f = sum.log();
      w = nb0 / sum;
      for (int k = 0; k < m; ++k)  // both parts underflow on the natural scale: the log scale, as in zero_term
        if (!(sum[k] > NATURAL_SCALE_MIN)) log_p0_log_scale(b.A[k], b.B[k] - r[k] * l[k], f[k], w[k]);
      total += (-(r + u) * l - f).sum();
      dl = w * r - (r + u);
      b.dr.head(m) = -(1.0 - w) * l;
    }
    if (!grad.on) continue;
    dl /= 1.0 + t;  // dl/dt = 1 / (1 + t), t = nu q
    for (int k = 0; k < m; ++k) {
      const int g = b.gene[k], d = b.dset[k], i = b.cell[k];
      grad.q(g, d) += dl[k] * capture[i];
      grad.capture[i] += dl[k] * in.q(g, d);
      if (in.zi) {
        grad.r(g, d) += b.dr[k];
        grad.A(g, d) -= 1.0 - b.w[k];
        grad.B(g, d) -= b.w[k];
      }
    }
  }
  return total;
}

template <typename T>
inline Eigen::MatrixXd values(const T& x) {
  return stan::math::value_of(stan::math::to_ref(x));
}

inline Grad make_grad(bool on, int C, int G, int D, bool zi) {
  Grad g{on, {}, {}, {}, {}, {}};
  if (on) {
    g.capture.setZero(C);
    g.q.setZero(G, D);
    g.r.setZero(G, D);
    if (zi) {
      g.A.setZero(G, D);
      g.B.setZero(G, D);
    }
  }
  return g;
}

// Runs `body(grad, genes)` on the values of the arguments and returns its value with the partials attached.
template <typename T_cap, typename T_q, typename T_r, typename T_A, typename T_B, typename Body>
auto with_partials(const T_cap& capture, const T_q& mu_over_r, const T_r& r, const T_A* log_gate,
                   const T_B* log1m_gate, Body body) {
  constexpr bool zi = !std::is_same<T_A, void>::value;
  const auto& cap_ref = stan::math::to_ref(capture);
  const auto& q_ref = stan::math::to_ref(mu_over_r);
  const auto& r_ref = stan::math::to_ref(r);
  const Eigen::VectorXd cap = stan::math::value_of(cap_ref);
  const Eigen::MatrixXd q = values(q_ref), rv = values(r_ref);
  Eigen::MatrixXd A, B, pi;
  bool on = !stan::is_constant_all<T_cap, T_q, T_r>::value;
  if constexpr (zi) {
    A = values(*log_gate);
    B = values(*log1m_gate);
    pi = A.array().exp().matrix();
    on = on || !stan::is_constant_all<T_A, T_B>::value;
  }
  const Genes in{zi, q, rv, A, B, pi};
  Grad grad = make_grad(on, cap.size(), q.rows(), q.cols(), zi);
  const double value = body(grad, cap, in);
  if constexpr (!zi) {
    auto ops = stan::math::make_partials_propagator(cap_ref, q_ref, r_ref);
    if constexpr (!stan::is_constant_all<T_cap>::value) stan::math::partials<0>(ops) = grad.capture;
    if constexpr (!stan::is_constant_all<T_q>::value) stan::math::partials<1>(ops) = grad.q;
    if constexpr (!stan::is_constant_all<T_r>::value) stan::math::partials<2>(ops) = grad.r;
    return ops.build(value);
  } else {
    const auto& A_ref = stan::math::to_ref(*log_gate);
    const auto& B_ref = stan::math::to_ref(*log1m_gate);
    auto ops = stan::math::make_partials_propagator(cap_ref, q_ref, r_ref, A_ref, B_ref);
    if constexpr (!stan::is_constant_all<T_cap>::value) stan::math::partials<0>(ops) = grad.capture;
    if constexpr (!stan::is_constant_all<T_q>::value) stan::math::partials<1>(ops) = grad.q;
    if constexpr (!stan::is_constant_all<T_r>::value) stan::math::partials<2>(ops) = grad.r;
    if constexpr (!stan::is_constant_all<T_A>::value) stan::math::partials<3>(ops) = grad.A;
    if constexpr (!stan::is_constant_all<T_B>::value) stan::math::partials<4>(ops) = grad.B;
    return ops.build(value);
  }
}

}  // namespace scribe_native

// The signatures stanc expects for the declarations in capture_cells.stan.j2 (every Eigen argument a template
// parameter, pstream__ last).

template <typename T_cap, typename T_q, typename T_r>
stan::promote_args_t<stan::base_type_t<T_cap>, stan::base_type_t<T_q>, stan::base_type_t<T_r>>
capture_nb_zero_terms(const std::vector<int>& cell_dataset, const T_cap& capture, const T_q& mu_over_r, const T_r& r,
                      std::ostream* pstream__) {
  return scribe_native::with_partials(
      capture, mu_over_r, r, static_cast<const void*>(nullptr), static_cast<const void*>(nullptr),
      [&](scribe_native::Grad& grad, const Eigen::VectorXd& cap, const scribe_native::Genes& in) {
        return scribe_native::zero_terms(grad, cell_dataset, cap, in);
      });
}

template <typename T_cap, typename T_q, typename T_r, typename T_A, typename T_B>
stan::promote_args_t<stan::base_type_t<T_cap>, stan::base_type_t<T_q>, stan::base_type_t<T_r>, stan::base_type_t<T_A>,
                     stan::base_type_t<T_B>>
capture_zinb_zero_terms(const std::vector<int>& cell_dataset, const T_cap& capture, const T_q& mu_over_r,
                        const T_r& r, const T_A& log_gate, const T_B& log1m_gate, std::ostream* pstream__) {
  return scribe_native::with_partials(
      capture, mu_over_r, r, &log_gate, &log1m_gate,
      [&](scribe_native::Grad& grad, const Eigen::VectorXd& cap, const scribe_native::Genes& in) {
        return scribe_native::zero_terms(grad, cell_dataset, cap, in);
      });
}

template <typename T_tot, typename T_cap, typename T_q, typename T_r>
stan::promote_args_t<stan::base_type_t<T_tot>, stan::base_type_t<T_cap>, stan::base_type_t<T_q>,
                     stan::base_type_t<T_r>>
capture_nb_nonzero_terms(const int& start, const int& end, const std::vector<int>& cell_start,
                         const std::vector<int>& nz_gene, const std::vector<int>& nz_count, const T_tot& cell_total,
                         const std::vector<int>& cell_dataset, const T_cap& capture, const T_q& mu_over_r,
                         const T_r& r, std::ostream* pstream__) {
  const Eigen::VectorXd total = stan::math::value_of(cell_total);
  return scribe_native::with_partials(
      capture, mu_over_r, r, static_cast<const void*>(nullptr), static_cast<const void*>(nullptr),
      [&](scribe_native::Grad& grad, const Eigen::VectorXd& cap, const scribe_native::Genes& in) {
        return scribe_native::nonzero_terms(grad, start, end, cell_start, nz_gene, nz_count, total, cell_dataset, cap,
                                            in);
      });
}

template <typename T_tot, typename T_cap, typename T_q, typename T_r, typename T_A, typename T_B>
stan::promote_args_t<stan::base_type_t<T_tot>, stan::base_type_t<T_cap>, stan::base_type_t<T_q>,
                     stan::base_type_t<T_r>, stan::base_type_t<T_A>, stan::base_type_t<T_B>>
capture_zinb_nonzero_terms(const int& start, const int& end, const std::vector<int>& cell_start,
                           const std::vector<int>& nz_gene, const std::vector<int>& nz_count, const T_tot& cell_total,
                           const std::vector<int>& cell_dataset, const T_cap& capture, const T_q& mu_over_r,
                           const T_r& r, const T_A& log_gate, const T_B& log1m_gate, std::ostream* pstream__) {
  const Eigen::VectorXd total = stan::math::value_of(cell_total);
  return scribe_native::with_partials(
      capture, mu_over_r, r, &log_gate, &log1m_gate,
      [&](scribe_native::Grad& grad, const Eigen::VectorXd& cap, const scribe_native::Genes& in) {
        return scribe_native::nonzero_terms(grad, start, end, cell_start, nz_gene, nz_count, total, cell_dataset, cap,
                                            in);
      });
}

// reduce_sum's grain size for n cells: about four slices per thread of the pool (which cmdstanpy sizes to
// chains x threads per chain). With a grain size of 1, TBB cuts a chain's cells into ~100 slices whatever the
// thread count, and each slice copies every gene-level argument: at 2,000 cells x 500 genes that copying
// cost more than the non-zeros themselves.
inline int native_grainsize(const int& n, std::ostream* pstream__) {
  const int threads = std::max(1, tbb::this_task_arena::max_concurrency());
  return std::max(1, n / (4 * threads));
}

#endif  // SCRIBE_CAPTURE_CELLS_HPP
