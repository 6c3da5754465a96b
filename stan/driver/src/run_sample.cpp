// method=sample: NUTS (unit_e / diag_e / dense_e, with or without adaptation)
// and fixed_param, for one or several chains in one process.
#include "driver.hpp"

#include <stan/callbacks/json_writer.hpp>
#include <stan/services/error_codes.hpp>
#include <stan/services/sample/fixed_param.hpp>
#include <stan/services/sample/hmc_nuts_dense_e.hpp>
#include <stan/services/sample/hmc_nuts_dense_e_adapt.hpp>
#include <stan/services/sample/hmc_nuts_diag_e.hpp>
#include <stan/services/sample/hmc_nuts_diag_e_adapt.hpp>
#include <stan/services/sample/hmc_nuts_unit_e.hpp>
#include <stan/services/sample/hmc_nuts_unit_e_adapt.hpp>
#include <stan/services/util/create_unit_e_dense_inv_metric.hpp>
#include <stan/services/util/create_unit_e_diag_inv_metric.hpp>

namespace scribe_driver {

using metric_json_writer = stan::callbacks::json_writer<std::ofstream>;

int run_sample(Context& c) {
  namespace svc = stan::services::sample;
  stan::model::model_base& model = *c.model;
  const std::string P = "method.sample.";
  const int num_samples = c.get_i(P + "num_samples");
  const int num_warmup = c.get_i(P + "num_warmup");
  const bool save_warmup = c.get_b(P + "save_warmup");
  const int thin = c.get_i(P + "thin");
  const int num_chains = c.get_i(P + "num_chains");
  const bool adapt = c.get_b(P + "adapt.engaged");
  std::string algorithm = c.get_list(P + "algorithm");

  if (model.num_params_r() == 0 && algorithm != "fixed_param") {
    c.logger.info("Model contains no parameters, running fixed_param sampler, no updates to Markov chain");
    Arg& alg = lookup(*c.root, P + "algorithm");
    alg.sel = static_cast<int>(alg.kid("fixed_param") - &alg.kids[0]);
    algorithm = "fixed_param";
    c.config_lines.clear();
    print_config(*c.root, c.config_lines);
  }

  std::string engine, metric, metric_file;
  int max_depth = 10;
  double stepsize = 1, jitter = 0;
  if (algorithm == "hmc") {
    engine = c.get_list(P + "algorithm.hmc.engine");
    if (engine != "nuts")
      throw usage_error("engine=" + engine + " is not supported by this driver (use engine=nuts)");
    max_depth = c.get_i(P + "algorithm.hmc.engine.nuts.max_depth");
    metric = c.get_list(P + "algorithm.hmc.metric");
    metric_file = c.get_s(P + "algorithm.hmc.metric_file");
    stepsize = c.get_d(P + "algorithm.hmc.stepsize");
    jitter = c.get_d(P + "algorithm.hmc.stepsize_jitter");
    if (!metric_file.empty() && metric == "unit_e")
      throw usage_error("metric_file cannot be used with metric=unit_e");
  }
  const double delta = c.get_d(P + "adapt.delta"), gamma = c.get_d(P + "adapt.gamma"),
               kappa = c.get_d(P + "adapt.kappa"), t0 = c.get_d(P + "adapt.t0");
  const unsigned int init_buffer = c.get_i(P + "adapt.init_buffer"),
                     term_buffer = c.get_i(P + "adapt.term_buffer"),
                     window = c.get_i(P + "adapt.window");
  const bool save_metric = c.get_b(P + "adapt.save_metric");

  std::vector<csv_writer> sample_writers;
  std::vector<csv_writer> diagnostic_writers;
  std::vector<metric_json_writer> metric_writers;
  std::vector<stan::callbacks::writer> init_writers(num_chains);
  std::vector<var_ctx_ptr> inits;
  std::vector<var_ctx_ptr> inv_metrics;
  sample_writers.reserve(num_chains);
  diagnostic_writers.reserve(num_chains);
  metric_writers.reserve(num_chains);
  for (int i = 0; i < num_chains; ++i) {
    const unsigned int chain_id = c.id + i;
    std::string out = num_chains == 1 ? c.output_file : numbered_file(c.output_file, chain_id);
    sample_writers.push_back(config_csv_writer(c, out, chain_id));
    std::string d = num_chains == 1 || c.diagnostic_file.empty() ? c.diagnostic_file
                                                                 : numbered_file(c.diagnostic_file, chain_id);
    diagnostic_writers.push_back(config_csv_writer(c, d, chain_id));
    if (save_metric && adapt) {
      std::string m = suffixed_file(out, "_metric", ".json");
      metric_writers.emplace_back(std::make_unique<std::ofstream>(m));
    } else {
      metric_writers.emplace_back();
    }
    inits.push_back(init_context(c, chain_id, num_chains));
    if (algorithm == "hmc" && metric != "unit_e") {
      if (!metric_file.empty()) {
        std::string f = metric_file;
        if (num_chains > 1 && file_exists(numbered_file(metric_file, chain_id)))
          f = numbered_file(metric_file, chain_id);
        inv_metrics.push_back(load_var_context(f));
      } else if (metric == "dense_e") {
        inv_metrics.push_back(std::make_shared<stan::io::array_var_context>(
            stan::services::util::create_unit_e_dense_inv_metric(model.num_params_r())));
      } else {
        inv_metrics.push_back(std::make_shared<stan::io::array_var_context>(
            stan::services::util::create_unit_e_diag_inv_metric(model.num_params_r())));
      }
    }
  }

  auto& L = c.logger;
  auto& I = c.interrupt;
  const unsigned seed = c.seed, id = c.id;
  const double r = c.init_radius;
  const int refresh = c.refresh;
  if (algorithm == "fixed_param")
    return svc::fixed_param(model, num_chains, inits, seed, id, r, num_samples, thin, refresh, I, L,
                            init_writers, sample_writers, diagnostic_writers);
  if (metric == "unit_e") {
    if (adapt)
      return svc::hmc_nuts_unit_e_adapt(model, num_chains, inits, seed, id, r, num_warmup, num_samples,
                                        thin, save_warmup, refresh, stepsize, jitter, max_depth, delta,
                                        gamma, kappa, t0, I, L, init_writers, sample_writers,
                                        diagnostic_writers, metric_writers);
    return svc::hmc_nuts_unit_e(model, num_chains, inits, seed, id, r, num_warmup, num_samples, thin,
                                save_warmup, refresh, stepsize, jitter, max_depth, I, L, init_writers,
                                sample_writers, diagnostic_writers);
  }
  if (metric == "diag_e") {
    if (adapt)
      return svc::hmc_nuts_diag_e_adapt(model, num_chains, inits, inv_metrics, seed, id, r, num_warmup,
                                        num_samples, thin, save_warmup, refresh, stepsize, jitter,
                                        max_depth, delta, gamma, kappa, t0, init_buffer, term_buffer,
                                        window, I, L, init_writers, sample_writers, diagnostic_writers,
                                        metric_writers);
    return svc::hmc_nuts_diag_e(model, num_chains, inits, inv_metrics, seed, id, r, num_warmup,
                                num_samples, thin, save_warmup, refresh, stepsize, jitter, max_depth, I,
                                L, init_writers, sample_writers, diagnostic_writers);
  }
  if (adapt)
    return svc::hmc_nuts_dense_e_adapt(model, num_chains, inits, inv_metrics, seed, id, r, num_warmup,
                                       num_samples, thin, save_warmup, refresh, stepsize, jitter,
                                       max_depth, delta, gamma, kappa, t0, init_buffer, term_buffer,
                                       window, I, L, init_writers, sample_writers, diagnostic_writers,
                                       metric_writers);
  return svc::hmc_nuts_dense_e(model, num_chains, inits, inv_metrics, seed, id, r, num_warmup,
                               num_samples, thin, save_warmup, refresh, stepsize, jitter, max_depth, I,
                               L, init_writers, sample_writers, diagnostic_writers);
}

}  // namespace scribe_driver
