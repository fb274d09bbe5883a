// DefaultCheckpointerArguments bound to the command line and an INI file with
// Boost.Program_options: what the program sets first is the default, the file overrides it, and
// the command line overrides both. Works in the current directory (run.ini, checkpoints/).
//   program_options [--chkp.<field> VALUE ...]
#include <ckpt/default_checkpointer.h>
#include <ckpt/default_checkpointer_arguments.h>

#include <boost/program_options.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>

namespace po = boost::program_options;

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("program_options: " + what);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::ofstream("run.ini") << "[chkp]\nkeep_last_n = 5\nperiod = 3\n";
    // [readme]
    ckpt::DefaultCheckpointerArguments args;
    args.save_dir = "runs/a";              // the program's own defaults: kept unless overridden,
    args.period = 2;                       // and shown as the defaults by --help
    args.keep_last_n = 3;

    po::options_description options("Options");
    options.add_options()("help", "show the options");
    options.add(ckpt::default_checkpointer_options(args));   // --chkp.<field>, [chkp] in a file
    po::variables_map values;
    po::store(po::parse_command_line(argc, argv, options), values);  // first: it wins
    po::store(po::parse_config_file<char>("run.ini", options), values);
    po::notify(values);                    // writes the parsed values into args
    if (values.count("help")) std::cout << options;
    ckpt::DefaultCheckpointer checkpointer(args);   // validates: a bad value names its flag
    // [/readme]
    require(args.save_dir == "runs/a", "the preset save_dir was lost");
    require(args.keep_last_n == 5, "the config file's keep_last_n did not apply");
    if (argc == 1) require(args.period == 3, "the config file's period did not apply");
    std::printf("program_options: save_dir %s, period %lld, keep_last_n %lld\n",
                args.save_dir.c_str(), static_cast<long long>(args.period),
                static_cast<long long>(args.keep_last_n));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
