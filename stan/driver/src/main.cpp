// Entry point of every model executable built by the scribe-cli toolchain.
// Parses a CmdStan-style command line, builds the model from its data and
// dispatches to one of the stan::services methods.
#include "driver.hpp"

#include <stan/math/prim/core/init_threadpool_tbb.hpp>
#include <stan/services/error_codes.hpp>
#include <stan/version.hpp>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

namespace scribe_driver {

static void print_info(std::ostream& o) {
  o << "stan_version_major = " << stan::MAJOR_VERSION << "\n"
    << "stan_version_minor = " << stan::MINOR_VERSION << "\n"
    << "stan_version_patch = " << stan::PATCH_VERSION << "\n"
    << "STAN_THREADS = true\n"
    << "STAN_MPI = false\n"
    << "STAN_OPENCL = false\n"
    << "STAN_NO_RANGE_CHECKS = false\n"
    << "STAN_CPP_OPTIMS = false\n";
}

static int usage(const std::string& exe, const std::string& msg) {
  std::cerr << "Error: " << msg << "\n"
            << "Run '" << exe << " help-all' for the list of arguments." << std::endl;
  return stan::services::error_codes::USAGE;
}

static std::string exception_text(const std::exception& e) {
  std::string w = e.what();
  if (w.rfind("Ex", 0) == 0 || w.rfind("Er", 0) == 0)
    return w;
  return "Error: " + w;
}

static int run(int argc, const char* argv[]) {
  const std::string exe = argc > 0 ? argv[0] : "model";
  std::vector<std::string> toks(argv + 1, argv + argc);

  Arg root = make_tree();
  if (toks.size() == 1 && toks[0] == "info") {
    print_info(std::cout);
    return 0;
  }
  if (!toks.empty() && (toks[0] == "help" || toks[0] == "help-all" || toks[0] == "--help"
                        || toks[0] == "-h")) {
    print_help(root, std::cout);
    return 0;
  }
  try {
    parse_args(root, toks);
  } catch (const usage_error& e) {
    return usage(exe, e.what());
  }

  Context c;
  c.root = &root;
  c.method = lookup(root, "method").selected().name;

  // random seed: CmdStan draws one when none is given, and reports it
  Arg& seed = lookup(root, "random.seed");
  if (!seed.user_set) {
    std::random_device rd;
    auto t = static_cast<unsigned long long>(
        std::chrono::high_resolution_clock::now().time_since_epoch().count());
    seed.value = std::to_string(static_cast<unsigned int>((rd() ^ t) % 4294967295ULL));
  }
  c.seed = static_cast<unsigned int>(std::stoull(seed.value));
  c.id = static_cast<unsigned int>(c.get_i("id"));

  // init: a number is a radius, anything else is a file
  std::string init = c.get_s("init");
  try {
    size_t pos = 0;
    double r = std::stod(init, &pos);
    if (pos != init.size())
      throw std::invalid_argument("not a number");
    if (!(r >= 0))
      return usage(exe, "init=" + init + " must be non-negative");
    c.init_radius = r;
    c.init = "";
  } catch (const std::invalid_argument&) {
    c.init = init;
    c.init_radius = 2.0;
    bool multi = (c.method == "sample" && c.get_i("method.sample.num_chains") > 1)
                 || c.method == "pathfinder";
    if (!file_exists(init) && !(multi && file_exists(numbered_file(init, c.id))))
      return usage(exe, "init file " + init + " not found");
  } catch (const std::out_of_range&) {
    return usage(exe, "init=" + init + " is out of range");
  }

  c.data_file = c.get_s("data.file");
  if (!c.data_file.empty() && !file_exists(c.data_file))
    return usage(exe, "data file " + c.data_file + " not found");
  c.output_file = c.get_s("output.file");
  c.diagnostic_file = c.get_s("output.diagnostic_file");
  c.profile_file = c.get_s("output.profile_file");
  c.refresh = c.get_i("output.refresh");
  c.sig_figs = c.get_i("output.sig_figs");
  c.save_cmdstan_config = c.get_b("output.save_cmdstan_config");

  // threads: num_threads=N (or -1 for all cores), else STAN_NUM_THREADS
  Arg& nt = lookup(root, "num_threads");
  int threads = std::stoi(nt.value);
  if (nt.user_set) {
    if (threads == -1)
      threads = std::max(1u, std::thread::hardware_concurrency());
    if (threads < 1)
      return usage(exe, "num_threads=" + nt.value + " must be positive or -1");
  } else {
    try {
      threads = stan::math::internal::get_num_threads();
    } catch (const std::exception& e) {
      return usage(exe, e.what());
    }
  }
  c.num_threads = threads;
  nt.value = std::to_string(threads);
  stan::math::init_threadpool_tbb(threads);

  print_config(root, c.config_lines);
  for (const auto& l : c.config_lines)
    std::cout << l << "\n";
  std::cout << std::endl;

  // the model, with its data
  std::unique_ptr<stan::model::model_base> model;
  try {
    var_ctx_ptr data = load_var_context(c.data_file);
    model.reset(&new_model(*data, c.seed, &std::cout));
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << exception_text(e) << std::endl;
    return stan::services::error_codes::DATAERR;
  }
  c.model = model.get();
  if (c.save_cmdstan_config) {
    try {
      write_config_json(c, suffixed_file(c.output_file, "_config", ".json"));
    } catch (const std::exception& e) {
      std::cerr << exception_text(e) << std::endl;
      return 73;  // EX_CANTCREAT
    }
  }

  int rc = 0;
  try {
    if (c.method == "sample")
      rc = run_sample(c);
    else if (c.method == "optimize")
      rc = run_optimize(c);
    else if (c.method == "variational")
      rc = run_variational(c);
    else if (c.method == "pathfinder")
      rc = run_pathfinder(c);
    else if (c.method == "laplace")
      rc = run_laplace(c);
    else if (c.method == "generate_quantities")
      rc = run_generate_quantities(c);
    else if (c.method == "log_prob")
      rc = run_log_prob(c);
    else if (c.method == "diagnose")
      rc = run_diagnose(c);
    else
      return usage(exe, "method " + c.method + " is not supported");
  } catch (const usage_error& e) {
    return usage(exe, e.what());
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << exception_text(e) << std::endl;
    rc = stan::services::error_codes::SOFTWARE;
  }
  if (lookup(root, "output.profile_file").user_set || !get_stan_profile_data().empty())
    write_profiles(c);
  std::cout.flush();
  return rc;
}

}  // namespace scribe_driver

int main(int argc, const char* argv[]) {
  std::ios_base::sync_with_stdio(true);
  return scribe_driver::run(argc, argv);
}
