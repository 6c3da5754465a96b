// method=generate_quantities (standalone GQ), method=log_prob and
// method=diagnose (gradient test).
#include "driver.hpp"

#include <stan/io/ends_with.hpp>
#include <stan/model/log_prob_grad.hpp>
#include <stan/services/diagnose/diagnose.hpp>
#include <stan/services/error_codes.hpp>
#include <stan/services/sample/standalone_gqs.hpp>

#include <iomanip>

namespace scribe_driver {

using model_t = stan::model::model_base;

int run_generate_quantities(Context& c) {
  model_t& model = *c.model;
  const std::string fitted = c.get_s("method.generate_quantities.fitted_params");
  if (fitted.empty())
    throw usage_error("method=generate_quantities requires fitted_params=<Stan CSV file>");
  if (!file_exists(fitted))
    throw usage_error("fitted_params file " + fitted + " not found");
  csv_table t = read_stan_csv(fitted);
  std::vector<std::string> names;
  model.constrained_param_names(names, false, false);
  Eigen::MatrixXd draws = select_columns(t, names);

  csv_writer writer = config_csv_writer(c, c.output_file);
  return stan::services::standalone_generate(model, draws, c.seed, c.interrupt, c.logger, writer);
}

int run_log_prob(Context& c) {
  model_t& model = *c.model;
  const std::string P = "method.log_prob.";
  const std::string up = c.get_s(P + "unconstrained_params");
  const std::string cp = c.get_s(P + "constrained_params");
  const bool jacobian = c.get_b(P + "jacobian");
  if (up.empty() == cp.empty())
    throw usage_error("method=log_prob needs exactly one of constrained_params=<file> and unconstrained_params=<file>");
  const std::string& in = up.empty() ? cp : up;
  if (!file_exists(in))
    throw usage_error("parameter file " + in + " not found");

  std::vector<std::vector<double>> sets;
  std::stringstream msg;
  if (!cp.empty()) {
    if (stan::io::ends_with(".csv", cp)) {
      csv_table t = read_stan_csv(cp);
      std::vector<std::string> names;
      model.constrained_param_names(names, false, false);
      Eigen::MatrixXd m = select_columns(t, names);
      for (Eigen::Index i = 0; i < m.rows(); ++i) {
        Eigen::VectorXd cons = m.row(i).transpose(), u;
        model.unconstrain_array(cons, u, &msg);
        sets.emplace_back(u.data(), u.data() + u.size());
      }
    } else {
      var_ctx_ptr ctx = load_var_context(cp);
      Eigen::VectorXd u;
      model.transform_inits(*ctx, u, &msg);
      sets.emplace_back(u.data(), u.data() + u.size());
    }
  } else {
    if (stan::io::ends_with(".csv", up)) {
      csv_table t = read_stan_csv(up);
      for (auto& row : t.rows)
        sets.push_back(row);
    } else {
      var_ctx_ptr ctx = load_var_context(up);
      if (!ctx->contains_r("params_r"))
        throw std::runtime_error("Error: unconstrained parameter file " + up + " has no variable params_r");
      std::vector<double> v = ctx->vals_r("params_r");
      std::vector<size_t> d = ctx->dims_r("params_r");
      if (d.size() <= 1) {
        sets.push_back(v);
      } else {  // var_context values are column-major: element (i, j) is v[i + j * d[0]]
        for (size_t i = 0; i < d[0]; ++i) {
          std::vector<double> row(d[1]);
          for (size_t j = 0; j < d[1]; ++j)
            row[j] = v[i + j * d[0]];
          sets.push_back(row);
        }
      }
    }
  }
  if (!msg.str().empty())
    c.logger.info(msg.str());

  const size_t n = model.num_params_r();
  std::vector<std::string> unames;
  model.unconstrained_param_names(unames, false, false);
  auto o = open_csv(c, c.output_file);
  if (c.sig_figs < 0)
    o->precision(9);
  write_config_header(c, *o);
  *o << "lp__";
  for (auto& nm : unames)
    *o << "," << nm;
  *o << "\n";
  std::vector<int> params_i;
  for (auto& params_r : sets) {
    if (params_r.size() != n)
      throw std::runtime_error("Error: expected " + std::to_string(n) + " unconstrained parameter values, found "
                               + std::to_string(params_r.size()));
    std::vector<double> grad;
    double lp = jacobian ? stan::model::log_prob_grad<true, true>(model, params_r, params_i, grad, &msg)
                         : stan::model::log_prob_grad<true, false>(model, params_r, params_i, grad, &msg);
    *o << lp;
    for (double g : grad)
      *o << "," << g;
    *o << "\n";
  }
  o->flush();
  return stan::services::error_codes::OK;
}

int run_diagnose(Context& c) {
  const std::string P = "method.diagnose.test.gradient.";
  const double epsilon = c.get_d(P + "epsilon"), error = c.get_d(P + "error");
  csv_writer writer = config_csv_writer(c, c.output_file);
  var_ctx_ptr init = init_context(c, c.id, 1);
  stan::callbacks::writer init_writer;
  return stan::services::diagnose::diagnose(*c.model, *init, c.seed, c.id, c.init_radius, epsilon, error,
                                            c.interrupt, c.logger, init_writer, writer);
}

}  // namespace scribe_driver
