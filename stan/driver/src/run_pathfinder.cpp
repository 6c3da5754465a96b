// method=pathfinder: single-path (num_paths=1) and multi-path Pathfinder.
#include "driver.hpp"

#include <stan/callbacks/json_writer.hpp>
#include <stan/services/error_codes.hpp>
#include <stan/services/pathfinder/multi.hpp>
#include <stan/services/pathfinder/single.hpp>

namespace scribe_driver {

using json_file_writer = stan::callbacks::json_writer<std::ofstream>;
using model_t = stan::model::model_base;

int run_pathfinder(Context& c) {
  namespace svc = stan::services::pathfinder;
  model_t& model = *c.model;
  const std::string P = "method.pathfinder.";
  const double init_alpha = c.get_d(P + "init_alpha"), tol_obj = c.get_d(P + "tol_obj"),
               tol_rel_obj = c.get_d(P + "tol_rel_obj"), tol_grad = c.get_d(P + "tol_grad"),
               tol_rel_grad = c.get_d(P + "tol_rel_grad"), tol_param = c.get_d(P + "tol_param");
  const int history = c.get_i(P + "history_size");
  const int num_psis_draws = c.get_i(P + "num_psis_draws");
  const int num_paths = c.get_i(P + "num_paths");
  const bool save_single_paths = c.get_b(P + "save_single_paths");
  const bool psis_resample = c.get_b(P + "psis_resample");
  const bool calculate_lp = c.get_b(P + "calculate_lp");
  const int max_lbfgs_iters = c.get_i(P + "max_lbfgs_iters");
  const int num_draws = c.get_i(P + "num_draws");
  const int num_elbo_draws = c.get_i(P + "num_elbo_draws");
  // the L-BFGS iterations go to JSON diagnostic files when a diagnostic file is named
  const bool save_iterations = !c.diagnostic_file.empty();
  auto& L = c.logger;
  auto& I = c.interrupt;

  csv_writer writer = config_csv_writer(c, c.output_file);

  if (num_paths == 1) {
    var_ctx_ptr init = init_context(c, c.id, 1);
    stan::callbacks::writer init_writer;
    json_file_writer diag = save_iterations ? json_file_writer(std::make_unique<std::ofstream>(
                                                  suffixed_file(c.diagnostic_file, "", ".json")))
                                            : json_file_writer();
    return svc::pathfinder_lbfgs_single<false, false>(
        model, *init, c.seed, c.id, c.init_radius, history, init_alpha, tol_obj, tol_rel_obj, tol_grad,
        tol_rel_grad, tol_param, max_lbfgs_iters, num_elbo_draws, num_draws, save_iterations,
        c.refresh, I, L, init_writer, writer, diag, calculate_lp);
  }

  std::vector<var_ctx_ptr> inits;
  std::vector<stan::callbacks::writer> init_writers(num_paths);
  std::vector<csv_writer> single_writers;
  std::vector<json_file_writer> single_diags;
  single_writers.reserve(num_paths);
  single_diags.reserve(num_paths);
  for (int i = 0; i < num_paths; ++i) {
    const unsigned int path_id = c.id + i;
    inits.push_back(init_context(c, path_id, num_paths));
    single_writers.push_back(config_csv_writer(
        c, save_single_paths ? suffixed_file(c.output_file, "_path_" + std::to_string(path_id), ".csv") : "",
        path_id));
    if (save_iterations)
      single_diags.emplace_back(std::make_unique<std::ofstream>(
          suffixed_file(c.diagnostic_file, "_path_" + std::to_string(path_id), ".json")));
    else
      single_diags.emplace_back();
  }
  json_file_writer diag;
  return svc::pathfinder_lbfgs_multi(
      model, inits, c.seed, c.id, c.init_radius, history, init_alpha, tol_obj, tol_rel_obj, tol_grad,
      tol_rel_grad, tol_param, max_lbfgs_iters, num_elbo_draws, num_draws, num_psis_draws, num_paths,
      save_iterations, c.refresh, I, L, init_writers, single_writers, single_diags, writer, diag,
      calculate_lp, psis_resample);
}

}  // namespace scribe_driver
