// scribe-cli's CmdStan-compatible driver: shared declarations.
//
// The driver is compiled once against the abstract stan::model::model_base
// interface; every model executable links these objects with its own
// stanc-generated translation unit (which defines new_model()).
#ifndef SCRIBE_DRIVER_HPP
#define SCRIBE_DRIVER_HPP

#include "args.hpp"

#include <stan/callbacks/interrupt.hpp>
#include <stan/callbacks/logger.hpp>
#include <stan/callbacks/unique_stream_writer.hpp>
#include <stan/callbacks/writer.hpp>
#include <stan/io/var_context.hpp>
#include <stan/model/model_base.hpp>

#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace scribe_driver {

// ---------------------------------------------------------------------------
// Thread-safe console logger: info/debug/warn to stdout, error/fatal to stderr
// ---------------------------------------------------------------------------
class console_logger : public stan::callbacks::logger {
 public:
  void debug(const std::string& m) override { out(std::cout, m); }
  void debug(const std::stringstream& m) override { out(std::cout, m.str()); }
  void info(const std::string& m) override { out(std::cout, m); }
  void info(const std::stringstream& m) override { out(std::cout, m.str()); }
  void warn(const std::string& m) override { out(std::cout, m); }
  void warn(const std::stringstream& m) override { out(std::cout, m.str()); }
  void error(const std::string& m) override { out(std::cerr, m); }
  void error(const std::stringstream& m) override { out(std::cerr, m.str()); }
  void fatal(const std::string& m) override { out(std::cerr, m); }
  void fatal(const std::stringstream& m) override { out(std::cerr, m.str()); }

 private:
  std::mutex mtx_;
  void out(std::ostream& o, const std::string& m) {
    std::lock_guard<std::mutex> lock(mtx_);
    std::cout.flush();
    o << m << std::endl;
  }
};

// ---------------------------------------------------------------------------
// Run context shared by all methods
// ---------------------------------------------------------------------------
using var_ctx_ptr = std::shared_ptr<stan::io::var_context>;

struct Context {
  Arg* root = nullptr;
  stan::model::model_base* model = nullptr;
  console_logger logger;
  stan::callbacks::interrupt interrupt;

  std::string method;
  unsigned int seed = 0;
  unsigned int id = 1;
  std::string init;          // file name, or "" when init is a radius
  double init_radius = 2.0;
  std::string data_file;
  std::string output_file;
  std::string diagnostic_file;
  std::string profile_file;
  int refresh = 100;
  int sig_figs = -1;
  bool save_cmdstan_config = false;
  int num_threads = 1;

  std::vector<std::string> config_lines;  // without the "# " prefix

  double get_d(const std::string& p) const;
  int get_i(const std::string& p) const;
  bool get_b(const std::string& p) const;
  std::string get_s(const std::string& p) const;
  std::string get_list(const std::string& p) const;  // selected option
};

// Helpers implemented in util.cpp
std::string numbered_file(const std::string& base, unsigned int n);  // a.csv -> a_n.csv
std::string suffixed_file(const std::string& base, const std::string& extra,
                          const std::string& ext);  // a.csv -> a<extra><ext>
std::unique_ptr<std::ofstream> open_csv(const Context& c, const std::string& path);
// chain_id >= 0 replaces the value of the `id` line (one file per chain).
void write_config_header(const Context& c, std::ostream& o, long chain_id = -1);
// Every method's Stan CSV output: the file opened (sig_figs applied), the configuration header
// written (chain_id as above), comments prefixed "# ". An empty path gives a writer that
// discards everything (an output the user did not ask for, e.g. no diagnostic_file).
using csv_writer = stan::callbacks::unique_stream_writer<std::ofstream>;
csv_writer config_csv_writer(const Context& c, const std::string& path, long chain_id = -1);
var_ctx_ptr load_var_context(const std::string& path);  // "" -> empty
void write_config_json(const Context& c, const std::string& path);
var_ctx_ptr init_context(const Context& c, unsigned int chain_id, int num_chains);
bool file_exists(const std::string& path);

// A Stan CSV read back (draws of a previous fit, a mode file, ...)
struct csv_table {
  std::vector<std::string> header;
  std::vector<std::vector<double>> rows;
};
csv_table read_stan_csv(const std::string& path);
// Select the columns of `names` (in that order); throws if one is missing.
Eigen::MatrixXd select_columns(const csv_table& t, const std::vector<std::string>& names);

// Methods
int run_sample(Context& c);
int run_optimize(Context& c);
int run_laplace(Context& c);
int run_pathfinder(Context& c);
int run_variational(Context& c);
int run_generate_quantities(Context& c);
int run_log_prob(Context& c);
int run_diagnose(Context& c);

void write_profiles(const Context& c);

}  // namespace scribe_driver

// Defined by the stanc-generated model translation unit.
stan::model::model_base& new_model(stan::io::var_context& data_context,
                                   unsigned int seed, std::ostream* msg_stream);
stan::math::profile_map& get_stan_profile_data();

#endif
