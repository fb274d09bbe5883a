// ckpt list, inspect, verify and diff: the subcommands that only read.

#include "tool_common.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace ckpt::tool {
namespace {

// One file of `ckpt list`, with the result of verifying it.
struct Listed {
  fs::path path;
  std::string kind;  // "checkpoint" or "model"
  std::optional<std::string> error;
};

std::string relative_to(const fs::path& path, const fs::path& dir) {
  const fs::path relative = path.lexically_relative(dir);
  return relative.empty() ? path.string() : relative.string();
}

std::optional<std::string> verification_error(const fs::path& path) {
  try {
    verify_any(path);
    return std::nullopt;
  } catch (const std::exception& e) {
    return one_line(e);
  }
}

}  // namespace

int run_list(const std::vector<std::string>& args) {
  std::string prefix;
  std::string ext;
  po::options_description options("Options");
  options.add_options()("prefix", po::value<std::string>(&prefix)->default_value("model"),
                        "file name prefix (--chkp.file_prefix)")(
      "ext", po::value<std::string>(&ext)->default_value("pt"),
      "checkpoint extension, without the dot (--chkp.file_ext)");
  po::variables_map vm;
  const std::string usage =
      "Usage: ckpt list DIR [--prefix P] [--ext E]\n\n"
      "The files a DefaultCheckpointer with load_dir DIR would see: checkpoints\n"
      "<P>_<N>.<E> (searched recursively, like load()) and model files <P>_model_<N>.<E> and\n"
      "<P>_model_<N>.safetensors, newest first, with size, modification time and whether each\n"
      "verifies. `*` marks the checkpoint load() would resume from: the newest that verifies.";
  if (!parse_arguments(args, options, {{"DIR", 1}}, usage, vm)) return kExitOk;
  const fs::path dir = vm["DIR"].as<std::vector<std::string>>().front();
  require_path(dir, /*want_dir=*/true, "DIR");

  std::vector<Listed> files;
  for (const auto& path : list_checkpoints(dir, prefix, ext, storage())) {
    files.push_back({path, "checkpoint", verification_error(path)});
  }
  for (const std::string& model_ext : {ext, std::string("safetensors")}) {
    for (const auto& path : list_checkpoints(dir, prefix + "_model", model_ext, storage())) {
      files.push_back({path, "model", verification_error(path)});
    }
  }

  std::cout << "checkpoints and model files in " << dir.string() << " (prefix '" << prefix
            << "', ext '" << ext << "'), newest first:\n";
  if (files.empty()) {
    std::cout << "  none\n";
    return kExitOk;
  }
  bool picked = false;
  int bad = 0;
  std::cout << "    " << std::left << std::setw(11) << "kind" << std::right << std::setw(6)
            << "index"
            << "  " << std::setw(10) << "size"
            << "  " << std::left << std::setw(19) << "modified"
            << "  " << std::setw(8) << "status"
            << "file\n";
  for (const auto& file : files) {
    const auto size = stored_size(file.path);
    const std::string name = file.path.filename().string();
    const auto digits_end = name.rfind('.');
    const auto digits_begin = name.rfind('_', digits_end) + 1;
    const bool load_picks = file.kind == "checkpoint" && !file.error && !picked;
    picked = picked || load_picks;
    bad += file.error ? 1 : 0;
    std::cout << (load_picks ? "  * " : "    ") << std::left << std::setw(11) << file.kind
              << std::right << std::setw(6) << name.substr(digits_begin, digits_end - digits_begin)
              << "  " << std::setw(10) << (size ? human_bytes(*size) : std::string("?")) << "  "
              << std::left << std::setw(19) << modified_time(file.path) << "  " << std::setw(8)
              << (file.error ? "BAD" : "ok") << relative_to(file.path, dir);
    if (file.error) std::cout << "\n        why: " << *file.error;
    std::cout << "\n";
  }
  std::cout << files.size() << " files, " << bad << " bad. ";
  if (picked) {
    std::cout << "load() resumes from the file marked *.\n";
  } else {
    std::cout << "No checkpoint verifies: load() would fail (or start fresh if there were none).\n";
  }
  return kExitOk;
}

namespace {

struct Totals {
  uint64_t tensors = 0;
  uint64_t elements = 0;
  uint64_t bytes = 0;
  uint64_t scalars = 0;
};

void print_tree(const c10::IValue& value, const std::string& name, int depth, Totals& totals) {
  const std::string indent(2 * depth, ' ');
  auto print_children = [&](const auto& children) {
    for (const auto& [child_name, child] : children)
      print_tree(child, child_name, depth + 1, totals);
  };
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    ++totals.tensors;
    totals.elements += t.numel();
    totals.bytes += t.nbytes();
    std::cout << indent << name << ": " << dtype_string(t) << " " << shape_string(t) << " "
              << human_bytes(t.nbytes()) << "\n";
    return;
  }
  std::cout << indent << name << ": " << value_string(value) << "\n";
  std::vector<std::pair<std::string, c10::IValue>> children;
  if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) {
      const c10::IValue& key = item.key();
      children.emplace_back(key.isString() ? key.toStringRef() : value_string(key), item.value());
    }
  } else if (value.isList() || value.isTuple()) {
    const auto items =
        value.isList() ? value.toListRef().vec() : value.toTupleRef().elements().vec();
    for (std::size_t i = 0; i < items.size(); ++i) {
      children.emplace_back("[" + std::to_string(i) + "]", items[i]);
    }
  } else {
    ++totals.scalars;
  }
  print_children(children);
}

Json to_json(const c10::IValue& value, Totals& totals) {
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    ++totals.tensors;
    totals.elements += t.numel();
    totals.bytes += t.nbytes();
    return {{"type", "tensor"},
            {"dtype", dtype_string(t)},
            {"shape", t.sizes().vec()},
            {"bytes", t.nbytes()}};
  }
  if (value.isGenericDict()) {
    Json entries = Json::object();
    for (const auto& item : value.toGenericDict()) {
      const c10::IValue& key = item.key();
      entries[key.isString() ? key.toStringRef() : value_string(key)] =
          to_json(item.value(), totals);
    }
    return {{"type", "dict"}, {"entries", entries}};
  }
  if (value.isList() || value.isTuple()) {
    Json items = Json::array();
    const auto elements =
        value.isList() ? value.toListRef().vec() : value.toTupleRef().elements().vec();
    for (const auto& element : elements) items.push_back(to_json(element, totals));
    return {{"type", value.isList() ? "list" : "tuple"}, {"items", items}};
  }
  ++totals.scalars;
  if (value.isNone()) return {{"type", "none"}, {"value", nullptr}};
  if (value.isBool()) return {{"type", "bool"}, {"value", value.toBool()}};
  if (value.isInt()) return {{"type", "int"}, {"value", value.toInt()}};
  if (value.isDouble()) return {{"type", "float"}, {"value", value.toDouble()}};
  if (value.isString()) return {{"type", "str"}, {"value", value.toStringRef()}};
  return {{"type", value.tagKind()}};
}

}  // namespace

int run_inspect(const std::vector<std::string>& args) {
  std::string key;
  po::options_description options("Options");
  options.add_options()("key", po::value<std::string>(&key),
                        "show only the value at this path: steps separated by '/', e.g. "
                        "module_interface_state or trainer_state/optimizers/0/param_groups")(
      "json", "print JSON instead of the tree (for scripts)");
  po::variables_map vm;
  const std::string usage =
      "Usage: ckpt inspect FILE [--key PATH] [--json]\n\n"
      "The tree of keys in a checkpoint, model or safetensors file: dtype, shape and bytes of\n"
      "each tensor, scalars and strings as Python shows them, totals at the bottom. The file is\n"
      "verified first; with --key only the records under PATH are read, each checked by its\n"
      "CRC-32.";
  if (!parse_arguments(args, options, {{"FILE", 1}}, usage, vm)) return kExitOk;
  const fs::path file = vm["FILE"].as<std::vector<std::string>>().front();
  require_path(file, /*want_dir=*/false, "FILE");
  const FileKind kind = kind_of(file);
  const c10::IValue value = load_any_at(file, key);
  const uint64_t size = stored_size(file).value_or(0);

  Totals totals;
  if (vm.count("json")) {
    Json out = {{"file", file.string()},
                {"format", kind == FileKind::kSafetensors ? "safetensors" : "torch_zip"},
                {"file_bytes", size}};
    if (!key.empty()) out["key"] = key;
    out["value"] = to_json(value, totals);
    out["totals"] = {{"tensors", totals.tensors},
                     {"elements", totals.elements},
                     {"tensor_bytes", totals.bytes},
                     {"scalars", totals.scalars}};
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  std::cout << file.string() << " (" << kind_name(kind) << ", " << human_bytes(size) << ")\n";
  if (value.isGenericDict() && key.empty()) {
    for (const auto& item : value.toGenericDict()) {
      const c10::IValue& k = item.key();
      print_tree(item.value(), k.isString() ? k.toStringRef() : value_string(k), 0, totals);
    }
  } else {
    print_tree(value, key.empty() ? "(root)" : key, 0, totals);
  }
  std::cout << "total: " << totals.tensors << " tensors, " << totals.elements << " elements, "
            << human_bytes(totals.bytes) << " of tensor data (" << totals.bytes << " bytes), "
            << totals.scalars << " other values\n";
  return kExitOk;
}

int run_verify(const std::vector<std::string>& args) {
  std::string ext;
  po::options_description options("Options");
  options.add_options()("ext", po::value<std::string>(&ext)->default_value("pt"),
                        "in a DIR, check files ending in .<ext> and .safetensors");
  po::variables_map vm;
  const std::string usage =
      "Usage: ckpt verify FILE|DIR...\n\n"
      "Checks each file as load() does (whole-file and record CRC-32s, zip structure, format\n"
      "version; for safetensors the header's bounds and CRC-32) and then reads it completely.\n"
      "A DIR means every *.<ext> and *.safetensors file under it, recursively (temporaries of\n"
      "unfinished saves are skipped). Prints each bad file and why. Exit 0 only if every file\n"
      "verifies; 1 if any does not, or a DIR holds no file to check.";
  if (!parse_arguments(args, options, {{"PATH", -1}}, usage, vm)) return kExitOk;
  std::vector<fs::path> files;
  std::vector<std::string> empty_dirs;
  for (const auto& argument : vm["PATH"].as<std::vector<std::string>>()) {
    const fs::path path = argument;
    std::optional<FileInfo> info;
    try {
      info = storage().stat(path);
    } catch (const CheckpointError& e) {
      throw UsageError(path.string() + ": " + e.what());
    }
    if (!info) throw UsageError(path.string() + " does not exist");
    if (!info->is_directory) {
      files.push_back(path);
      continue;
    }
    const std::size_t before = files.size();
    std::vector<fs::path> found;
    for (const auto& listed : storage().list(path, /*recursive=*/true)) {
      const std::string name = listed.path.filename().string();
      const std::string ext_suffix = "." + ext;
      auto ends_with = [&](const std::string& suffix) {
        return name.size() > suffix.size() &&
               name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
      };
      if (temporary_target(name).empty() && (ends_with(ext_suffix) || ends_with(".safetensors"))) {
        found.push_back(listed.path);
      }
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
    if (files.size() == before) empty_dirs.push_back(path.string());
  }
  int bad = 0;
  for (const auto& file : files) {
    try {
      verify_any(file);
      load_any(file);  // a file that checks out must also read
      std::cout << "ok   " << file.string() << "\n";
    } catch (const std::exception& e) {
      ++bad;
      // The library's messages name the file already; say it once, at the start of the line.
      std::string why = one_line(e);
      const std::string named = file.string() + ": ";
      if (why.compare(0, named.size(), named) == 0) why.erase(0, named.size());
      std::cout << "BAD  " << file.string() << ": " << why << "\n";
    }
  }
  for (const auto& dir : empty_dirs) {
    std::cout << "BAD  " << dir << ": no *." << ext << " or *.safetensors files to verify\n";
  }
  std::cout << files.size() << " files checked: " << files.size() - bad << " ok, " << bad
            << " bad\n";
  std::cout.flush();
  return bad == 0 && empty_dirs.empty() ? kExitOk : kExitFailure;
}

int run_diff(const std::vector<std::string>& args) {
  std::string key;
  double tolerance = 0;
  po::options_description options("Options");
  options.add_options()("key", po::value<std::string>(&key),
                        "compare only the values at this path in both files (see inspect)")(
      "atol", po::value<double>(&tolerance)->default_value(0, "0"),
      "tensors whose max absolute difference is at most this count as equal");
  po::variables_map vm;
  const std::string usage =
      "Usage: ckpt diff A B [--key PATH] [--atol X]\n\n"
      "Keys only in A, only in B, and changed: a tensor's dtype or shape, or its maximum\n"
      "absolute difference; a scalar's or string's value. Exit 0 if the files hold the same\n"
      "keys and values, 1 if they differ (or one cannot be read), 2 bad arguments.";
  if (!parse_arguments(args, options, {{"FILES", 2}}, usage, vm)) return kExitOk;
  const auto paths = vm["FILES"].as<std::vector<std::string>>();
  if (paths.size() != 2) throw UsageError("diff takes two files, A and B");
  if (tolerance < 0) throw UsageError("--atol must be >= 0");
  std::vector<std::map<std::string, c10::IValue>> leaves(2);
  std::vector<std::vector<std::string>> order(2);
  for (int i = 0; i < 2; ++i) {
    require_path(paths[i], /*want_dir=*/false, i == 0 ? "A" : "B");
    const c10::IValue value = load_any_at(paths[i], key);
    for_each_leaf(value, "", [&](const std::string& path, const c10::IValue& leaf) {
      leaves[i].emplace(path, leaf);
      order[i].push_back(path);
    });
  }
  int only_a = 0, only_b = 0, changed = 0, same = 0;
  for (const auto& path : order[0]) {
    if (!leaves[1].count(path)) {
      std::cout << "only in A: " << path << "\n";
      ++only_a;
    }
  }
  for (const auto& path : order[1]) {
    if (!leaves[0].count(path)) {
      std::cout << "only in B: " << path << "\n";
      ++only_b;
    }
  }
  for (const auto& path : order[0]) {
    const auto other = leaves[1].find(path);
    if (other == leaves[1].end()) continue;
    const c10::IValue& a = leaves[0].at(path);
    const c10::IValue& b = other->second;
    std::string change;
    if (a.isTensor() && b.isTensor()) {
      const at::Tensor& ta = a.toTensor();
      const at::Tensor& tb = b.toTensor();
      if (ta.scalar_type() != tb.scalar_type()) {
        change = "dtype " + dtype_string(ta) + " -> " + dtype_string(tb);
      }
      if (!ta.sizes().equals(tb.sizes())) {
        change += (change.empty() ? "" : ", ") + std::string("shape ") + shape_string(ta) + " -> " +
                  shape_string(tb);
      }
      if (change.empty() && !ta.equal(tb)) {
        const double max_diff =
            ta.numel() == 0 ? 0.0
                            : (ta.to(at::kDouble) - tb.to(at::kDouble)).abs().max().item<double>();
        if (!(max_diff <= tolerance)) {
          std::ostringstream text;
          text << "max abs diff " << std::setprecision(6) << max_diff;
          change = text.str();
        }
      }
    } else if (!deep_equal(a, b)) {
      change = value_string(a) + " -> " + value_string(b);
    }
    if (change.empty()) {
      ++same;
    } else {
      std::cout << "changed:   " << (path.empty() ? "(root)" : path) << ": " << change << "\n";
      ++changed;
    }
  }
  std::cout << only_a << " only in A, " << only_b << " only in B, " << changed << " changed, "
            << same << " equal\n";
  std::cout.flush();
  return only_a + only_b + changed == 0 ? kExitOk : kExitFailure;
}

}  // namespace ckpt::tool
