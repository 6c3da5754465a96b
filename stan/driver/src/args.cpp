// Argument tree, parser and configuration printer for the scribe-cli driver.
//
// Grammar (as CmdStan's): a sequence of tokens `name=value` (a value argument
// or a list argument selecting one of its options) or `name` (a group, or the
// option of a list given without the list's name, e.g. `sample`, `log_prob`).
// A token is looked up among the children of the innermost open group first,
// then in the enclosing groups, so sub-arguments follow their parent keyword.
#include "args.hpp"

#include <sstream>

#include <cmath>
#include <cstdlib>
#include <limits>

namespace scribe_driver {

Arg* Arg::kid(const std::string& n) {
  for (auto& k : kids)
    if (k.name == n)
      return &k;
  return nullptr;
}
const Arg* Arg::kid(const std::string& n) const {
  return const_cast<Arg*>(this)->kid(n);
}

namespace {

// Range constraints for numeric values, kept outside Arg to keep it small.
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
};

Arg V(const std::string& name, const std::string& type, const std::string& dflt,
      const std::string& help = "") {
  Arg a;
  a.kind = Arg::VALUE;
  a.name = name;
  a.type = type;
  a.value = dflt;
  a.help = help;
  return a;
}
Arg G(const std::string& name, std::vector<Arg> kids, const std::string& help = "") {
  Arg a;
  a.kind = Arg::GROUP;
  a.name = name;
  a.kids = std::move(kids);
  a.help = help;
  return a;
}
Arg L(const std::string& name, const std::string& dflt, std::vector<Arg> options,
      const std::string& help = "") {
  Arg a;
  a.kind = Arg::LIST;
  a.name = name;
  a.kids = std::move(options);
  a.help = help;
  for (size_t i = 0; i < a.kids.size(); ++i)
    if (a.kids[i].name == dflt)
      a.sel = static_cast<int>(i);
  return a;
}

std::vector<Arg> lbfgs_like(bool with_history) {
  std::vector<Arg> v = {
      V("init_alpha", "double", "0.001", "Line search step size for first iteration"),
      V("tol_obj", "double", "9.9999999999999998e-13", "Convergence tolerance on absolute changes in objective function value"),
      V("tol_rel_obj", "double", "10000", "Convergence tolerance on relative changes in objective function value"),
      V("tol_grad", "double", "1e-08", "Convergence tolerance on the norm of the gradient"),
      V("tol_rel_grad", "double", "10000000", "Convergence tolerance on the relative norm of the gradient"),
      V("tol_param", "double", "1e-08", "Convergence tolerance on changes in parameter value")};
  if (with_history)
    v.push_back(V("history_size", "int", "5", "Amount of history to keep for L-BFGS"));
  return v;
}

// Numeric range for a given argument name (by the name of its parent chain).
Range range_for(const std::string& name, const std::string& type) {
  Range r;
  const double inf = std::numeric_limits<double>::infinity();
  (void)inf;
  if (type == "uint") {
    r.lo = 0;
  }
  static const char* nonneg[] = {"num_samples", "num_warmup", "refresh"};
  for (auto n : nonneg)
    if (name == n)
      r.lo = 0;
  static const char* positive[] = {"thin", "max_depth", "num_chains", "iter", "grad_samples",
                                   "elbo_samples", "eval_elbo", "history_size", "num_paths",
                                   "num_draws", "num_elbo_draws", "max_lbfgs_iters", "draws"};
  for (auto n : positive)
    if (name == n)
      r.lo = 1;
  static const char* pos_double[] = {"gamma", "kappa", "t0", "stepsize", "init_alpha", "eta",
                                     "epsilon", "error"};
  for (auto n : pos_double)
    if (name == n) {
      r.lo = 0;
      r.lo_open = true;
    }
  static const char* nonneg_double[] = {"tol_obj", "tol_rel_obj", "tol_grad", "tol_rel_grad",
                                        "tol_param"};
  for (auto n : nonneg_double)
    if (name == n)
      r.lo = 0;
  if (name == "delta") {
    r.lo = 0;
    r.hi = 1;
    r.lo_open = r.hi_open = true;
  }
  if (name == "stepsize_jitter") {
    r.lo = 0;
    r.hi = 1;
  }
  if (name == "sig_figs") {
    r.lo = -1;
    r.hi = 18;
  }
  if (name == "num_psis_draws")
    r.lo = 1;
  if (name == "output_samples")
    r.lo = 0;
  if (name == "id")
    r.lo = 0;
  return r;
}

std::string describe(const Range& r, const std::string& name) {
  std::ostringstream s;
  bool has_lo = std::isfinite(r.lo), has_hi = std::isfinite(r.hi);
  if (has_lo)
    s << r.lo << (r.lo_open ? " < " : " <= ");
  s << name;
  if (has_hi)
    s << (r.hi_open ? " < " : " <= ") << r.hi;
  return s.str();
}

// Validates and normalises a value; throws usage_error.
std::string check_value(const Arg& a, const std::string& v) {
  auto bad = [&](const std::string& why) {
    std::ostringstream m;
    m << a.name << "=" << v << " is not a valid value for \"" << a.name << "\"";
    if (!why.empty())
      m << "\n  Valid values: " << why;
    throw usage_error(m.str());
  };
  if (a.type == "string")
    return v;
  if (a.type == "bool") {
    if (v == "1" || v == "true" || v == "True" || v == "TRUE")
      return "1";
    if (v == "0" || v == "false" || v == "False" || v == "FALSE")
      return "0";
    bad("0, 1, true, false");
  }
  Range r = range_for(a.name, a.type);
  double x = 0;
  if (a.type == "int" || a.type == "uint") {
    if (v.empty())
      bad("an integer");
    size_t pos = 0;
    long long n = 0;
    try {
      n = std::stoll(v, &pos);
    } catch (...) {
      bad(a.type == "uint" ? "a non-negative integer" : "an integer");
    }
    if (pos != v.size())
      bad(a.type == "uint" ? "a non-negative integer" : "an integer");
    if (a.type == "uint" && (n < 0 || n > 4294967295LL))
      bad("0 <= " + a.name + " <= 4294967295");
    if (a.type == "int" && (n < std::numeric_limits<int>::min() || n > std::numeric_limits<int>::max()))
      bad("a 32-bit integer");
    x = static_cast<double>(n);
  } else if (a.type == "double") {
    size_t pos = 0;
    try {
      x = std::stod(v, &pos);
    } catch (...) {
      bad("a real number");
    }
    if (pos != v.size() || std::isnan(x))
      bad("a real number");
  }
  bool ok = (r.lo_open ? x > r.lo : x >= r.lo) && (r.hi_open ? x < r.hi : x <= r.hi);
  if (!ok)
    bad(describe(r, a.name));
  return v;
}

}  // namespace

Arg make_tree() {
  const std::vector<Arg> no_kids;
  Arg sample = G(
      "sample",
      {V("num_samples", "int", "1000", "Number of sampling iterations"),
       V("num_warmup", "int", "1000", "Number of warmup iterations"),
       V("save_warmup", "bool", "0", "Stream warmup samples to output?"),
       V("thin", "int", "1", "Period between saved samples"),
       G("adapt",
         {V("engaged", "bool", "1", "Adaptation engaged?"),
          V("gamma", "double", "0.05", "Adaptation regularization scale"),
          V("delta", "double", "0.8", "Adaptation target acceptance statistic"),
          V("kappa", "double", "0.75", "Adaptation relaxation exponent"),
          V("t0", "double", "10", "Adaptation iteration offset"),
          V("init_buffer", "uint", "75", "Width of initial fast adaptation interval"),
          V("term_buffer", "uint", "50", "Width of final fast adaptation interval"),
          V("window", "uint", "25", "Initial width of slow adaptation interval"),
          V("save_metric", "bool", "0", "Save metric as JSON?")},
         "Warmup Adaptation"),
       L("algorithm", "hmc",
         {G("hmc",
            {L("engine", "nuts",
               {G("static", {V("int_time", "double", "6.2831853071795862", "Total integration time")}),
                G("nuts", {V("max_depth", "int", "10", "Maximum tree depth")})},
               "Engine for Hamiltonian Monte Carlo"),
             L("metric", "diag_e", {G("unit_e", no_kids), G("diag_e", no_kids), G("dense_e", no_kids)},
               "Geometry of base manifold"),
             V("metric_file", "string", "", "Input file with precomputed Euclidean metric"),
             V("stepsize", "double", "1", "Step size for discrete evolution"),
             V("stepsize_jitter", "double", "0", "Uniformly random jitter of the stepsize, in percent")}),
          G("fixed_param", no_kids)},
         "Sampling algorithm"),
       V("num_chains", "int", "1", "Number of chains")},
      "Bayesian inference with Markov Chain Monte Carlo");

  Arg optimize = G(
      "optimize",
      {L("algorithm", "lbfgs",
         {G("bfgs", lbfgs_like(false)), G("lbfgs", lbfgs_like(true)), G("newton", no_kids)},
         "Optimization algorithm"),
       V("jacobian", "bool", "0", "When true, include change-of-variables adjustment for constraining parameter transforms"),
       V("iter", "int", "2000", "Total number of iterations"),
       V("save_iterations", "bool", "0", "Stream optimization progress to output?")},
      "Point estimation");

  Arg variational = G(
      "variational",
      {L("algorithm", "meanfield", {G("meanfield", no_kids), G("fullrank", no_kids)},
         "Variational inference algorithm"),
       V("iter", "int", "10000", "Maximum number of ADVI iterations."),
       V("grad_samples", "int", "1", "Number of Monte Carlo draws for computing the gradient."),
       V("elbo_samples", "int", "100", "Number of Monte Carlo draws for estimate of ELBO."),
       V("eta", "double", "1", "Stepsize scaling parameter."),
       G("adapt", {V("engaged", "bool", "1", "Boolean flag for eta adaptation."),
                   V("iter", "int", "50", "Number of iterations for eta adaptation.")},
         "Eta Adaptation for Variational Inference"),
       V("tol_rel_obj", "double", "0.01", "Relative tolerance parameter for convergence."),
       V("eval_elbo", "int", "100", "Number of iterations between ELBO evaluations"),
       V("output_samples", "int", "1000", "Number of approximate posterior output draws to save.")},
      "Variational inference");

  Arg diagnose = G(
      "diagnose",
      {L("test", "gradient",
         {G("gradient", {V("epsilon", "double", "9.9999999999999995e-07", "Finite difference step size"),
                         V("error", "double", "9.9999999999999995e-07", "Error threshold")})},
         "Diagnostic test")},
      "Model diagnostics");

  Arg gq = G("generate_quantities",
             {V("fitted_params", "string", "", "Input file of sampler output")},
             "Generate quantities of interest");

  std::vector<Arg> pf = lbfgs_like(true);
  pf.push_back(V("num_psis_draws", "int", "1000", "Number of draws from PSIS sample"));
  pf.push_back(V("num_paths", "int", "4", "Number of single pathfinders"));
  pf.push_back(V("save_single_paths", "bool", "0", "Output single-path pathfinder draws as CSV"));
  pf.push_back(V("psis_resample", "bool", "1", "If true, perform psis resampling on samples returned from individual pathfinders"));
  pf.push_back(V("calculate_lp", "bool", "1", "If true, individual pathfinders lp calculations are calculated and returned with the output"));
  pf.push_back(V("max_lbfgs_iters", "int", "1000", "Maximum number of LBFGS iterations"));
  pf.push_back(V("num_draws", "int", "1000", "Number of approximate posterior draws"));
  pf.push_back(V("num_elbo_draws", "int", "25", "Number of Monte Carlo draws to evaluate ELBO"));
  Arg pathfinder = G("pathfinder", pf, "Pathfinder algorithm");

  Arg log_prob = G(
      "log_prob",
      {V("unconstrained_params", "string", "", "Input file (JSON or R dump) of parameter values on unconstrained scale"),
       V("constrained_params", "string", "", "Input file (JSON, R dump or Stan CSV) of parameter values on constrained scale"),
       V("jacobian", "bool", "1", "Include change-of-variables adjustment for constraining parameter transforms")},
      "Return the log density up to a constant and its gradients, given supplied parameters");

  Arg laplace = G(
      "laplace",
      {V("mode", "string", "", "A specification of a mode on the constrained scale for all model parameters, either in JSON or CSV format."),
       V("jacobian", "bool", "1", "When true, include change-of-variables adjustment for constraining parameter transforms"),
       V("draws", "int", "1000", "Number of draws from the laplace approximation"),
       V("calculate_lp", "bool", "1", "If true, calculate the log probability of the model at each draw")},
      "Sample from a Laplace approximation");

  Arg root = G("", {});
  root.kids.push_back(L("method", "sample",
                        {sample, optimize, variational, diagnose, gq, pathfinder, log_prob, laplace},
                        "Analysis method"));
  root.kids.push_back(V("id", "int", "1", "Unique process identifier"));
  root.kids.push_back(G("data", {V("file", "string", "", "Input data file")}, "Input data options"));
  root.kids.push_back(V("init", "string", "2", "Initialization method: real number x>0 initializes randomly between [-x, x], 0 initializes to 0, or a file name"));
  root.kids.push_back(G("random", {V("seed", "uint", "0", "Random number generator seed")}, "Random number configuration"));
  root.kids.push_back(G("output",
                        {V("file", "string", "output.csv", "Output file"),
                         V("diagnostic_file", "string", "", "Auxiliary output file for diagnostic information"),
                         V("refresh", "int", "100", "Number of iterations between screen updates"),
                         V("sig_figs", "int", "-1", "The number of significant figures used for the output CSV files."),
                         V("profile_file", "string", "profile.csv", "File to store profiling information"),
                         V("save_cmdstan_config", "bool", "0", "Save the configuration as a JSON file")},
                        "File output options"));
  root.kids.push_back(V("num_threads", "int", "1", "Number of threads available to the program."));
  return root;
}

void parse_args(Arg& root, const std::vector<std::string>& tokens) {
  std::vector<Arg*> stack = {&root};
  for (const auto& tok : tokens) {
    if (tok.empty())
      continue;
    auto eq = tok.find('=');
    std::string key = eq == std::string::npos ? tok : tok.substr(0, eq);
    bool has_value = eq != std::string::npos;
    std::string value = has_value ? tok.substr(eq + 1) : "";
    if (key.empty())
      throw usage_error("\"" + tok + "\" is not a valid argument (empty name)");

    // 1. a child of an open group, innermost first
    int level = -1;
    Arg* found = nullptr;
    for (int i = static_cast<int>(stack.size()) - 1; i >= 0 && !found; --i) {
      Arg* k = stack[i]->kid(key);
      if (k) {
        found = k;
        level = i;
      }
    }
    if (found) {
      stack.resize(level + 1);
      if (found->kind == Arg::GROUP) {
        if (has_value)
          throw usage_error("\"" + key + "\" is a group of arguments and takes no value (found \"" + tok + "\")");
        stack.push_back(found);
      } else if (found->kind == Arg::LIST) {
        if (!has_value)
          throw usage_error("\"" + key + "\" requires a value, e.g. " + key + "=" + found->selected().name);
        Arg* opt = found->kid(value);
        if (!opt) {
          std::string valid;
          for (auto& o : found->kids)
            valid += (valid.empty() ? "" : ", ") + o.name;
          throw usage_error(value + " is not a valid value for \"" + key + "\"\n  Valid values: " + valid);
        }
        found->sel = static_cast<int>(opt - &found->kids[0]);
        found->user_set = true;
        stack.push_back(opt);
      } else {
        if (!has_value)
          throw usage_error("\"" + key + "\" requires a value (" + key + "=<" + found->type + ">)");
        found->value = check_value(*found, value);
        found->user_set = true;
      }
      continue;
    }
    // 2. a bare option name of a list that is a child of an open group
    if (!has_value) {
      for (int i = static_cast<int>(stack.size()) - 1; i >= 0 && !found; --i) {
        for (auto& k : stack[i]->kids) {
          if (k.kind != Arg::LIST)
            continue;
          Arg* opt = k.kid(key);
          if (opt) {
            found = opt;
            level = i;
            k.sel = static_cast<int>(opt - &k.kids[0]);
            k.user_set = true;
            break;
          }
        }
      }
      if (found) {
        stack.resize(level + 1);
        stack.push_back(found);
        continue;
      }
    }
    throw usage_error(key + " is either mistyped or misplaced.");
  }
}

const Arg& lookup(const Arg& root, const std::string& path) {
  const Arg* cur = &root;
  std::string seg;
  std::istringstream ss(path);
  while (std::getline(ss, seg, '.')) {
    const Arg* next = cur->kid(seg);
    if (!next)
      throw std::logic_error("internal error: no argument " + path);
    cur = next;
  }
  return *cur;
}
Arg& lookup(Arg& root, const std::string& path) {
  return const_cast<Arg&>(lookup(static_cast<const Arg&>(root), path));
}

namespace {
// One walk of the tree prints both the configuration (the values in force, as CmdStan's output
// header: a list shows its selected option only) and --help (types, help texts and defaults;
// a list shows all its options).
enum class Show { config, help };

void show_node(const Arg& a, int depth, Show show, std::vector<std::string>& lines) {
  const std::string ind(2 * depth, ' ');
  const bool help = show == Show::help;
  const std::string dflt = a.user_set ? "" : " (Default)";
  auto help_text = [&] {
    if (help && !a.help.empty())
      lines.push_back(ind + "  " + a.help);
  };
  if (a.kind == Arg::GROUP) {
    lines.push_back(ind + a.name);
    help_text();
    for (auto& k : a.kids)
      show_node(k, depth + 1, show, lines);
    return;
  }
  if (a.kind == Arg::VALUE) {
    if (!help) {
      lines.push_back(ind + a.name + " = " + a.value + dflt);
      return;
    }
    lines.push_back(ind + a.name + "=<" + a.type + ">");
    help_text();
    lines.push_back(ind + "  Defaults to " + (a.value.empty() ? "\"\"" : a.value));
    return;
  }
  if (!help) {
    lines.push_back(ind + a.name + " = " + a.selected().name + dflt);
    if (!a.selected().kids.empty())
      show_node(a.selected(), depth + 1, show, lines);
    return;
  }
  lines.push_back(ind + a.name + "=<list element>");
  help_text();
  std::string valid = ind + "  Valid values:";
  for (auto& k : a.kids)
    valid += " " + k.name;
  lines.push_back(valid);
  lines.push_back(ind + "  Defaults to " + a.kids[a.sel].name);
  for (auto& k : a.kids)
    if (!k.kids.empty())
      show_node(k, depth + 1, show, lines);
}
}  // namespace

void print_config(const Arg& root, std::vector<std::string>& lines) {
  for (auto& k : root.kids)
    show_node(k, 0, Show::config, lines);
}

void print_help(const Arg& root, std::ostream& o) {
  o << "Usage: <model> <arg1> <subarg1_1> ... <subarg1_m> ... <arg_n> <subarg_n_1> ... <subarg_n_m>\n\n"
    << "Begin by selecting amongst the following inference methods and diagnostics,\n"
    << "or `info` to print build information. Arguments:\n\n";
  std::vector<std::string> lines;
  for (auto& k : root.kids)
    show_node(k, 1, Show::help, lines);
  for (auto& line : lines)
    o << line << "\n";
}

}  // namespace scribe_driver
