// method=variational: ADVI (meanfield, fullrank).
#include "driver.hpp"

#include <stan/services/error_codes.hpp>
#include <stan/services/experimental/advi/fullrank.hpp>
#include <stan/services/experimental/advi/meanfield.hpp>

namespace scribe_driver {


int run_variational(Context& c) {
  namespace svc = stan::services::experimental::advi;
  const std::string P = "method.variational.";
  const std::string algo = c.get_list(P + "algorithm");
  const int iter = c.get_i(P + "iter");
  const int grad_samples = c.get_i(P + "grad_samples");
  const int elbo_samples = c.get_i(P + "elbo_samples");
  const double eta = c.get_d(P + "eta");
  const bool adapt = c.get_b(P + "adapt.engaged");
  const int adapt_iter = c.get_i(P + "adapt.iter");
  const double tol_rel_obj = c.get_d(P + "tol_rel_obj");
  const int eval_elbo = c.get_i(P + "eval_elbo");
  const int output_samples = c.get_i(P + "output_samples");

  csv_writer writer = config_csv_writer(c, c.output_file);
  csv_writer diag = config_csv_writer(c, c.diagnostic_file);
  var_ctx_ptr init = init_context(c, c.id, 1);
  stan::callbacks::writer init_writer;
  if (algo == "fullrank")
    return svc::fullrank(*c.model, *init, c.seed, c.id, c.init_radius, grad_samples, elbo_samples, iter,
                         tol_rel_obj, eta, adapt, adapt_iter, eval_elbo, output_samples, c.interrupt,
                         c.logger, init_writer, writer, diag);
  return svc::meanfield(*c.model, *init, c.seed, c.id, c.init_radius, grad_samples, elbo_samples, iter,
                        tol_rel_obj, eta, adapt, adapt_iter, eval_elbo, output_samples, c.interrupt,
                        c.logger, init_writer, writer, diag);
}

}  // namespace scribe_driver
