// ckpt export and prune: the subcommands that write or delete.

#include "tool_common.h"

#include <ckpt/checkpoint_reader.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>
#include <ckpt/storage.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace ckpt::tool {
namespace {

bool all_tensors(const c10::IValue& value) {
  if (!value.isGenericDict() || value.toGenericDict().empty()) return false;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor()) return false;
  }
  return true;
}

// The key of the module state in a file's outline: a checkpoint's module_interface_state; the
// whole file when it is a dict of tensors; otherwise the one top-level dict of tensors (a Fabric
// or hand-made `{"model": ..., "optimizer": ..., "step": ...}`). Several such dicts: a usage error
// listing them by key.
std::string module_state_key(const fs::path& file, const c10::IValue& outline) {
  if (!outline.isGenericDict()) return "";
  const auto top = outline.toGenericDict();
  if (top.contains("module_interface_state")) return "module_interface_state";
  if (all_tensors(outline)) return "";
  std::vector<std::string> candidates;
  for (const auto& item : top) {
    if (item.key().isString() && item.key().toStringRef().find('/') == std::string::npos &&
        all_tensors(item.value())) {
      candidates.push_back(item.key().toStringRef());
    }
  }
  if (candidates.size() == 1) return candidates.front();
  if (candidates.empty()) return "";  // the whole file: the error below names what it holds
  std::string listed;
  for (const auto& candidate : candidates) listed += (listed.empty() ? "" : ", ") + candidate;
  throw UsageError(file.string() + " holds several dicts of tensors (" + listed +
                   "): choose the module state with --key");
}

}  // namespace

int run_export(const std::vector<std::string>& args) {
  std::string out;
  std::string format;
  std::string key;
  po::options_description options("Options");
  options.add_options()("output,o", po::value<std::string>(&out), "the file to write (required)")(
      "format", po::value<std::string>(&format),
      "pt (a state dict torch.load reads) or safetensors; default: safetensors if OUT ends in "
      ".safetensors, else pt")(
      "key", po::value<std::string>(&key),
      "the dict of tensors to export; default: module_interface_state in a checkpoint, the "
      "whole file in a model file, else the one top-level dict of tensors (a Fabric file's "
      "model)");
  po::variables_map vm;
  const std::string usage =
      "Usage: ckpt export FILE -o OUT [--format pt|safetensors] [--key PATH]\n\n"
      "Writes the weights only (a dict of tensors, e.g. a checkpoint's module_interface_state)\n"
      "to OUT, atomically. Tensors that share memory are written once in pt and once per name in\n"
      "safetensors (which forbids sharing).";
  if (!parse_arguments(args, options, {{"FILE", 1}}, usage, vm)) return kExitOk;
  const fs::path file = vm["FILE"].as<std::vector<std::string>>().front();
  if (out.empty()) throw UsageError("missing -o/--output OUT");
  const fs::path out_path = out;
  if (format.empty()) format = out_path.extension() == ".safetensors" ? "safetensors" : "pt";
  if (format != "pt" && format != "safetensors") {
    throw UsageError("invalid --format '" + format + "' (expected pt or safetensors)");
  }
  require_path(file, /*want_dir=*/false, "FILE");
  const fs::path out_dir = out_path.has_parent_path() ? out_path.parent_path() : fs::path(".");
  const auto out_dir_info = storage().stat(out_dir);
  if (!out_dir_info || !out_dir_info->is_directory) {
    throw UsageError("the directory of -o " + out + " does not exist");
  }
  const auto out_info = storage().stat(out_path);
  if (out_info && out_info->is_directory) throw UsageError("-o " + out + " is a directory");

  // A checkpoint's weights are read without its optimizer and trainer state: only their records.
  std::string chosen = key;
  if (chosen.empty() && kind_of(file) == FileKind::kTorchZip) {
    chosen = module_state_key(file, CheckpointReader(file, storage()).outline());
  }
  const c10::IValue value = load_any_at(file, chosen);
  const std::string what = file.string() + (chosen.empty() ? std::string() : " at --key " + chosen);
  if (!value.isGenericDict()) {
    throw std::runtime_error(what + " is a " + value_string(value) +
                             ", not a dict of tensors (choose one with --key)");
  }
  const StateDict weights = StateDict::from_ivalue(value, what);
  if (weights.empty()) throw std::runtime_error(what + " holds no tensors: nothing to export");
  uint64_t tensor_bytes = 0;
  for (const auto& [name, tensor] : weights) {
    if (!tensor.isTensor()) {
      throw std::runtime_error(what + ": '" + name + "' is a " + value_string(tensor) +
                               ", not a tensor (weights-only export; choose a dict with --key)");
    }
    tensor_bytes += tensor.toTensor().nbytes();
  }
  const uint64_t written = format == "safetensors"
                               ? save_safetensors_file(weights, out_path, storage())
                               : save_state_file(weights, out_path, storage());
  std::cout << "exported " << weights.size() << " tensors (" << human_bytes(tensor_bytes)
            << ") from " << what << " to " << out_path.string() << " (" << format << ", "
            << human_bytes(written) << ")\n";
  return kExitOk;
}

int run_prune(const std::vector<std::string>& args) {
  int64_t keep = 0;
  std::string prefix;
  std::string ext;
  po::options_description options("Options");
  options.add_options()("keep-last", po::value<int64_t>(&keep),
                        "how many of the newest checkpoints that verify to keep (>= 1; required)")(
      "dry-run", "print what would be deleted, delete nothing")(
      "prefix", po::value<std::string>(&prefix)->default_value("model"),
      "file name prefix (--chkp.file_prefix)")(
      "ext", po::value<std::string>(&ext)->default_value("pt"),
      "checkpoint extension, without the dot (--chkp.file_ext)");
  po::variables_map vm;
  const std::string usage =
      "Usage: ckpt prune DIR --keep-last N [--dry-run] [--prefix P] [--ext E]\n\n"
      "Deletes checkpoints <P>_<N>.<E> in the top level of DIR except the newest N that verify.\n"
      "Nothing else is ever touched: model files, other names, subdirectories and temporaries\n"
      "stay, and so do checkpoints that do not verify (load() skips them; they are listed). The\n"
      "newest checkpoint that verifies is never deleted; if none verifies, nothing is (exit 1).";
  if (!parse_arguments(args, options, {{"DIR", 1}}, usage, vm)) return kExitOk;
  const fs::path dir = vm["DIR"].as<std::vector<std::string>>().front();
  if (!vm.count("keep-last")) throw UsageError("missing --keep-last N");
  if (keep < 1) {
    throw UsageError("invalid --keep-last " + std::to_string(keep) +
                     ": must be >= 1 (the newest checkpoint that verifies is always kept)");
  }
  require_path(dir, /*want_dir=*/true, "DIR");
  const bool dry_run = vm.count("dry-run") != 0;

  // The library's retention rules (retention_victims), so that prune and keep_last_n agree: the
  // newest N that verify are kept; a file that does not verify is not counted (and not deleted
  // while among the newest); older files are deleted only if ckpt wrote them.
  std::map<fs::path, std::string> errors;
  std::set<fs::path> good;
  int64_t kept = 0;
  const auto verifies = [&](const fs::path& path) {
    try {
      verify_any(path);
      ++kept;
      good.insert(path);
      return true;
    } catch (const std::exception& e) {
      errors[path] = one_line(e);
      return false;
    }
  };
  const std::vector<fs::path> doomed =
      retention_victims(dir, keep, prefix, ext, verifies, storage());
  std::vector<fs::path> candidates;
  for (const auto& path : list_checkpoints(dir, prefix, ext, storage())) {
    const fs::path relative = path.lexically_relative(dir);
    if (std::distance(relative.begin(), relative.end()) == 1) candidates.push_back(path);
  }
  for (const auto& path : candidates) {
    if (std::find(doomed.begin(), doomed.end(), path) != doomed.end()) {
      std::cout << (dry_run ? "would delete " : "delete  ") << path.string() << "\n";
    } else if (errors.count(path)) {
      std::cout << "skip    " << path.string() << " (does not verify: " << errors[path] << ")\n";
    } else if (good.count(path)) {
      std::cout << "keep    " << path.string() << "\n";
    } else {
      std::cout << "skip    " << path.string() << " (ckpt did not write it)\n";
    }
  }
  if (kept == 0) {
    if (candidates.empty()) {
      std::cout << "no checkpoints " << prefix << "_<N>." << ext << " in " << dir.string()
                << ": nothing to prune\n";
      return kExitOk;
    }
    throw std::runtime_error("no checkpoint in " + dir.string() +
                             " verifies: nothing deleted (prune keeps the newest good one)");
  }
  if (!dry_run && !doomed.empty()) {
    for (const auto& path : doomed) storage().remove(path);
  }
  std::cout << (dry_run ? "dry run: would delete " : "deleted ") << doomed.size() << ", kept "
            << kept << "\n";
  return kExitOk;
}

}  // namespace ckpt::tool
