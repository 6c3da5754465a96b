// scribe-cli's CmdStan-compatible driver: the command-line argument tree.
// Kept free of Stan headers so that args.cpp compiles in a second.
#ifndef SCRIBE_DRIVER_ARGS_HPP
#define SCRIBE_DRIVER_ARGS_HPP

#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace scribe_driver {

// ---------------------------------------------------------------------------
// Argument tree (CmdStan grammar: nested `key=value` and bare group names)
// ---------------------------------------------------------------------------
struct Arg {
  enum Kind { GROUP, LIST, VALUE };
  Kind kind = GROUP;
  std::string name;
  std::string type;   // VALUE: int, uint, double, bool, string
  std::string value;  // VALUE: current value (default until set)
  bool user_set = false;
  std::vector<Arg> kids;  // GROUP: sub-arguments; LIST: the options (groups)
  int sel = -1;           // LIST: selected option
  std::string help;

  Arg* kid(const std::string& n);
  const Arg* kid(const std::string& n) const;
  Arg& selected() { return kids.at(sel); }
  const Arg& selected() const { return kids.at(sel); }
};

Arg make_tree();

// Raised for malformed or unknown command-line arguments (exit code 64).
struct usage_error : public std::runtime_error {
  explicit usage_error(const std::string& m) : std::runtime_error(m) {}
};

// Parses argv[1..] into the tree. Throws usage_error.
void parse_args(Arg& root, const std::vector<std::string>& tokens);

// Lookup by dotted path, e.g. "method.sample.adapt.delta"; a LIST segment is
// followed by the name of one of its options.
const Arg& lookup(const Arg& root, const std::string& path);
Arg& lookup(Arg& root, const std::string& path);

// Prints the configuration as CmdStan does (one line per argument).
void print_config(const Arg& root, std::vector<std::string>& lines);
void print_help(const Arg& root, std::ostream& o);

}  // namespace scribe_driver

#endif
