// Hand-written value and gradient of the per-cell likelihood terms of the variable-capture models with a
// gene-specific p or zero inflation (stan/templates/likelihoods/capture_cells.stan.j2, the split form).
//
// Why C++: these terms are O(cells x genes) per gradient, one log1p (and, with a gate, one log_sum_exp) per
// (cell, gene). Written in Stan, every one of them is a handful of autodiff nodes on the tape, and the tape,
// not the arithmetic, is what a gradient costs (bench/gradient_ab.py). Here the whole sum is one node whose
// partial derivatives are accumulated in plain double loops. The Stan-language version stays in the
// template as the reference these functions are tested against (tests/test_likelihoods.py), and it is what
// runs under --no-native-gradients.
//
// The functions live in the global namespace: the generated model calls them unqualified from its own
// namespace, so they are found whatever name stanc gives the model.
//
// For cells start..end (1-based, as in Stan) with dataset d = cell_dataset[c], capture nu = capture[c - start + 1]
// (the caller passes the slice) and per-gene factors q = mu / r, r (genes x datasets):
//   l[c, g] = log1p(nu q[g, d])                  (= -log(1 - p_hat): the NB's P(0) = exp(-r l))
//   NB:   sum_g -(r[g, d] + u[c, g]) l[c, g] + L[c] log(nu)
//   ZINB: zeros     log_sum_exp(log_gate[g, d], log1m_gate[g, d] - r[g, d] l[c, g])
//         non-zeros -(r[g, d] + u[c, g]) l[c, g]                        , + L[c] log(nu)
// where u are the cell's non-zero counts (CSR: cell_start, nz_gene, nz_count) and L[c] = cell_total[c]. The
// parts of the non-zeros that depend on (gene, count) only are summed elsewhere (nonzero_gene_terms).
#ifndef SCRIBE_CAPTURE_CELLS_HPP
#define SCRIBE_CAPTURE_CELLS_HPP

#include <stan/math.hpp>

#include <cmath>
#include <ostream>
#include <vector>

namespace scribe_native {

// value and (when grad) partials; zi selects the zero-inflated form. log_gate / log1m_gate are unused
// (may be empty) without zero inflation.
inline double capture_cells(bool zi, bool grad, int start, int end, const std::vector<int>& cell_start,
                            const std::vector<int>& nz_gene, const std::vector<int>& nz_count,
                            const Eigen::VectorXd& cell_total, const std::vector<int>& cell_dataset,
                            const Eigen::VectorXd& capture, const Eigen::MatrixXd& q, const Eigen::MatrixXd& r,
                            const Eigen::MatrixXd& log_gate, const Eigen::MatrixXd& log1m_gate,
                            Eigen::VectorXd& d_capture, Eigen::MatrixXd& d_q, Eigen::MatrixXd& d_r,
                            Eigen::MatrixXd& d_log_gate, Eigen::MatrixXd& d_log1m_gate) {
  const int G = q.rows();
  const int D = q.cols();
  if (grad) {
    d_capture.setZero(capture.size());
    d_q.setZero(G, D);
    d_r.setZero(G, D);
    if (zi) {
      d_log_gate.setZero(G, D);
      d_log1m_gate.setZero(G, D);
    }
  }
  // with zero inflation, the gate and its complement on the natural scale, once per call
  Eigen::MatrixXd pi, om;
  if (zi) {
    pi = log_gate.array().exp().matrix();
    om = log1m_gate.array().exp().matrix();
  }
  // the cell's counts scattered over genes (0 = a zero), cleared after each cell
  std::vector<double> u(G, 0.0);
  double total = 0;
  for (int c = start; c <= end; ++c) {
    const int i = c - start;  // index into the capture slice
    const int d = cell_dataset[c - 1] - 1;
    const double nu = capture[i];
    const int from = cell_start[c - 1] - 1, to = cell_start[c] - 1;
    for (int k = from; k < to; ++k) u[nz_gene[k] - 1] = nz_count[k];
    double lp = cell_total[c - 1] * std::log(nu);
    double d_nu = grad ? cell_total[c - 1] / nu : 0.0;
    const double* qd = q.data() + static_cast<std::ptrdiff_t>(d) * G;
    const double* rd = r.data() + static_cast<std::ptrdiff_t>(d) * G;
    for (int g = 0; g < G; ++g) {
      const double t = nu * qd[g];
      const double l = std::log1p(t);
      double a;  // d(term)/dl, negated
      if (zi && u[g] == 0) {
        // log(pi + (1 - pi) P0), P0 = exp(-r l): the natural scale is exact unless both terms underflow
        const double w1 = om(g, d) * std::exp(-rd[g] * l);
        const double s = pi(g, d) + w1;
        double f, wB;
        if (s > 1e-280) {
          f = std::log(s);
          wB = w1 / s;
        } else {
          const double A = log_gate(g, d), B = log1m_gate(g, d) - rd[g] * l;
          const double m = A > B ? A : B;
          f = m + std::log1p(std::exp(-std::fabs(A - B)));
          wB = std::exp(B - f);
        }
        lp += f;
        if (!grad) continue;
        d_log_gate(g, d) += 1.0 - wB;
        d_log1m_gate(g, d) += wB;
        d_r(g, d) -= wB * l;
        a = wB * rd[g];
      } else {
        a = rd[g] + u[g];
        lp -= a * l;
        if (!grad) continue;
        d_r(g, d) -= l;
      }
      const double dl = a / (1.0 + t);  // a dl/dt
      d_q(g, d) -= dl * nu;
      d_nu -= dl * qd[g];
    }
    for (int k = from; k < to; ++k) u[nz_gene[k] - 1] = 0;
    total += lp;
    if (grad) d_capture[i] = d_nu;
  }
  return total;
}

template <typename T>
inline Eigen::MatrixXd values(const T& x) {
  return stan::math::value_of(stan::math::to_ref(x));
}

}  // namespace scribe_native

template <typename T_tot, typename T_cap, typename T_q, typename T_r>
stan::promote_args_t<stan::base_type_t<T_tot>, stan::base_type_t<T_cap>, stan::base_type_t<T_q>,
                     stan::base_type_t<T_r>>
capture_nb_cells_sum(const int& start, const int& end, const std::vector<int>& cell_start,
                     const std::vector<int>& nz_gene, const std::vector<int>& nz_count, const T_tot& cell_total,
                     const std::vector<int>& cell_dataset, const T_cap& capture, const T_q& mu_over_r,
                     const T_r& r, std::ostream* pstream__) {
  const auto& cap_ref = stan::math::to_ref(capture);
  const auto& q_ref = stan::math::to_ref(mu_over_r);
  const auto& r_ref = stan::math::to_ref(r);
  constexpr bool grad = !stan::is_constant_all<T_cap, T_q, T_r>::value;
  Eigen::VectorXd d_cap;
  Eigen::MatrixXd d_q, d_r, unused, unused_d;
  const double value = scribe_native::capture_cells(
      false, grad, start, end, cell_start, nz_gene, nz_count, stan::math::value_of(cell_total), cell_dataset,
      stan::math::value_of(cap_ref), scribe_native::values(q_ref), scribe_native::values(r_ref), unused, unused,
      d_cap, d_q, d_r, unused_d, unused_d);
  auto ops = stan::math::make_partials_propagator(cap_ref, q_ref, r_ref);
  if constexpr (!stan::is_constant_all<T_cap>::value) stan::math::partials<0>(ops) = d_cap;
  if constexpr (!stan::is_constant_all<T_q>::value) stan::math::partials<1>(ops) = d_q;
  if constexpr (!stan::is_constant_all<T_r>::value) stan::math::partials<2>(ops) = d_r;
  return ops.build(value);
}

template <typename T_tot, typename T_cap, typename T_q, typename T_r, typename T_lg, typename T_l1g>
stan::promote_args_t<stan::base_type_t<T_tot>, stan::base_type_t<T_cap>, stan::base_type_t<T_q>,
                     stan::base_type_t<T_r>, stan::base_type_t<T_lg>, stan::base_type_t<T_l1g>>
capture_zinb_cells_sum(const int& start, const int& end, const std::vector<int>& cell_start,
                       const std::vector<int>& nz_gene, const std::vector<int>& nz_count, const T_tot& cell_total,
                       const std::vector<int>& cell_dataset, const T_cap& capture, const T_q& mu_over_r,
                       const T_r& r, const T_lg& log_gate, const T_l1g& log1m_gate, std::ostream* pstream__) {
  const auto& cap_ref = stan::math::to_ref(capture);
  const auto& q_ref = stan::math::to_ref(mu_over_r);
  const auto& r_ref = stan::math::to_ref(r);
  const auto& lg_ref = stan::math::to_ref(log_gate);
  const auto& l1g_ref = stan::math::to_ref(log1m_gate);
  constexpr bool grad = !stan::is_constant_all<T_cap, T_q, T_r, T_lg, T_l1g>::value;
  Eigen::VectorXd d_cap;
  Eigen::MatrixXd d_q, d_r, d_lg, d_l1g;
  const double value = scribe_native::capture_cells(
      true, grad, start, end, cell_start, nz_gene, nz_count, stan::math::value_of(cell_total), cell_dataset,
      stan::math::value_of(cap_ref), scribe_native::values(q_ref), scribe_native::values(r_ref),
      scribe_native::values(lg_ref), scribe_native::values(l1g_ref), d_cap, d_q, d_r, d_lg, d_l1g);
  auto ops = stan::math::make_partials_propagator(cap_ref, q_ref, r_ref, lg_ref, l1g_ref);
  if constexpr (!stan::is_constant_all<T_cap>::value) stan::math::partials<0>(ops) = d_cap;
  if constexpr (!stan::is_constant_all<T_q>::value) stan::math::partials<1>(ops) = d_q;
  if constexpr (!stan::is_constant_all<T_r>::value) stan::math::partials<2>(ops) = d_r;
  if constexpr (!stan::is_constant_all<T_lg>::value) stan::math::partials<3>(ops) = d_lg;
  if constexpr (!stan::is_constant_all<T_l1g>::value) stan::math::partials<4>(ops) = d_l1g;
  return ops.build(value);
}

#endif  // SCRIBE_CAPTURE_CELLS_HPP
