#include <ckpt/default_checkpointer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>
#include <ckpt/storage.h>

#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>

namespace po = boost::program_options;

namespace ckpt {
namespace {

using Clock = std::chrono::steady_clock;

double elapsed_ms(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double megabytes(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// N if `name` is exactly `{prefix}{N}.{ext}` with N a non-negative decimal integer.
std::optional<int64_t> index_in_name(const std::string& name, const std::string& prefix,
                                     const std::string& ext) {
  const std::string suffix = "." + ext;
  if (name.size() <= prefix.size() + suffix.size()) return std::nullopt;
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return std::nullopt;
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::stoll(digits);
}

std::filesystem::path checkpoint_name(const DefaultCheckpointerArguments& args, int64_t index) {
  return args.file_prefix + "_" + std::to_string(index) + "." + args.file_ext;
}

constexpr const char* kSafetensorsExt = "safetensors";

std::filesystem::path model_name(const DefaultCheckpointerArguments& args, int64_t index) {
  const std::string ext = args.model_format == kSafetensorsExt ? kSafetensorsExt : args.file_ext;
  return args.file_prefix + "_model_" + std::to_string(index) + "." + ext;
}

bool is_own_name(const std::string& name, const DefaultCheckpointerArguments& args) {
  return index_in_name(name, args.file_prefix + "_", args.file_ext) ||
         index_in_name(name, args.file_prefix + "_model_", args.file_ext) ||
         (args.model_format == kSafetensorsExt &&
          index_in_name(name, args.file_prefix + "_model_", kSafetensorsExt));
}

// Top-level regular files of `dir` for which `select(name)` holds.
template <class Select>
std::vector<std::filesystem::path> files_where(const std::filesystem::path& dir, Select&& select) {
  std::vector<std::filesystem::path> result;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return result;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) {
    throw CheckpointError("cannot list " + dir.string() + ": " + ec.message(), dir, ec.value());
  }
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) {
      throw CheckpointError("cannot list " + dir.string() + ": " + ec.message(), dir, ec.value());
    }
    if (it->is_regular_file(ec) && select(it->path().filename().string())) {
      result.push_back(it->path());
    }
  }
  std::sort(result.begin(), result.end());
  return result;
}

void ensure_directory(Storage& storage, const std::filesystem::path& dir) {
  std::error_code ec;
  const auto status = std::filesystem::status(dir, ec);
  if (std::filesystem::is_directory(status)) return;
  if (std::filesystem::exists(status)) {
    throw CheckpointError("checkpoint directory " + dir.string() + " exists and is not a directory",
                          dir, ENOTDIR);
  }
  storage.create_directories(dir);
}

void delete_own_files(Storage& storage, const std::filesystem::path& dir,
                      const DefaultCheckpointerArguments& args) {
  for (const auto& path :
       files_where(dir, [&](const std::string& name) { return is_own_name(name, args); })) {
    storage.remove(path);
    logger()->info("deleted existing checkpoint {}", path.string());
  }
}

// Temporaries an interrupted save of ours left behind: never complete, never candidates.
void remove_own_temporaries(Storage& storage, const std::filesystem::path& dir,
                            const DefaultCheckpointerArguments& args) {
  for (const auto& path : files_where(dir, [&](const std::string& name) {
         const std::string target = temporary_target(name);
         return !target.empty() && is_own_name(target, args);
       })) {
    storage.remove(path);
    logger()->info("removed leftover temporary {} of an interrupted save", path.string());
  }
}

}  // namespace

void DefaultCheckpointerArguments::validate() const {
  if (period < 1) {
    throw CheckpointError("invalid period " + std::to_string(period) + ": must be >= 1");
  }
  if (file_prefix.empty()) throw CheckpointError("invalid file_prefix '': must not be empty");
  if (file_prefix.find('/') != std::string::npos) {
    throw CheckpointError("invalid file_prefix '" + file_prefix + "': must not contain '/'");
  }
  if (file_ext.empty() || file_ext.find('/') != std::string::npos || file_ext.front() == '.') {
    throw CheckpointError("invalid file_ext '" + file_ext +
                          "': must be a non-empty extension without the dot");
  }
  if (model_format != "pt" && model_format != kSafetensorsExt) {
    throw CheckpointError("invalid model_format '" + model_format +
                          "': expected pt or safetensors");
  }
  if (save_dir.empty()) throw CheckpointError("invalid save_dir '': must not be empty");
  std::error_code ec;
  if (std::filesystem::exists(save_dir, ec) && !std::filesystem::is_directory(save_dir, ec)) {
    throw CheckpointError("invalid save_dir " + save_dir.string() + ": exists and is not a directory",
                          save_dir, ENOTDIR);
  }
  if (!model_state_save_dir.empty() && std::filesystem::exists(model_state_save_dir, ec) &&
      !std::filesystem::is_directory(model_state_save_dir, ec)) {
    throw CheckpointError("invalid model_state_save_dir " + model_state_save_dir.string() +
                              ": exists and is not a directory",
                          model_state_save_dir, ENOTDIR);
  }
  if (load_filename && load_filename->empty()) {
    throw CheckpointError("invalid load_filename '': leave it unset instead");
  }
  // Checked here, before construction deletes anything, so that a typo loses nothing.
  if (load_filename && (!load_dir || load_dir->empty())) {
    throw CheckpointError("invalid load_filename '" + *load_filename +
                          "': it names a file inside load_dir, which is unset");
  }
  if (load_filename && !std::filesystem::exists(*load_dir / *load_filename, ec)) {
    const auto path = *load_dir / *load_filename;
    throw CheckpointError("invalid load_filename " + path.string() + ": does not exist", path,
                          ENOENT);
  }
  // Throws naming the level if unknown; applying it here also makes the level take effect.
  set_log_level(log_level);
}

po::options_description default_checkpointer_options(DefaultCheckpointerArguments& args,
                                                     const std::string& prefix) {
  const DefaultCheckpointerArguments defaults;
  const std::string p = prefix + ".";
  po::options_description desc("Checkpointer options (" + prefix + ")");
  desc.add_options()
      ((p + "checkpoint").c_str(),
       po::value<bool>(&args.checkpoint)->default_value(defaults.checkpoint, "true"),
       "save checkpoints at all (false: nothing is written, not even forced saves)")
      ((p + "delete_existing_checkpoints").c_str(),
       po::value<bool>(&args.delete_existing_checkpoints)
           ->default_value(defaults.delete_existing_checkpoints, "false"),
       "at start, delete this checkpointer's own files (<prefix>_<N>.<ext>, "
       "<prefix>_model_<N>.<ext>) from save_dir and model_state_save_dir")
      ((p + "period").c_str(), po::value<int64_t>(&args.period)->default_value(defaults.period),
       "save when index (epoch) % period == 0; must be >= 1")
      ((p + "save_dir").c_str(),
       po::value<std::string>()->default_value(defaults.save_dir.string())->notifier(
           [&args](const std::string& v) { args.save_dir = v; }),
       "directory for checkpoints (created if missing)")
      ((p + "model_state_save_dir").c_str(),
       po::value<std::string>()->default_value(defaults.model_state_save_dir.string())->notifier(
           [&args](const std::string& v) { args.model_state_save_dir = v; }),
       "directory for the final model weights; empty disables them")
      ((p + "load_dir").c_str(),
       po::value<std::string>()->notifier([&args](const std::string& v) {
         if (!v.empty()) args.load_dir = v;
       }),
       "directory to resume from (newest <prefix>_<N>.<ext>, searched recursively); "
       "unset: start fresh")
      ((p + "load_filename").c_str(),
       po::value<std::string>()->notifier([&args](const std::string& v) {
         if (!v.empty()) args.load_filename = v;
       }),
       "file inside load_dir to resume from instead of the newest; must exist")
      ((p + "file_prefix").c_str(),
       po::value<std::string>(&args.file_prefix)->default_value(defaults.file_prefix),
       "file name prefix")
      ((p + "file_ext").c_str(),
       po::value<std::string>(&args.file_ext)->default_value(defaults.file_ext),
       "file extension, without the dot")
      ((p + "model_format").c_str(),
       po::value<std::string>(&args.model_format)->default_value(defaults.model_format),
       "format of the final model weights: pt, or safetensors (<prefix>_model_<N>.safetensors)")
      ((p + "log_level").c_str(),
       po::value<std::string>(&args.log_level)->default_value(defaults.log_level),
       "ckpt's log level: trace, debug, info, warning, error, critical, off");
  return desc;
}

void check_mk_dir(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (std::filesystem::exists(status)) {
    if (!std::filesystem::is_directory(status)) {
      throw CheckpointError("checkpoint directory " + path.string() +
                                " exists and is not a directory",
                            path, ENOTDIR);
    }
    return;
  }
  std::filesystem::create_directories(path, ec);
  if (ec) {
    throw CheckpointError("cannot create checkpoint directory " + path.string() + ": " +
                              ec.message(),
                          path, ec.value());
  }
}

std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& load_dir,
                                                    const std::string& file_prefix,
                                                    const std::string& file_ext) {
  std::error_code ec;
  std::vector<std::pair<int64_t, std::filesystem::path>> found;
  if (!std::filesystem::is_directory(load_dir, ec)) return {};
  const std::string prefix = file_prefix + "_";
  auto it = std::filesystem::recursive_directory_iterator(
      load_dir, std::filesystem::directory_options::skip_permission_denied, ec);
  if (ec) {
    throw CheckpointError("cannot search " + load_dir.string() + ": " + ec.message(), load_dir,
                          ec.value());
  }
  for (; it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      throw CheckpointError("cannot search " + load_dir.string() + ": " + ec.message(),
                            load_dir, ec.value());
    }
    const auto index = index_in_name(it->path().filename().string(), prefix, file_ext);
    if (index && it->is_regular_file(ec)) found.emplace_back(*index, it->path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<std::filesystem::path> result;
  result.reserve(found.size());
  for (auto& entry : found) result.push_back(std::move(entry.second));
  return result;
}

std::filesystem::path get_latest_file(const std::filesystem::path& load_dir,
                                      const std::string& file_prefix,
                                      const std::string& file_ext) {
  auto all = list_checkpoints(load_dir, file_prefix, file_ext);
  return all.empty() ? std::filesystem::path() : all.front();
}

DefaultCheckpointer::DefaultCheckpointer(DefaultCheckpointerArguments args,
                                         std::shared_ptr<Storage> storage)
    : args_(std::move(args)), storage_(std::move(storage)) {
  if (!storage_) throw CheckpointError("DefaultCheckpointer needs a storage (got null)");
  args_.validate();
  std::vector<std::filesystem::path> dirs{args_.save_dir};
  if (!args_.model_state_save_dir.empty() && args_.model_state_save_dir != args_.save_dir) {
    dirs.push_back(args_.model_state_save_dir);
  }
  for (const auto& dir : dirs) {
    remove_own_temporaries(*storage_, dir, args_);
    if (args_.delete_existing_checkpoints) delete_own_files(*storage_, dir, args_);
  }
}

std::optional<std::filesystem::path> DefaultCheckpointer::save(const Checkpoint& checkpoint,
                                                               int64_t index, bool force) {
  if (index < 0) {
    throw CheckpointError("invalid checkpoint index " + std::to_string(index) +
                          ": must be >= 0");
  }
  if (!args_.checkpoint || !(index % args_.period == 0 || force)) return std::nullopt;
  ensure_directory(*storage_, args_.save_dir);
  const auto path = args_.save_dir / checkpoint_name(args_, index);
  const auto start = Clock::now();
  const uint64_t bytes = save_checkpoint_file(checkpoint, path, *storage_);
  logger()->info("saved checkpoint index={} to {} ({:.2f} MB in {:.1f} ms)", index, path.string(),
                 megabytes(bytes), elapsed_ms(start));
  return path;
}

std::optional<std::filesystem::path> DefaultCheckpointer::save_model(const StateDict& model_state,
                                                                     int64_t index) {
  if (!args_.checkpoint || args_.model_state_save_dir.empty()) return std::nullopt;
  if (index < 0) {
    throw CheckpointError("invalid model index " + std::to_string(index) + ": must be >= 0");
  }
  ensure_directory(*storage_, args_.model_state_save_dir);
  const auto path = args_.model_state_save_dir / model_name(args_, index);
  const auto start = Clock::now();
  const uint64_t bytes = args_.model_format == kSafetensorsExt
                             ? save_safetensors_file(model_state, path, *storage_)
                             : save_state_file(model_state, path, *storage_);
  logger()->info("saved model index={} to {} ({:.2f} MB in {:.1f} ms)", index, path.string(),
                 megabytes(bytes), elapsed_ms(start));
  return path;
}

template <class Accept>
std::filesystem::path DefaultCheckpointer::choose(Accept&& accept) {
  if (!args_.load_dir || args_.load_dir->empty()) {
    logger()->info("no load_dir set: starting fresh");
    return {};
  }
  const std::filesystem::path& dir = *args_.load_dir;
  std::error_code ec;
  if (args_.load_filename) {
    const auto path = dir / *args_.load_filename;
    if (!std::filesystem::exists(path, ec)) {
      throw CheckpointError("load_filename " + path.string() + " does not exist", path, ENOENT);
    }
    accept(path);  // the user named it: a failure is theirs to see, never substituted
    return path;
  }
  if (!std::filesystem::exists(dir, ec)) {
    logger()->warn("load_dir {} does not exist: no checkpoint found, starting fresh", dir.string());
    return {};
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    throw CheckpointError("load_dir " + dir.string() + " is not a directory", dir, ENOTDIR);
  }
  const auto candidates = list_checkpoints(dir, args_.file_prefix, args_.file_ext);
  if (candidates.empty()) {
    logger()->warn("no checkpoint {}_<N>.{} found in {}: starting fresh", args_.file_prefix,
                   args_.file_ext, dir.string());
    return {};
  }
  std::string reasons;
  for (const auto& path : candidates) {
    try {
      accept(path);
      return path;
    } catch (const CheckpointError& e) {
      logger()->warn("skipping checkpoint {}: {}", path.string(), e.what());
      reasons += "\n  " + std::string(e.what());
    }
  }
  throw CheckpointError("none of the " + std::to_string(candidates.size()) + " checkpoints in " +
                            dir.string() + " can be loaded:" + reasons,
                        dir);
}

Checkpoint DefaultCheckpointer::load() {
  Checkpoint checkpoint;
  const auto start = Clock::now();
  const auto path = choose([&](const std::filesystem::path& candidate) {
    checkpoint = load_checkpoint_file(candidate);
  });
  if (path.empty()) return {};
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  logger()->info("loaded checkpoint {} ({:.2f} MB in {:.1f} ms)", path.string(),
                 megabytes(ec ? 0 : size), elapsed_ms(start));
  return checkpoint;
}

std::filesystem::path DefaultCheckpointer::check() {
  const auto path = choose([](const std::filesystem::path& candidate) { verify_file(candidate); });
  if (!path.empty()) logger()->info("verified checkpoint {}", path.string());
  return path;
}

}  // namespace ckpt
