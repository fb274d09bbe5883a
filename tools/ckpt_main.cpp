// ckpt: look after the checkpoints a DefaultCheckpointer writes, from the shell.
//
//   ckpt list DIR | inspect FILE | verify FILE|DIR... | diff A B | export FILE -o OUT | prune DIR
//
// Exit codes: 0 done, 1 a failure (a file that does not verify, cannot be read or written),
// 2 bad arguments. Errors are one line, `ckpt: error: ...`, naming the file or the flag.

#include "tool_common.h"

#include <ckpt/logger.h>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>
#include <string>
#include <vector>

using namespace ckpt::tool;

namespace {

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"list", "the checkpoints and model files in DIR, newest first, and which load() picks",
       run_list},
      {"inspect", "the tree of keys in FILE: dtypes, shapes, sizes, scalars; --json", run_inspect},
      {"verify", "check files (or every file in a DIR); exit 0 only if all verify", run_verify},
      {"diff", "keys only in A, only in B, and changed (shape, dtype, max abs difference)",
       run_diff},
      {"export", "write the weights of FILE as a .pt state dict or a .safetensors file",
       run_export},
      {"prune", "delete all but the newest N checkpoints that verify (--dry-run to preview)",
       run_prune},
  };
  return all;
}

void print_help() {
  std::cout
      << "Usage: ckpt COMMAND [options] [arguments]\n\n"
         "Lists, inspects, verifies, compares, exports and prunes the checkpoints written\n"
         "by ckpt's DefaultCheckpointer (and by Python's torch.save), and safetensors files.\n\n"
         "Commands:\n";
  for (const auto& command : commands()) {
    std::string name = command.name;
    name.resize(10, ' ');
    std::cout << "  " << name << command.summary << "\n";
  }
  std::cout << "\n`ckpt COMMAND --help` shows a command's options.\n"
               "Exit codes: 0 done, 1 failure (a file that does not verify or cannot be read or\n"
               "written; for diff also: the files differ), 2 bad arguments.\n";
}

int fail(int code, const std::string& message) {
  std::cerr << "ckpt: error: " << message << std::endl;
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // The tool reports on stdout itself; the library's warnings go to stderr, away from --json.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("ckpt-tool"));
  ckpt::set_log_level("warning");
  const std::vector<std::string> words(argv + 1, argv + argc);
  if (words.empty()) {
    print_help();
    return kExitUsage;
  }
  if (words[0] == "-h" || words[0] == "--help" || words[0] == "help") {
    print_help();
    return kExitOk;
  }
  for (const auto& command : commands()) {
    if (words[0] != command.name) continue;
    try {
      return command.run({words.begin() + 1, words.end()});
    } catch (const UsageError& e) {
      return fail(kExitUsage, one_line(e));
    } catch (const std::exception& e) {
      return fail(kExitFailure, one_line(e));
    }
  }
  return fail(kExitUsage, "unknown command '" + words[0] +
                              "' (commands: list, inspect, verify, diff, export, prune; see "
                              "ckpt --help)");
}
