// method=optimize (L-BFGS, BFGS, Newton; with or without the Jacobian) and
// method=laplace (draws from the Laplace approximation at a given mode).
#include "driver.hpp"

#include <stan/callbacks/structured_writer.hpp>
#include <stan/callbacks/unique_stream_writer.hpp>
#include <stan/io/ends_with.hpp>
#include <stan/services/error_codes.hpp>
#include <stan/services/optimize/bfgs.hpp>
#include <stan/services/optimize/laplace_sample.hpp>
#include <stan/services/optimize/lbfgs.hpp>
#include <stan/services/optimize/newton.hpp>

namespace scribe_driver {

using csv_writer = stan::callbacks::unique_stream_writer<std::ofstream>;
using model_t = stan::model::model_base;

int run_optimize(Context& c) {
  namespace svc = stan::services::optimize;
  model_t& model = *c.model;
  const std::string P = "method.optimize.";
  const std::string algo = c.get_list(P + "algorithm");
  const bool jacobian = c.get_b(P + "jacobian");
  const int iter = c.get_i(P + "iter");
  const bool save_iterations = c.get_b(P + "save_iterations");

  auto o = open_csv(c, c.output_file);
  write_config_header(c, *o);
  csv_writer writer(std::move(o), "# ");
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

  auto o = open_csv(c, c.output_file);
  write_config_header(c, *o);
  csv_writer writer(std::move(o), "# ");
  stan::callbacks::structured_writer hessian_writer;
  if (jacobian)
    return stan::services::laplace_sample<true>(model, theta, draws, calculate_lp, c.seed, c.refresh,
                                                c.interrupt, c.logger, writer, hessian_writer);
  return stan::services::laplace_sample<false>(model, theta, draws, calculate_lp, c.seed, c.refresh,
                                               c.interrupt, c.logger, writer, hessian_writer);
}

}  // namespace scribe_driver
