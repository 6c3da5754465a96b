// method=optimize (L-BFGS, BFGS, Newton; with or without the Jacobian) and
// method=laplace (draws from the Laplace approximation at a given mode).
#include "driver.hpp"

#include <stan/callbacks/structured_writer.hpp>
#include <stan/io/ends_with.hpp>
#include <stan/services/error_codes.hpp>
#include <stan/model/grad_hess_log_prob.hpp>
#include <stan/model/log_prob_grad.hpp>

// Stan 2.39's stan::model::grad_hess_log_prob scales its finite differences by
// epsilon/2 instead of 1/(2 epsilon), so the Hessian used by Newton's method is
// ~1e6 times too small and every Newton step diverges to NaN. These explicit
// specializations for the model type the driver uses (model_base) compute the
// same 4th-order central differences of the gradient with the right scale; they
// must be declared before newton.hpp instantiates newton_step.
namespace stan {
namespace model {
namespace scribe_internal {
template <bool jacobian>
double grad_hess(const model_base& model, std::vector<double>& params_r, std::vector<int>& params_i,
                 std::vector<double>& gradient, std::vector<double>& hessian, std::ostream* msgs) {
  const double epsilon = 1e-3;
  const double perturbations[4] = {-2 * epsilon, -epsilon, epsilon, 2 * epsilon};
  const double coefficients[4] = {1.0 / 12.0, -2.0 / 3.0, 2.0 / 3.0, -1.0 / 12.0};
  const size_t n = params_r.size();
  double result = log_prob_grad<true, jacobian>(model, params_r, params_i, gradient, msgs);
  hessian.assign(n * n, 0);
  std::vector<double> temp_grad(n);
  std::vector<double> perturbed(params_r.begin(), params_r.end());
  for (size_t d = 0; d < n; ++d) {
    for (int i = 0; i < 4; ++i) {
      perturbed[d] = params_r[d] + perturbations[i];
      log_prob_grad<true, jacobian>(model, perturbed, params_i, temp_grad);
      // d(grad[dd])/d(theta[d]), symmetrised: half to H[d,dd] and half to H[dd,d]
      const double w = coefficients[i] / (2 * epsilon);
      for (size_t dd = 0; dd < n; ++dd) {
        hessian[dd + d * n] += w * temp_grad[dd];
        hessian[d + dd * n] += w * temp_grad[dd];
      }
    }
    perturbed[d] = params_r[d];
  }
  return result;
}
}  // namespace scribe_internal

template <>
double grad_hess_log_prob<true, true, model_base>(const model_base& model, std::vector<double>& params_r,
                                                  std::vector<int>& params_i, std::vector<double>& gradient,
                                                  std::vector<double>& hessian, std::ostream* msgs) {
  return scribe_internal::grad_hess<true>(model, params_r, params_i, gradient, hessian, msgs);
}
template <>
double grad_hess_log_prob<true, false, model_base>(const model_base& model, std::vector<double>& params_r,
                                                   std::vector<int>& params_i, std::vector<double>& gradient,
                                                   std::vector<double>& hessian, std::ostream* msgs) {
  return scribe_internal::grad_hess<false>(model, params_r, params_i, gradient, hessian, msgs);
}
}  // namespace model
}  // namespace stan

#include <stan/services/optimize/bfgs.hpp>
#include <stan/services/optimize/laplace_sample.hpp>
#include <stan/services/optimize/lbfgs.hpp>
#include <stan/services/optimize/newton.hpp>

namespace scribe_driver {

using model_t = stan::model::model_base;

int run_optimize(Context& c) {
  namespace svc = stan::services::optimize;
  model_t& model = *c.model;
  const std::string P = "method.optimize.";
  const std::string algo = c.get_list(P + "algorithm");
  const bool jacobian = c.get_b(P + "jacobian");
  const int iter = c.get_i(P + "iter");
  const bool save_iterations = c.get_b(P + "save_iterations");

  csv_writer writer = config_csv_writer(c, c.output_file);
  var_ctx_ptr init = init_context(c, c.id, 1);
  stan::callbacks::writer init_writer;
  auto& L = c.logger;
  auto& I = c.interrupt;
  const double r = c.init_radius;

  if (algo == "newton") {
    if (jacobian)
      return svc::newton<model_t, true>(model, *init, c.seed, c.id, r, iter, save_iterations, I, L,
                                        init_writer, writer);
    return svc::newton<model_t, false>(model, *init, c.seed, c.id, r, iter, save_iterations, I, L,
                                       init_writer, writer);
  }
  const std::string Q = P + "algorithm." + algo + ".";
  const double init_alpha = c.get_d(Q + "init_alpha"), tol_obj = c.get_d(Q + "tol_obj"),
               tol_rel_obj = c.get_d(Q + "tol_rel_obj"), tol_grad = c.get_d(Q + "tol_grad"),
               tol_rel_grad = c.get_d(Q + "tol_rel_grad"), tol_param = c.get_d(Q + "tol_param");
  if (algo == "bfgs") {
    if (jacobian)
      return svc::bfgs<model_t, true>(model, *init, c.seed, c.id, r, init_alpha, tol_obj, tol_rel_obj,
                                      tol_grad, tol_rel_grad, tol_param, iter, save_iterations,
                                      c.refresh, I, L, init_writer, writer);
    return svc::bfgs<model_t, false>(model, *init, c.seed, c.id, r, init_alpha, tol_obj, tol_rel_obj,
                                     tol_grad, tol_rel_grad, tol_param, iter, save_iterations,
                                     c.refresh, I, L, init_writer, writer);
  }
  const int history = c.get_i(Q + "history_size");
  if (jacobian)
    return svc::lbfgs<model_t, true>(model, *init, c.seed, c.id, r, history, init_alpha, tol_obj,
                                     tol_rel_obj, tol_grad, tol_rel_grad, tol_param, iter,
                                     save_iterations, c.refresh, I, L, init_writer, writer);
  return svc::lbfgs<model_t, false>(model, *init, c.seed, c.id, r, history, init_alpha, tol_obj,
                                    tol_rel_obj, tol_grad, tol_rel_grad, tol_param, iter,
                                    save_iterations, c.refresh, I, L, init_writer, writer);
}

// The mode on the unconstrained scale, from a Stan CSV file (its last row) or
// a JSON / R dump file of the constrained parameter values.
static Eigen::VectorXd read_mode(Context& c, const std::string& path) {
  model_t& model = *c.model;
  if (!file_exists(path))
    throw usage_error("mode file " + path + " not found");
  Eigen::VectorXd theta;
  std::stringstream msg;
  if (stan::io::ends_with(".csv", path)) {
    csv_table t = read_stan_csv(path);
    if (t.rows.empty())
      throw std::runtime_error("Error: mode file " + path + " has no rows");
    std::vector<std::string> names;
    model.constrained_param_names(names, false, false);
    Eigen::MatrixXd m = select_columns(t, names);
    Eigen::VectorXd cons = m.row(m.rows() - 1).transpose();
    model.unconstrain_array(cons, theta, &msg);
  } else {
    var_ctx_ptr ctx = load_var_context(path);
    model.transform_inits(*ctx, theta, &msg);
  }
  if (!msg.str().empty())
    c.logger.info(msg.str());
  return theta;
}

int run_laplace(Context& c) {
  model_t& model = *c.model;
  const std::string P = "method.laplace.";
  const std::string mode = c.get_s(P + "mode");
  if (mode.empty())
    throw usage_error("method=laplace requires mode=<file> (a Stan CSV or JSON file with the mode)");
  const bool jacobian = c.get_b(P + "jacobian");
  const int draws = c.get_i(P + "draws");
  const bool calculate_lp = c.get_b(P + "calculate_lp");
  Eigen::VectorXd theta = read_mode(c, mode);

  csv_writer writer = config_csv_writer(c, c.output_file);
  stan::callbacks::structured_writer hessian_writer;
  if (jacobian)
    return stan::services::laplace_sample<true>(model, theta, draws, calculate_lp, c.seed, c.refresh,
                                                c.interrupt, c.logger, writer, hessian_writer);
  return stan::services::laplace_sample<false>(model, theta, draws, calculate_lp, c.seed, c.refresh,
                                               c.interrupt, c.logger, writer, hessian_writer);
}

}  // namespace scribe_driver
