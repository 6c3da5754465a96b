// Hand-written value and gradient of the rising-factorial table sum of the pair and capture forms
// (stan/templates/likelihoods/_common.stan.j2, rise_sum): sum over terms t of w_t log(x[g_t] + k_t), the
// table part of sum over non-zeros of lgamma(x_g + u) - lgamma(x_g).
//
// Why C++: written in Stan, each term puts the gather x[g_t], the sum and the log on the autodiff tape (the
// full PBMC matrix's NBDM likelihood made ~87,000 nodes per call from its 57,557 terms: docs/performance.md),
// and the tape, not the logs, is most of what that costs. Here a call is one node: the terms y_t = x[g_t] + k_t
// are gathered once, and both the value, sum of w_t log y_t, and the partials d/dx_g, the sum over g's terms of
// w_t / y_t, come from that array. The Stan-language form stays in the template (--stan-gradients) as the
// reference this function is tested against (tests/test_likelihoods.py).
//
// In the global namespace: the generated model calls it unqualified from its own namespace.
#ifndef SCRIBE_RISE_SUM_HPP
#define SCRIBE_RISE_SUM_HPP

#include <stan/math.hpp>

#include <cmath>
#include <ostream>
#include <vector>

// rise_k and rise_weight are data (declared `data vector` in Stan), so only x can carry a gradient.
template <typename T_x, typename T_k, typename T_w>
stan::promote_args_t<stan::base_type_t<T_x>> rise_table_sum(const T_x& x, const std::vector<int>& rise_gene,
                                                            const T_k& rise_k, const T_w& rise_weight,
                                                            std::ostream* pstream__) {
  const auto& x_ref = stan::math::to_ref(x);
  const Eigen::VectorXd xv = stan::math::value_of(x_ref);
  const auto& k = stan::math::to_ref(rise_k);
  const auto& w = stan::math::to_ref(rise_weight);
  constexpr bool need_gradient = !stan::is_constant_all<T_x>::value;
  const Eigen::Index T = static_cast<Eigen::Index>(rise_gene.size());
  // y_t = x[g_t] + k_t gathered into one array, so that its logs (and w / y) go through Eigen's vectorised
  // (SIMD) log and division rather than one std::log at a time. Buffers reused across calls (per thread).
  thread_local Eigen::ArrayXd y;
  y.resize(T);
  for (Eigen::Index t = 0; t < T; ++t) y.coeffRef(t) = xv.coeff(rise_gene[t] - 1) + k.coeff(t);
  const double value = (w.array() * y.log()).sum();
  Eigen::VectorXd grad;
  if (need_gradient) {
    grad.setZero(xv.size());
    y = w.array() / y;  // d value / d y_t, scattered onto each term's gene
    for (Eigen::Index t = 0; t < T; ++t) grad.coeffRef(rise_gene[t] - 1) += y.coeff(t);
  }
  auto ops = stan::math::make_partials_propagator(x_ref);
  if constexpr (need_gradient) stan::math::partials<0>(ops) = grad;
  return ops.build(value);
}

#endif  // SCRIBE_RISE_SUM_HPP
