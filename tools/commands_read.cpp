// ckpt list, inspect, verify and diff: the subcommands that only read.

#include "tool_common.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_reader.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace ckpt::tool {
namespace {

// One file of `ckpt list`: what its name and contents say, and the result of verifying it.
struct Listed {
  Listed(fs::path path_, std::string kind_) : path(std::move(path_)), kind(std::move(kind_)) {}
  fs::path path;
  std::string kind;  // "checkpoint", "step", "best", "model" or "other"
  std::string index = "-";
  std::string step = "-";
  std::string epoch = "-";
  std::string metrics;  // "val_loss=0.31 val_acc=0.93", or empty
  std::string best;     // a best file's rank: "val_loss=0.31 (min)"
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
    return failure_with_key(path, e);
  }
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// N of `<head><N>.<ext>`, if `name` is exactly that with N a non-negative decimal.
std::optional<std::string> number_between(const std::string& name, const std::string& head,
                                          const std::string& ext) {
  const std::string tail = "." + ext;
  if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0 ||
      !ends_with(name, tail)) {
    return std::nullopt;
  }
  const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
  if (digits.empty() || digits.size() > 18 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return digits;
}

// Fills epoch, step, metrics and best from what a checkpoint records (its structure only: no
// tensor is read). A file that cannot be opened keeps its dashes; verification says why.
void describe(Listed& file) {
  try {
    const c10::IValue root = CheckpointReader(file.path, storage()).outline();
    auto at = [&](const std::string& key) -> std::optional<c10::IValue> {
      try {
        return value_at_key(root, key, file.path.string());
      } catch (const CheckpointError&) {
        return std::nullopt;
      }
    };
    if (const auto epoch = at("trainer_state/last_epoch"); epoch && epoch->isInt()) {
      file.epoch = std::to_string(epoch->toInt());
    }
    if (const auto step = at("trainer_backend_state/global_step_completed");
        step && step->isInt()) {
      file.step = std::to_string(step->toInt());
    }
    if (const auto metrics = at("ckpt_metadata/metrics"); metrics && metrics->isGenericDict()) {
      for (const auto& item : metrics->toGenericDict()) {
        const c10::IValue& key = item.key();
        file.metrics += (file.metrics.empty() ? "" : " ") +
                        (key.isString() ? key.toStringRef() : value_string(key)) + "=" +
                        value_string(item.value());
      }
    }
    const auto monitor = at("ckpt_metadata/best/monitor");
    const auto score = at("ckpt_metadata/best/score");
    const auto mode = at("ckpt_metadata/best/mode");
    if (monitor && monitor->isString() && score) {
      file.best = monitor->toStringRef() + "=" + value_string(*score) +
                  (mode && mode->isString() ? " (" + mode->toStringRef() + ")" : "");
    }
  } catch (const std::exception&) {
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
      "Every file a DefaultCheckpointer writes under DIR (recursively): resumable checkpoints\n"
      "<P>_<N>.<E> and step checkpoints <P>_<N>_step_<S>.<E> newest first (as load() sees\n"
      "them), best checkpoints <P>_best_<N>.<E> with their monitored score, and weights files\n"
      "<P>_model_<N>.<E> / .safetensors; each with index, global step, epoch, metrics, size,\n"
      "modification time and whether it verifies. `*` marks the checkpoint load() would resume\n"
      "from: the newest that verifies. Other *.<E>, *.pt and *.safetensors files follow under\n"
      "\"other files\".";
  if (!parse_arguments(args, options, {{"DIR", 1}}, usage, vm)) return kExitOk;
  const fs::path dir = vm["DIR"].as<std::vector<std::string>>().front();
  require_path(dir, /*want_dir=*/true, "DIR");

  std::vector<Listed> files;
  std::set<fs::path> seen;
  for (const auto& path : list_checkpoints(dir, prefix, ext, storage())) {
    const auto name = CheckpointName::parse(path.filename().string(), prefix, ext);
    Listed file{path, name && name->step ? "step" : "checkpoint"};
    if (name) file.index = std::to_string(name->index);
    files.push_back(std::move(file));
  }
  std::vector<fs::path> everything;
  for (const auto& listed : storage().list(dir, /*recursive=*/true)) {
    if (!listed.is_directory) everything.push_back(listed.path);
  }
  std::sort(everything.begin(), everything.end());
  std::vector<Listed> best;
  std::vector<Listed> models;
  std::vector<Listed> others;
  for (const auto& file : files) seen.insert(file.path);
  for (const auto& path : everything) {
    if (seen.count(path)) continue;
    const std::string name = path.filename().string();
    if (!temporary_target(name).empty()) continue;  // an unfinished save, never a file of ours
    if (const auto n = number_between(name, prefix + "_best_", ext)) {
      Listed file{path, "best"};
      file.index = *n;
      best.push_back(std::move(file));
    } else if (const auto m = number_between(name, prefix + "_model_", ext)
                                  ? number_between(name, prefix + "_model_", ext)
                                  : number_between(name, prefix + "_model_", "safetensors")) {
      Listed file{path, "model"};
      file.index = *m;
      models.push_back(std::move(file));
    } else if (ends_with(name, "." + ext) || ends_with(name, ".pt") ||
               ends_with(name, ".safetensors")) {
      others.push_back({path, "other"});
    }
  }
  auto newest_first = [](std::vector<Listed>& group) {
    std::stable_sort(group.begin(), group.end(), [](const Listed& a, const Listed& b) {
      return std::stoll(a.index) > std::stoll(b.index);
    });
  };
  newest_first(best);
  newest_first(models);
  files.insert(files.end(), best.begin(), best.end());
  files.insert(files.end(), models.begin(), models.end());
  const std::size_t ours = files.size();
  files.insert(files.end(), others.begin(), others.end());
  for (auto& file : files) {
    file.error = verification_error(file.path);
    if (file.kind != "model" && kind_of(file.path) == FileKind::kTorchZip) describe(file);
  }

  bool picked = false;
  int bad = 0;
  auto print = [&](const Listed& file) {
    const auto size = stored_size(file.path);
    const bool load_picks =
        (file.kind == "checkpoint" || file.kind == "step") && !file.error && !picked;
    picked = picked || load_picks;
    bad += file.error ? 1 : 0;
    std::cout << (load_picks ? "  * " : "    ") << std::left << std::setw(11) << file.kind
              << std::right << std::setw(6) << file.index << "  " << std::setw(6) << file.step
              << "  " << std::setw(5) << file.epoch << "  " << std::setw(10)
              << (size ? human_bytes(*size) : std::string("?")) << "  " << std::left
              << std::setw(19) << modified_time(file.path) << "  " << std::setw(8)
              << (file.error ? "BAD" : "ok") << relative_to(file.path, dir);
    if (file.error) std::cout << "\n        why: " << *file.error;
    if (!file.best.empty()) std::cout << "\n        best: " << file.best;
    if (!file.metrics.empty()) std::cout << "\n        metrics: " << file.metrics;
    std::cout << "\n";
  };
  std::cout << "files ckpt wrote in " << dir.string() << " (prefix '" << prefix << "', ext '"
            << ext << "'): checkpoints newest first, then best and model files:\n";
  std::cout << "    " << std::left << std::setw(11) << "kind" << std::right << std::setw(6)
            << "index"
            << "  " << std::setw(6) << "step"
            << "  " << std::setw(5) << "epoch"
            << "  " << std::setw(10) << "size"
            << "  " << std::left << std::setw(19) << "modified"
            << "  " << std::setw(8) << "status"
            << "file\n";
  if (ours == 0) std::cout << "  none\n";
  for (std::size_t i = 0; i < ours; ++i) print(files[i]);
  if (ours < files.size()) {
    std::cout << "other files (not named by --prefix " << prefix << " --ext " << ext << "):\n";
    for (std::size_t i = ours; i < files.size(); ++i) print(files[i]);
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
              << human_bytes(t.nbytes());
    if (const auto item = item_string(t)) std::cout << " = " << *item;
    std::cout << "\n";
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
    Json out = {{"type", "tensor"},
                {"dtype", dtype_string(t)},
                {"shape", t.sizes().vec()},
                {"bytes", t.nbytes()}};
    if (t.dim() == 0 && !t.is_complex()) {
      if (t.scalar_type() == at::kBool) {
        out["value"] = t.item<bool>();
      } else if (t.is_floating_point()) {
        out["value"] = t.item<double>();
      } else {
        out["value"] = t.item<int64_t>();
      }
    }
    return out;
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
      std::string why = failure_with_key(file, e);
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
      const auto item_a = item_string(ta);
      const auto item_b = item_string(tb);
      if (change.empty() && item_a && item_b && !ta.equal(tb)) {
        // A 0-dim tensor is a number (an optimizer's step): its values say more than a diff.
        const double diff = std::abs(ta.item<double>() - tb.item<double>());
        if (!(diff <= tolerance)) change = *item_a + " -> " + *item_b;
      } else if (change.empty() && !ta.equal(tb)) {
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
