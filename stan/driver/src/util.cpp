// File, data and CSV helpers for the scribe-cli driver.
#include "driver.hpp"

#include <stan/io/dump.hpp>
#include <stan/io/empty_var_context.hpp>
#include <stan/io/ends_with.hpp>
#include <stan/io/json/json_data.hpp>
#include <stan/version.hpp>

#include <sys/stat.h>
#include <chrono>
#include <ctime>
#include <iomanip>
#include <thread>

namespace scribe_driver {

double Context::get_d(const std::string& p) const { return std::stod(lookup(*root, p).value); }
int Context::get_i(const std::string& p) const { return std::stoi(lookup(*root, p).value); }
bool Context::get_b(const std::string& p) const { return lookup(*root, p).value == "1"; }
std::string Context::get_s(const std::string& p) const { return lookup(*root, p).value; }
std::string Context::get_list(const std::string& p) const { return lookup(*root, p).selected().name; }

bool file_exists(const std::string& path) {
  struct stat st;
  return !path.empty() && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static void split_ext(const std::string& path, std::string& stem, std::string& ext) {
  auto slash = path.find_last_of('/');
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) {
    stem = path;
    ext = "";
  } else {
    stem = path.substr(0, dot);
    ext = path.substr(dot);
  }
}

std::string numbered_file(const std::string& base, unsigned int n) {
  std::string stem, ext;
  split_ext(base, stem, ext);
  return stem + "_" + std::to_string(n) + ext;
}

std::string suffixed_file(const std::string& base, const std::string& extra, const std::string& ext) {
  std::string stem, old_ext;
  split_ext(base, stem, old_ext);
  return stem + extra + ext;
}

std::unique_ptr<std::ofstream> open_csv(const Context& c, const std::string& path) {
  auto o = std::make_unique<std::ofstream>(path);
  if (!o->good())
    throw std::runtime_error("Error: cannot open output file " + path + " for writing");
  if (c.sig_figs > -1)
    o->precision(c.sig_figs);
  return o;
}

csv_writer config_csv_writer(const Context& c, const std::string& path, long chain_id) {
  if (path.empty())
    return csv_writer();
  auto o = open_csv(c, path);
  write_config_header(c, *o, chain_id);
  return csv_writer(std::move(o), "# ");
}

void write_config_header(const Context& c, std::ostream& o, long chain_id) {
  o << "# stan_version_major = " << stan::MAJOR_VERSION << "\n";
  o << "# stan_version_minor = " << stan::MINOR_VERSION << "\n";
  o << "# stan_version_patch = " << stan::PATCH_VERSION << "\n";
  o << "# model = " << c.model->model_name() << "\n";
  {
    std::time_t t = std::time(nullptr);
    std::tm tm_utc;
    gmtime_r(&t, &tm_utc);
    o << "# start_datetime = " << std::put_time(&tm_utc, "%Y-%m-%d %H:%M:%S") << " UTC\n";
  }
  for (const auto& l : c.config_lines) {
    if (chain_id >= 0 && l.rfind("id = ", 0) == 0) {
      bool dflt = l.find("(Default)") != std::string::npos;
      o << "# id = " << chain_id << (dflt ? " (Default)" : "") << "\n";
    } else {
      o << "# " << l << "\n";
    }
  }
  for (const auto& l : c.model->model_compile_info())
    o << "# " << l << "\n";
  o.flush();
}

// --- save_cmdstan_config=1: the configuration as JSON -----------------------
static std::string json_str(const std::string& v) {
  std::string o = "\"";
  for (char ch : v) {
    if (ch == '"' || ch == '\\')
      o += '\\';
    if (ch == '\n') {
      o += "\\n";
      continue;
    }
    o += ch;
  }
  return o + "\"";
}

static void json_arg(const Arg& a, std::ostream& o, int depth);

static void json_kids(const std::vector<Arg>& kids, std::ostream& o, int depth, bool first) {
  for (const auto& k : kids) {
    if (!first)
      o << ",\n";
    first = false;
    json_arg(k, o, depth);
  }
}

static void json_arg(const Arg& a, std::ostream& o, int depth) {
  std::string ind(2 * depth, ' ');
  if (a.kind == Arg::GROUP) {
    o << ind << json_str(a.name) << ": {\n";
    json_kids(a.kids, o, depth + 1, true);
    o << "\n" << ind << "}";
  } else if (a.kind == Arg::LIST) {
    const Arg& opt = a.selected();
    o << ind << json_str(a.name) << ": " << json_str(opt.name);
    if (!opt.kids.empty()) {
      o << ",\n" << ind << json_str(opt.name) << ": {\n";
      json_kids(opt.kids, o, depth + 1, true);
      o << "\n" << ind << "}";
    }
  } else {
    o << ind << json_str(a.name) << ": ";
    if (a.type == "bool")
      o << (a.value == "1" ? "true" : "false");
    else if (a.type == "string")
      o << json_str(a.value);
    else
      o << a.value;
  }
}

void write_config_json(const Context& c, const std::string& path) {
  std::ofstream o(path);
  if (!o.good())
    throw std::runtime_error("Error: cannot open " + path + " for writing");
  o << "{\n  \"stan_major_version\": " << json_str(stan::MAJOR_VERSION) << ",\n"
    << "  \"stan_minor_version\": " << json_str(stan::MINOR_VERSION) << ",\n"
    << "  \"stan_patch_version\": " << json_str(stan::PATCH_VERSION) << ",\n"
    << "  \"model_name\": " << json_str(c.model->model_name()) << ",\n";
  for (const auto& l : c.model->model_compile_info()) {
    auto eq = l.find(" = ");
    if (eq != std::string::npos)
      o << "  " << json_str(l.substr(0, eq)) << ": " << json_str(l.substr(eq + 3)) << ",\n";
  }
  json_kids(c.root->kids, o, 1, true);
  o << "\n}\n";
}

var_ctx_ptr load_var_context(const std::string& path) {
  if (path.empty())
    return std::make_shared<stan::io::empty_var_context>();
  std::ifstream in(path);
  if (!in.good())
    throw std::runtime_error("Error: cannot read input file " + path);
  if (stan::io::ends_with(".json", path) || stan::io::ends_with(".JSON", path))
    return std::make_shared<stan::json::json_data>(in);
  return std::make_shared<stan::io::dump>(in);
}

var_ctx_ptr init_context(const Context& c, unsigned int chain_id, int num_chains) {
  if (c.init.empty())
    return std::make_shared<stan::io::empty_var_context>();
  // With several chains, "inits.json" stands for "inits_<id>.json" when those exist.
  if (num_chains > 1) {
    std::string per_chain = numbered_file(c.init, chain_id);
    if (file_exists(per_chain))
      return load_var_context(per_chain);
  }
  return load_var_context(c.init);
}

// --- Stan CSV reading -----------------------------------------------------
static std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream ss(line);
  while (std::getline(ss, cur, ','))
    out.push_back(cur);
  if (!line.empty() && line.back() == ',')
    out.push_back("");
  return out;
}

static std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n\"");
  if (a == std::string::npos)
    return "";
  size_t b = s.find_last_not_of(" \t\r\n\"");
  return s.substr(a, b - a + 1);
}

csv_table read_stan_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in.good())
    throw std::runtime_error("Error: cannot read CSV file " + path);
  csv_table t;
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::string tl = trim(line);
    if (tl.empty() || tl[0] == '#')
      continue;
    auto fields = split_commas(line);
    if (t.header.empty()) {
      for (auto& f : fields)
        t.header.push_back(trim(f));
      continue;
    }
    if (fields.size() != t.header.size())
      throw std::runtime_error("Error reading " + path + ": line " + std::to_string(lineno) + " has "
                               + std::to_string(fields.size()) + " values, expecting "
                               + std::to_string(t.header.size()));
    std::vector<double> row;
    row.reserve(fields.size());
    for (auto& f : fields) {
      std::string v = trim(f);
      if (v == "nan" || v == "NaN" || v == "-nan")
        row.push_back(std::numeric_limits<double>::quiet_NaN());
      else if (v == "inf" || v == "+inf" || v == "Inf")
        row.push_back(std::numeric_limits<double>::infinity());
      else if (v == "-inf" || v == "-Inf")
        row.push_back(-std::numeric_limits<double>::infinity());
      else {
        try {
          row.push_back(std::stod(v));
        } catch (...) {
          throw std::runtime_error("Error reading " + path + ": bad value \"" + v + "\" on line "
                                   + std::to_string(lineno));
        }
      }
    }
    t.rows.push_back(std::move(row));
  }
  if (t.header.empty())
    throw std::runtime_error("Error reading " + path + ": no header row found");
  return t;
}

Eigen::MatrixXd select_columns(const csv_table& t, const std::vector<std::string>& names) {
  std::vector<size_t> idx;
  for (const auto& n : names) {
    size_t j = 0;
    while (j < t.header.size() && t.header[j] != n)
      ++j;
    if (j == t.header.size())
      throw std::runtime_error("Error: column \"" + n + "\" not found in the input CSV file");
    idx.push_back(j);
  }
  Eigen::MatrixXd m(t.rows.size(), idx.size());
  for (size_t i = 0; i < t.rows.size(); ++i)
    for (size_t j = 0; j < idx.size(); ++j)
      m(i, j) = t.rows[i][idx[j]];
  return m;
}

void write_profiles(const Context& c) {
  auto& profiles = get_stan_profile_data();
  if (profiles.empty() || c.profile_file.empty())
    return;
  std::ofstream o(c.profile_file);
  if (!o.good()) {
    std::cerr << "Error: cannot open profile file " << c.profile_file << std::endl;
    return;
  }
  o << "name,thread_id,total_time,forward_time,reverse_time,chain_stack,no_chain_stack,"
       "autodiff_calls,no_autodiff_calls\n";
  for (const auto& kv : profiles) {
    const auto& p = kv.second;
    std::ostringstream tid;
    tid << std::get<1>(kv.first);
    o << std::get<0>(kv.first) << "," << tid.str() << "," << (p.get_fwd_time() + p.get_rev_time())
      << "," << p.get_fwd_time() << "," << p.get_rev_time() << "," << p.get_chain_stack_used()
      << "," << p.get_nochain_stack_used() << "," << p.get_num_AD_fwd_passes() << ","
      << p.get_num_no_AD_fwd_passes() << "\n";
  }
}

}  // namespace scribe_driver
