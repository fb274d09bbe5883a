#include <ckpt/default_checkpointer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>
#include <ckpt/storage.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>
#include <ATen/core/ivalue.h>
#include <ATen/Tensor.h>

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <system_error>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <set>

#include <sys/stat.h>
#include <thread>
#include <unordered_map>

namespace po = boost::program_options;

namespace ckpt {
namespace {

using Clock = std::chrono::steady_clock;

double elapsed_ms(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double megabytes(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// N if `text` is a non-negative decimal integer of at most 18 digits.
std::optional<int64_t> parse_count(const std::string& text) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::stoll(text);
}

// The part of `name` between `prefix` and `.{ext}`, if it has both.
std::optional<std::string> middle_of(const std::string& name, const std::string& prefix,
                                     const std::string& ext) {
  const std::string suffix = "." + ext;
  if (name.size() <= prefix.size() + suffix.size()) return std::nullopt;
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return std::nullopt;
  return name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
}

// N if `name` is exactly `{prefix}{N}.{ext}` with N a non-negative decimal integer.
std::optional<int64_t> index_in_name(const std::string& name, const std::string& prefix,
                                     const std::string& ext) {
  const auto middle = middle_of(name, prefix, ext);
  return middle ? parse_count(*middle) : std::nullopt;
}

constexpr const char* kSafetensorsExt = "safetensors";

std::filesystem::path model_name(const DefaultCheckpointerArguments& args, int64_t index) {
  const std::string ext = args.model_format == kSafetensorsExt ? kSafetensorsExt : args.file_ext;
  return args.file_prefix + "_model_" + std::to_string(index) + "." + ext;
}

std::filesystem::path best_name(const DefaultCheckpointerArguments& args, int64_t index) {
  return args.file_prefix + "_best_" + std::to_string(index) + "." + args.file_ext;
}

std::string pointer_name(const std::string& file_prefix) { return file_prefix + "_latest"; }

std::optional<int64_t> best_index(const std::string& name,
                                  const DefaultCheckpointerArguments& args) {
  return index_in_name(name, args.file_prefix + "_best_", args.file_ext);
}

bool is_resumable_name(const std::string& name, const DefaultCheckpointerArguments& args) {
  return CheckpointName::parse(name, args.file_prefix, args.file_ext).has_value();
}

bool is_own_name(const std::string& name, const DefaultCheckpointerArguments& args) {
  return is_resumable_name(name, args) ||
         index_in_name(name, args.file_prefix + "_model_", args.file_ext) ||
         (args.model_format == kSafetensorsExt &&
          index_in_name(name, args.file_prefix + "_model_", kSafetensorsExt)) ||
         best_index(name, args) || name == pointer_name(args.file_prefix);
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

// The bytes save_checkpoint_file will write, roughly: every distinct tensor storage, plus the
// pickle and the zip records' overhead.
uint64_t estimate_bytes(const Checkpoint& checkpoint) {
  std::set<const void*> seen;
  uint64_t bytes = 64 * 1024;
  std::vector<c10::IValue> pending;
  for (const StateDict* part : {&checkpoint.module_interface_state, &checkpoint.trainer_state,
                                &checkpoint.trainer_backend_state, &checkpoint.registered_state,
                                &checkpoint.hyperparameters, &checkpoint.metadata}) {
    for (const auto& entry : *part) pending.push_back(entry.second);
  }
  while (!pending.empty()) {
    const c10::IValue value = std::move(pending.back());
    pending.pop_back();
    bytes += 64;
    if (value.isTensor()) {
      const at::Tensor& tensor = value.toTensor();
      if (tensor.defined() && seen.insert(tensor.storage().unsafeGetStorageImpl()).second) {
        bytes += tensor.storage().nbytes() + 256;
      }
    } else if (value.isGenericDict()) {
      for (const auto& entry : value.toGenericDict()) pending.push_back(entry.value());
    } else if (value.isList()) {
      for (const auto& element : value.toListRef()) pending.push_back(element);
    } else if (value.isTuple()) {
      for (const auto& element : value.toTupleRef().elements()) pending.push_back(element);
    } else if (value.isString()) {
      bytes += value.toStringRef().size();
    }
  }
  return bytes;
}

// What a save writes of `checkpoint`: all of it, or with save_weights_only the module state (and
// the hyperparameters and metadata that describe it) alone.
Checkpoint as_written(const Checkpoint& checkpoint, const DefaultCheckpointerArguments& args) {
  Checkpoint written = checkpoint;
  if (args.save_weights_only) {
    written.trainer_state = {};
    written.trainer_backend_state = {};
    written.registered_state = {};
  }
  return written;
}

// Modification time in nanoseconds, or -1 if it cannot be read.
int64_t mtime_ns(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

std::optional<double> number_at(const StateDict& state, const std::string& key) {
  if (!state.contains(key)) return std::nullopt;
  const c10::IValue& value = state.at(key);
  if (value.isDouble()) return value.toDouble();
  if (value.isInt()) return static_cast<double>(value.toInt());
  return std::nullopt;
}

std::optional<StateDict> dict_at(const StateDict& state, const std::string& key) {
  if (!state.contains(key) || !state.at(key).isGenericDict()) return std::nullopt;
  return StateDict::from_ivalue(state.at(key), key);
}

// Copies a checkpoint's tensors into one reused staging buffer: a snapshot that later in-place
// updates of the live tensors cannot reach. Each distinct storage is copied once, whole, so views
// and shared storages come out as they went in and the file is byte for byte the one a
// synchronous save writes.
class Stager {
 public:
  Checkpoint snapshot(const Checkpoint& checkpoint) {
    const c10::IValue states[] = {checkpoint.module_interface_state.to_ivalue(),
                                  checkpoint.trainer_state.to_ivalue(),
                                  checkpoint.trainer_backend_state.to_ivalue(),
                                  checkpoint.registered_state.to_ivalue(),
                                  checkpoint.hyperparameters.to_ivalue(),
                                  checkpoint.metadata.to_ivalue()};
    storages_.clear();
    uint64_t needed = 0;
    for (const auto& state : states) plan(state, needed);
    if (needed > capacity_) {
      staging_.reset();  // the old buffer goes before the new one comes: one buffer at a time
      capacity_ = 0;
      // In transparent huge pages where the system allows it: fewer page faults the first time.
      const uint64_t size = (needed + kHugePage - 1) / kHugePage * kHugePage;
      staging_.reset(static_cast<char*>(std::aligned_alloc(kHugePage, size)));
      if (!staging_) {
        throw CheckpointError("cannot stage a checkpoint of " + std::to_string(needed) +
                                  " bytes for a background save: out of memory",
                              {}, ENOMEM);
      }
      ::madvise(staging_.get(), size, MADV_HUGEPAGE);  // advice only: failure is harmless
      capacity_ = needed;
    }
    // The copy is all the time save() blocks for: in chunks, on LibTorch's intra-op threads.
    struct Chunk {
      const char* from;
      char* to;
      std::size_t size;
    };
    std::vector<Chunk> chunks;
    for (auto& [impl, staged] : storages_) {
      char* target = staging_.get() + staged.offset;
      const char* source = static_cast<const char*>(impl->data());
      for (std::size_t done = 0; done < impl->nbytes(); done += kCopyChunk) {
        chunks.push_back({source + done, target + done, std::min(kCopyChunk, impl->nbytes() - done)});
      }
      staged.storage = c10::Storage(c10::Storage::use_byte_size_t(), impl->nbytes(),
                                    at::DataPtr(target, target, &no_delete, at::Device(at::kCPU)),
                                    nullptr, false);
    }
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) std::memcpy(chunks[i].to, chunks[i].from, chunks[i].size);
    });
    Checkpoint copy{StateDict::from_ivalue(copy_of(states[0])),
                    StateDict::from_ivalue(copy_of(states[1])),
                    StateDict::from_ivalue(copy_of(states[2])),
                    StateDict::from_ivalue(copy_of(states[3])),
                    StateDict::from_ivalue(copy_of(states[4])),
                    StateDict::from_ivalue(copy_of(states[5]))};
    storages_.clear();
    return copy;
  }

  uint64_t capacity() const noexcept { return capacity_; }

 private:
  static constexpr uint64_t kAlignment = 64;
  static constexpr std::size_t kCopyChunk = 4 << 20;
  static constexpr uint64_t kHugePage = 2 << 20;
  struct Staged {
    uint64_t offset = 0;
    c10::Storage storage;
  };

  static void no_delete(void*) {}

  // Tensors the writer can write (dense CPU) are staged; anything else passes through unchanged,
  // to fail in the writer with the synchronous save's message.
  static bool stageable(const at::Tensor& tensor) {
    return tensor.defined() && tensor.layout() == at::kStrided && tensor.device().is_cpu() &&
           tensor.has_storage();
  }

  void plan(const c10::IValue& value, uint64_t& needed) {
    if (value.isTensor()) {
      const at::Tensor& tensor = value.toTensor();
      if (!stageable(tensor)) return;
      c10::StorageImpl* impl = tensor.storage().unsafeGetStorageImpl();
      if (storages_.count(impl) == 0) {
        storages_[impl].offset = needed;
        needed += (impl->nbytes() + kAlignment - 1) / kAlignment * kAlignment;
      }
    } else if (value.isGenericDict()) {
      for (const auto& item : value.toGenericDict()) plan(item.value(), needed);
    } else if (value.isList()) {
      for (const auto& item : value.toListRef()) plan(item, needed);
    } else if (value.isTuple()) {
      for (const auto& item : value.toTupleRef().elements()) plan(item, needed);
    }
  }

  c10::IValue copy_of(const c10::IValue& value) {
    if (value.isTensor()) {
      const at::Tensor& tensor = value.toTensor();
      if (!stageable(tensor)) return value;
      const auto& staged = storages_.at(tensor.storage().unsafeGetStorageImpl());
      at::Tensor copy = at::empty({0}, at::TensorOptions().dtype(tensor.dtype()));
      copy.set_(staged.storage, tensor.storage_offset(), tensor.sizes(), tensor.strides());
      if (tensor.requires_grad()) copy.set_requires_grad(true);
      return copy;
    }
    if (value.isGenericDict()) {
      const auto dict = value.toGenericDict();
      c10::impl::GenericDict copy(dict.keyType(), dict.valueType());
      copy.reserve(dict.size());
      for (const auto& item : dict) copy.insert(item.key(), copy_of(item.value()));
      return copy;
    }
    if (value.isList()) {
      const auto list = value.toList();
      c10::impl::GenericList copy(list.elementType());
      copy.reserve(list.size());
      for (const auto& item : value.toListRef()) copy.push_back(copy_of(item));
      return copy;
    }
    if (value.isTuple()) {
      std::vector<c10::IValue> elements;
      for (const auto& item : value.toTupleRef().elements()) elements.push_back(copy_of(item));
      return c10::ivalue::Tuple::create(std::move(elements));
    }
    return value;  // ints, doubles, bools, None and strings are immutable
  }

  std::unique_ptr<char, void (*)(void*)> staging_{nullptr, &std::free};
  uint64_t capacity_ = 0;
  std::unordered_map<c10::StorageImpl*, Staged> storages_;
};

}  // namespace

bool CheckpointName::operator<(const CheckpointName& other) const noexcept {
  if (index != other.index) return index < other.index;
  // Within an index, step checkpoints (mid-epoch) precede the epoch's own (step unset).
  const int64_t mine = step.value_or(std::numeric_limits<int64_t>::max());
  const int64_t theirs = other.step.value_or(std::numeric_limits<int64_t>::max());
  return mine < theirs;
}

std::string CheckpointName::file_name(const std::string& prefix, const std::string& ext) const {
  std::string name = prefix + "_" + std::to_string(index);
  if (step) name += "_step_" + std::to_string(*step);
  return name + "." + ext;
}

std::optional<CheckpointName> CheckpointName::parse(const std::string& file_name,
                                                    const std::string& prefix,
                                                    const std::string& ext) {
  const auto middle = middle_of(file_name, prefix + "_", ext);
  if (!middle) return std::nullopt;
  const std::string marker = "_step_";
  const auto at = middle->find(marker);
  if (at == std::string::npos) {
    const auto index = parse_count(*middle);
    if (!index) return std::nullopt;
    return CheckpointName{*index, std::nullopt};
  }
  const auto index = parse_count(middle->substr(0, at));
  const auto step = parse_count(middle->substr(at + marker.size()));
  if (!index || !step) return std::nullopt;
  return CheckpointName{*index, *step};
}


// One background thread and at most one save in flight. `mutex` guards `job` (set while a save
// is queued or being written) and `failure`; the staging memory is touched only by the caller's
// thread, and only while no job is set.
struct DefaultCheckpointer::Background {
  struct Job {
    Checkpoint snapshot;  // its tensors alias the staging memory
    CheckpointName name;
  };

  explicit Background(DefaultCheckpointer& owner) : worker([this, &owner] { run(owner); }) {}

  ~Background() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    changed.notify_all();
    worker.join();  // after the job in flight, if any, has finished
  }

  void run(DefaultCheckpointer& owner) {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      changed.wait(lock, [&] { return stop || job.has_value(); });
      if (!job) return;
      lock.unlock();
      std::exception_ptr error;
      std::string what;
      try {
        owner.write_resumable(job->snapshot, job->name);
      } catch (const std::exception& e) {
        error = std::current_exception();
        what = e.what();
      } catch (...) {
        error = std::current_exception();
        what = "unknown exception";
      }
      if (error) {
        logger()->error("background save of checkpoint index={} failed: {}", job->name.index,
                        what);
      }
      lock.lock();
      job.reset();  // releases the snapshot's tensors before the staging memory can be reused
      if (error) {
        failure = error;
        failure_what = what;
      }
      changed.notify_all();
    }
  }

  void wait_idle() {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return !job.has_value(); });
  }

  // Throws a failure not yet reported, once.
  void rethrow_failure() {
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> lock(mutex);
      std::swap(error, failure);
      failure_what.clear();
    }
    if (error) std::rethrow_exception(error);
  }

  void submit(Checkpoint snapshot, const CheckpointName& name) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      job = Job{std::move(snapshot), name};
    }
    changed.notify_all();
  }

  Stager stager;
  std::mutex mutex;
  std::condition_variable changed;
  std::optional<Job> job;
  std::exception_ptr failure;
  std::string failure_what;
  bool stop = false;
  std::thread worker;  // last: starts once everything it uses exists
};

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
  if (every_n_train_steps < 0) {
    throw CheckpointError("invalid every_n_train_steps " + std::to_string(every_n_train_steps) +
                          ": must be >= 0 (0: off)");
  }
  if (!(train_time_interval >= 0) || !std::isfinite(train_time_interval)) {
    throw CheckpointError("invalid train_time_interval " + std::to_string(train_time_interval) +
                          ": must be a number of seconds >= 0 (0: off)");
  }
  if (keep_last_n < 0) {
    throw CheckpointError("invalid keep_last_n " + std::to_string(keep_last_n) +
                          ": must be >= 0 (0: keep all)");
  }
  if (save_top_k < 0) {
    throw CheckpointError("invalid save_top_k " + std::to_string(save_top_k) +
                          ": must be >= 0 (0: off)");
  }
  if (save_top_k > 0 && monitor.empty()) {
    throw CheckpointError("invalid save_top_k " + std::to_string(save_top_k) +
                          ": needs monitor, the metric that ranks checkpoints (e.g. val_loss)");
  }
  if (mode != "min" && mode != "max") {
    throw CheckpointError("invalid mode '" + mode + "': must be min or max");
  }
  if (!(disk_margin_mb >= 0) || !std::isfinite(disk_margin_mb)) {
    throw CheckpointError("invalid disk_margin_mb " + std::to_string(disk_margin_mb) +
                          ": must be >= 0");
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
       "ckpt's log level: trace, debug, info, warning, error, critical, off")
      ((p + "every_n_train_steps").c_str(),
       po::value<int64_t>(&args.every_n_train_steps)
           ->default_value(defaults.every_n_train_steps),
       "also save every N optimizer steps, mid-epoch as <prefix>_<epoch>_step_<step>.<ext>; "
       "0: off")
      ((p + "train_time_interval").c_str(),
       po::value<double>(&args.train_time_interval)
           ->default_value(defaults.train_time_interval, "0"),
       "also save after this many seconds of training since the last save; 0: off")
      ((p + "save_on_signal").c_str(),
       po::value<bool>(&args.save_on_signal)->default_value(defaults.save_on_signal, "true"),
       "on SIGTERM/SIGINT finish the step, save, and exit with code 3")
      ((p + "keep_last_n").c_str(),
       po::value<int64_t>(&args.keep_last_n)->default_value(defaults.keep_last_n),
       "keep only the newest N resumable checkpoints in save_dir; 0: keep all")
      ((p + "save_top_k").c_str(),
       po::value<int64_t>(&args.save_top_k)->default_value(defaults.save_top_k),
       "also keep the K best checkpoints by monitor as <prefix>_best_<N>.<ext>; 0: off")
      ((p + "monitor").c_str(),
       po::value<std::string>(&args.monitor)->default_value(defaults.monitor),
       "metric ranking the best checkpoints (sample trainer: val_loss, val_acc, train_loss)")
      ((p + "mode").c_str(), po::value<std::string>(&args.mode)->default_value(defaults.mode),
       "min: lower monitor is better; max: higher is better")
      ((p + "latest_pointer").c_str(),
       po::value<bool>(&args.latest_pointer)->default_value(defaults.latest_pointer, "true"),
       "write <prefix>_latest naming the newest complete checkpoint")
      ((p + "save_weights_only").c_str(),
       po::value<bool>(&args.save_weights_only)
           ->default_value(defaults.save_weights_only, "false"),
       "checkpoints hold the module state only (a resume from one restarts training)")
      ((p + "strict_registered_state").c_str(),
       po::value<bool>(&args.strict_registered_state)
           ->default_value(defaults.strict_registered_state, "true"),
       "registered states missing from or unknown to a checkpoint are an error (false: warning)")
      ((p + "disk_margin_mb").c_str(),
       po::value<double>(&args.disk_margin_mb)->default_value(defaults.disk_margin_mb, "1"),
       "a save needs its expected size plus this many MiB free, or fails before writing")
      ((p + "async").c_str(),
       po::value<bool>(&args.async)->default_value(defaults.async, "false"),
       "save in the background: save() blocks only while it copies the state; one save in "
       "flight, its failure thrown by the next call");
  return desc;
}

StateDict options_state(const DefaultCheckpointerArguments& args, const std::string& prefix) {
  const std::string p = prefix + ".";
  const auto optional_string = [](const auto& value) -> c10::IValue {
    if (!value) return c10::IValue();
    return std::string(std::filesystem::path(*value).string());
  };
  StateDict state;
  state.insert_or_assign(p + "checkpoint", args.checkpoint);
  state.insert_or_assign(p + "delete_existing_checkpoints", args.delete_existing_checkpoints);
  state.insert_or_assign(p + "period", args.period);
  state.insert_or_assign(p + "save_dir", args.save_dir.string());
  state.insert_or_assign(p + "model_state_save_dir", args.model_state_save_dir.string());
  state.insert_or_assign(p + "load_dir", optional_string(args.load_dir));
  state.insert_or_assign(p + "load_filename", optional_string(args.load_filename));
  state.insert_or_assign(p + "file_prefix", args.file_prefix);
  state.insert_or_assign(p + "file_ext", args.file_ext);
  state.insert_or_assign(p + "model_format", args.model_format);
  state.insert_or_assign(p + "log_level", args.log_level);
  state.insert_or_assign(p + "every_n_train_steps", args.every_n_train_steps);
  state.insert_or_assign(p + "train_time_interval", args.train_time_interval);
  state.insert_or_assign(p + "save_on_signal", args.save_on_signal);
  state.insert_or_assign(p + "keep_last_n", args.keep_last_n);
  state.insert_or_assign(p + "save_top_k", args.save_top_k);
  state.insert_or_assign(p + "monitor", args.monitor);
  state.insert_or_assign(p + "mode", args.mode);
  state.insert_or_assign(p + "latest_pointer", args.latest_pointer);
  state.insert_or_assign(p + "save_weights_only", args.save_weights_only);
  state.insert_or_assign(p + "strict_registered_state", args.strict_registered_state);
  state.insert_or_assign(p + "disk_margin_mb", args.disk_margin_mb);
  state.insert_or_assign(p + "async", args.async);
  return state;
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

namespace {

// Calls `found(name, path)` for every file under `load_dir` (recursively) whose name is a
// CheckpointName.
template <class Found>
void for_each_checkpoint(const std::filesystem::path& load_dir, const std::string& file_prefix,
                         const std::string& file_ext, Found&& found) {
  std::error_code ec;
  if (!std::filesystem::is_directory(load_dir, ec)) return;
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
    const auto name =
        CheckpointName::parse(it->path().filename().string(), file_prefix, file_ext);
    if (name && it->is_regular_file(ec)) found(*name, it->path());
  }
}

}  // namespace

std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& load_dir,
                                                    const std::string& file_prefix,
                                                    const std::string& file_ext) {
  std::vector<std::pair<CheckpointName, std::filesystem::path>> found;
  for_each_checkpoint(load_dir, file_prefix, file_ext,
                      [&](const CheckpointName& name, const std::filesystem::path& path) {
                        found.emplace_back(name, path);
                      });
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first == b.first ? a.second < b.second : b.first < a.first;
  });
  std::vector<std::filesystem::path> result;
  result.reserve(found.size());
  for (auto& entry : found) result.push_back(std::move(entry.second));
  return result;
}

std::vector<std::filesystem::path> retention_victims(
    const std::filesystem::path& dir, int64_t keep_last_n, const std::string& file_prefix,
    const std::string& file_ext,
    const std::function<bool(const std::filesystem::path&)>& verifies) {
  if (keep_last_n < 1) {
    throw CheckpointError("invalid keep_last_n " + std::to_string(keep_last_n) +
                          ": retention keeps at least one checkpoint");
  }
  std::vector<std::pair<CheckpointName, std::filesystem::path>> ours;
  for (const auto& path : files_where(dir, [&](const std::string& name) {
         return CheckpointName::parse(name, file_prefix, file_ext).has_value();
       })) {
    ours.emplace_back(*CheckpointName::parse(path.filename().string(), file_prefix, file_ext),
                      path);
  }
  std::sort(ours.begin(), ours.end(),
            [](const auto& a, const auto& b) { return b.first < a.first; });
  const auto check = [&](const std::filesystem::path& path) {
    if (verifies) return verifies(path);
    try {
      verify_file(path);
      return true;
    } catch (const CheckpointError& e) {
      logger()->warn("checkpoint {} does not verify: {}", path.string(), e.what());
      return false;
    }
  };
  std::vector<std::filesystem::path> victims;
  int64_t kept = 0;
  for (const auto& [name, path] : ours) {
    if (kept < keep_last_n) {
      // Only checkpoints that verify count as resumable; one that does not is left for a human.
      if (check(path)) ++kept;
      continue;
    }
    if (!is_ckpt_file(path)) {
      logger()->warn("retention: leaving {} alone: ckpt did not write it", path.string());
      continue;
    }
    victims.push_back(path);
  }
  return victims;
}

std::filesystem::path get_latest_file(const std::filesystem::path& load_dir,
                                      const std::string& file_prefix,
                                      const std::string& file_ext) {
  // One pass keeping the best so far: linear in the number of files, no list, no sort.
  std::optional<CheckpointName> best_name;
  std::filesystem::path best;
  for_each_checkpoint(load_dir, file_prefix, file_ext,
                      [&](const CheckpointName& name, const std::filesystem::path& path) {
                        if (!best_name || *best_name < name ||
                            (*best_name == name && path < best)) {
                          best_name = name;
                          best = path;
                        }
                      });
  return best;
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
  if (args_.checkpoint && args_.save_top_k > 0) load_best_pool();
  if (args_.async) background_ = std::make_unique<Background>(*this);
}

DefaultCheckpointer::~DefaultCheckpointer() {
  if (!background_) return;
  try {
    background_->wait_idle();
    if (background_->failure) {
      logger()->error("a background save failed and nobody called wait() or save() again: {}",
                      background_->failure_what);
    }
    background_.reset();
  } catch (...) {
    // Logging failed too; a destructor must not throw.
  }
}

std::optional<std::filesystem::path> DefaultCheckpointer::save(const Checkpoint& checkpoint,
                                                               int64_t index, bool force) {
  if (index < 0) {
    throw CheckpointError("invalid checkpoint index " + std::to_string(index) +
                          ": must be >= 0");
  }
  if (background_) background_->rethrow_failure();  // a finished failure, without waiting
  if (!args_.checkpoint) return std::nullopt;
  std::optional<std::filesystem::path> path;
  if (index % args_.period == 0 || force) {
    path = write_or_submit(checkpoint, CheckpointName{index, std::nullopt});
  }
  if (args_.save_top_k > 0) consider_best(checkpoint, index);
  return path;
}

std::filesystem::path DefaultCheckpointer::write_or_submit(const Checkpoint& checkpoint,
                                                           const CheckpointName& name) {
  last_save_seconds_ = last_seen_seconds_;  // the time trigger counts from here
  if (!background_) return write_resumable(checkpoint, name);
  wait();  // one save in flight: the staging memory is free once it is done
  const auto start = Clock::now();
  Checkpoint snapshot = background_->stager.snapshot(checkpoint);
  logger()->debug("copied checkpoint {} for a background save ({:.2f} MB in {:.1f} ms)",
                  name.file_name(args_.file_prefix, args_.file_ext),
                  megabytes(background_->stager.capacity()), elapsed_ms(start));
  background_->submit(std::move(snapshot), name);
  return args_.save_dir / name.file_name(args_.file_prefix, args_.file_ext);
}

void DefaultCheckpointer::wait() {
  if (!background_) return;
  background_->wait_idle();
  background_->rethrow_failure();
}

uint64_t DefaultCheckpointer::staging_bytes() const noexcept {
  return background_ ? background_->stager.capacity() : 0;
}

bool DefaultCheckpointer::step_due(const TrainingProgress& progress) {
  last_seen_seconds_ = progress.train_seconds;
  if (!args_.checkpoint) return false;
  const int64_t n = args_.every_n_train_steps;
  if (n > 0 && progress.global_step > 0 && progress.global_step % n == 0) return true;
  const double interval = args_.train_time_interval;
  return interval > 0 && progress.train_seconds - last_save_seconds_ >= interval;
}

std::optional<std::filesystem::path> DefaultCheckpointer::save_step(
    const Checkpoint& checkpoint, const TrainingProgress& progress, bool force) {
  if (progress.epoch < 0 || progress.global_step < 0) {
    throw CheckpointError("invalid step checkpoint: epoch " + std::to_string(progress.epoch) +
                          ", global step " + std::to_string(progress.global_step) +
                          ": must be >= 0");
  }
  if (background_) background_->rethrow_failure();  // a finished failure, without waiting
  if (!args_.checkpoint || !(force || step_due(progress))) return std::nullopt;
  return write_or_submit(checkpoint, CheckpointName{progress.epoch, progress.global_step});
}

std::filesystem::path DefaultCheckpointer::write_resumable(const Checkpoint& checkpoint,
                                                           const CheckpointName& name) {
  ensure_directory(*storage_, args_.save_dir);
  Checkpoint written = as_written(checkpoint, args_);
  const auto path = args_.save_dir / name.file_name(args_.file_prefix, args_.file_ext);
  preflight(written, path, /*may_prune=*/true);
  const auto start = Clock::now();
  const uint64_t bytes = save_checkpoint_file(written, path, *storage_);
  verified_[path] = {bytes, mtime_ns(path)};  // we computed its checksums while writing it
  if (name.step) {
    logger()->info("saved checkpoint index={} step={} to {} ({:.2f} MB in {:.1f} ms)", name.index,
                   *name.step, path.string(), megabytes(bytes), elapsed_ms(start));
  } else {
    logger()->info("saved checkpoint index={} to {} ({:.2f} MB in {:.1f} ms)", name.index,
                   path.string(), megabytes(bytes), elapsed_ms(start));
  }
  // The checkpoint is durable now; what follows only tidies up, and a failure there must not turn
  // a good save into an error: the next save tries again, from what is on disk.
  if (args_.latest_pointer) {
    try {
      std::optional<CheckpointName> newest;
      for (const auto& file : files_where(args_.save_dir, [&](const std::string& n) {
             return is_resumable_name(n, args_);
           })) {
        const auto place =
            CheckpointName::parse(file.filename().string(), args_.file_prefix, args_.file_ext);
        if (!newest || *newest < *place) newest = place;
      }
      if (newest) {
        save_text_file(newest->file_name(args_.file_prefix, args_.file_ext) + "\n",
                       args_.save_dir / pointer_name(args_.file_prefix), *storage_);
      }
    } catch (const CheckpointError& e) {
      logger()->warn("could not update the latest pointer in {}: {}", args_.save_dir.string(),
                     e.what());
    }
  }
  if (args_.keep_last_n > 0) {
    try {
      apply_retention(args_.keep_last_n);
    } catch (const CheckpointError& e) {
      logger()->warn("could not delete old checkpoints in {} (retried at the next save): {}",
                     args_.save_dir.string(), e.what());
    }
  }
  return path;
}

void DefaultCheckpointer::preflight(const Checkpoint& checkpoint,
                                    const std::filesystem::path& path, bool may_prune) {
  const uint64_t expected = estimate_bytes(checkpoint);
  const auto margin = static_cast<uint64_t>(args_.disk_margin_mb * 1024 * 1024);
  const auto dir = path.parent_path();
  uint64_t available = storage_->available_space(dir);
  if (available >= expected + margin) return;
  if (may_prune && args_.keep_last_n > 1) {
    // Make room now for what retention would delete after this save anyway, keeping the newest
    // resumable checkpoints, at least one, until the new one is durable; but only if that is
    // enough: a save that fails anyway must not have cost a checkpoint.
    const auto victims = retention_victims(
        args_.save_dir, args_.keep_last_n - 1, args_.file_prefix, args_.file_ext,
        [this](const std::filesystem::path& p) { return verifies(p); });
    uint64_t freeable = 0;
    std::error_code ec;
    for (const auto& victim : victims) {
      const auto size = std::filesystem::file_size(victim, ec);
      if (!ec) freeable += size;
    }
    if (!victims.empty() && available + freeable >= expected + margin) {
      logger()->warn("{:.2f} MB free in {}, {:.2f} MB needed: applying retention before the save",
                     megabytes(available), dir.string(), megabytes(expected + margin));
      apply_retention(args_.keep_last_n - 1);
      available = storage_->available_space(dir);
      if (available >= expected + margin) return;
    }
  }
  throw CheckpointError("not enough free space to save " + path.string() + ": about " +
                            std::to_string(static_cast<int64_t>(megabytes(expected) + 0.5)) +
                            " MB expected plus disk_margin_mb " +
                            std::to_string(static_cast<int64_t>(args_.disk_margin_mb)) +
                            " MB needed, " +
                            std::to_string(static_cast<int64_t>(megabytes(available))) +
                            " MB free; nothing was written (" + std::strerror(ENOSPC) + ")",
                        path, ENOSPC);
}

bool DefaultCheckpointer::verifies(const std::filesystem::path& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return false;
  const auto known = verified_.find(path);
  if (known != verified_.end() && known->second == std::make_pair(size, mtime_ns(path))) {
    return true;
  }
  try {
    verify_file(path);
  } catch (const CheckpointError& e) {
    logger()->warn("checkpoint {} does not verify: {}", path.string(), e.what());
    verified_.erase(path);
    return false;
  }
  verified_[path] = {size, mtime_ns(path)};
  return true;
}

void DefaultCheckpointer::apply_retention(int64_t keep) {
  const auto victims = retention_victims(
      args_.save_dir, keep, args_.file_prefix, args_.file_ext,
      [this](const std::filesystem::path& path) { return verifies(path); });
  for (const auto& path : victims) {
    storage_->remove(path);
    verified_.erase(path);
    logger()->info("retention (keep_last_n={}): deleted {}", keep, path.string());
  }
  if (!victims.empty()) storage_->sync_directory(args_.save_dir);
}

bool DefaultCheckpointer::better(double a, double b) const {
  return args_.mode == "max" ? a > b : a < b;
}

void DefaultCheckpointer::consider_best(const Checkpoint& checkpoint, int64_t index) {
  const auto metrics = dict_at(checkpoint.metadata, "metrics");
  const auto score = metrics ? number_at(*metrics, args_.monitor) : std::nullopt;
  if (!score) {
    std::string present;
    if (metrics) {
      for (const auto& entry : *metrics) present += (present.empty() ? "" : ", ") + entry.first;
    }
    throw CheckpointError("monitor '" + args_.monitor +
                          "' is not among the metrics reported with checkpoint index " +
                          std::to_string(index) + " (reported: " +
                          (present.empty() ? "none" : present) + ")");
  }
  if (std::isnan(*score)) {
    logger()->warn("{} is NaN at index {}: not a best checkpoint", args_.monitor, index);
    return;
  }
  // The same index and score again (e.g. the trainer's final forced save) is already in the pool.
  if (std::any_of(best_.begin(), best_.end(),
                  [&](const Best& b) { return b.index == index && b.score == *score; })) {
    return;
  }
  // A re-save of an index in the pool with another score replaces its entry.
  best_.erase(std::remove_if(best_.begin(), best_.end(),
                             [&](const Best& b) { return b.index == index; }),
              best_.end());
  const auto k = static_cast<size_t>(args_.save_top_k);
  if (best_.size() >= k && !better(*score, best_.back().score)) return;  // ties: the earlier stays

  Checkpoint written = as_written(checkpoint, args_);
  StateDict best;
  best.insert_or_assign("monitor", args_.monitor);
  best.insert_or_assign("mode", args_.mode);
  best.insert_or_assign("score", *score);
  best.insert_or_assign("index", index);
  written.metadata.insert_or_assign("best", best.to_ivalue());
  ensure_directory(*storage_, args_.save_dir);
  const auto path = args_.save_dir / best_name(args_, index);
  preflight(written, path, /*may_prune=*/false);
  save_checkpoint_file(written, path, *storage_);

  const Best entry{path, index, *score};
  const auto at = std::find_if(best_.begin(), best_.end(), [&](const Best& b) {
    return better(entry.score, b.score) || (entry.score == b.score && entry.index < b.index);
  });
  const auto rank = static_cast<size_t>(at - best_.begin()) + 1;
  best_.insert(at, entry);
  logger()->info("best checkpoint {}: {}={} (rank {} of {})", path.string(), args_.monitor,
                 *score, rank, best_.size());
  while (best_.size() > k) {
    const Best evicted = best_.back();
    best_.pop_back();
    storage_->remove(evicted.path);
    storage_->sync_directory(args_.save_dir);
    logger()->info("best pool (save_top_k={}): deleted {} ({}={})", k, evicted.path.string(),
                   args_.monitor, evicted.score);
  }
  logger()->info("best so far: {} ({}={})", best_.front().path.string(), args_.monitor,
                 best_.front().score);
}

void DefaultCheckpointer::load_best_pool() {
  for (const auto& path : files_where(args_.save_dir, [&](const std::string& name) {
         return best_index(name, args_).has_value();
       })) {
    try {
      const Checkpoint checkpoint = load_checkpoint_file(path);
      const auto best = dict_at(checkpoint.metadata, "best");
      const auto score = best ? number_at(*best, "score") : std::nullopt;
      const auto index = best ? number_at(*best, "index") : std::nullopt;
      const bool same_ranking = best && best->contains("monitor") && best->contains("mode") &&
                                best->at("monitor") == c10::IValue(args_.monitor) &&
                                best->at("mode") == c10::IValue(args_.mode);
      if (!score || !index || !same_ranking) {
        logger()->warn("best checkpoint {} is not ranked by {} ({}): left alone, not in the pool",
                       path.string(), args_.monitor, args_.mode);
        continue;
      }
      best_.push_back({path, static_cast<int64_t>(*index), *score});
    } catch (const CheckpointError& e) {
      logger()->warn("best checkpoint {} cannot be read: left alone, not in the pool: {}",
                     path.string(), e.what());
    }
  }
  std::sort(best_.begin(), best_.end(), [&](const Best& a, const Best& b) {
    return better(a.score, b.score) || (a.score == b.score && a.index < b.index);
  });
  const auto k = static_cast<size_t>(args_.save_top_k);
  while (best_.size() > k) {  // save_top_k was lowered since these were written
    storage_->remove(best_.back().path);
    logger()->info("best pool (save_top_k={}): deleted {}", k, best_.back().path.string());
    best_.pop_back();
  }
  if (!best_.empty()) {
    logger()->info("best pool from {}: {} checkpoints, best {} ({}={})", args_.save_dir.string(),
                   best_.size(), best_.front().path.string(), args_.monitor, best_.front().score);
  }
}


std::optional<std::filesystem::path> DefaultCheckpointer::save_model(const StateDict& model_state,
                                                                     int64_t index) {
  wait();
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

std::optional<std::filesystem::path> DefaultCheckpointer::pointed_checkpoint(
    const std::filesystem::path& dir, const std::filesystem::path& newest) {
  const auto pointer = dir / pointer_name(args_.file_prefix);
  std::error_code ec;
  if (!std::filesystem::exists(pointer, ec)) return std::nullopt;
  std::ifstream in(pointer, std::ios::binary);
  std::string text(256, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (!text.empty() && text.back() == '\n') text.pop_back();
  const auto name = CheckpointName::parse(text, args_.file_prefix, args_.file_ext);
  if (!in.eof() || !name || text.find('/') != std::string::npos) {
    logger()->warn("latest pointer {} is not valid (expected one line naming a {}_<N>.{} file): "
                   "ignoring it, scanning {}",
                   pointer.string(), args_.file_prefix, args_.file_ext, dir.string());
    return std::nullopt;
  }
  const auto pointed = dir / text;
  if (!std::filesystem::is_regular_file(pointed, ec)) {
    logger()->warn("latest pointer {} names {}, which does not exist: ignoring it, scanning {}",
                   pointer.string(), pointed.string(), dir.string());
    return std::nullopt;
  }
  const auto newest_name =
      CheckpointName::parse(newest.filename().string(), args_.file_prefix, args_.file_ext);
  if (newest_name && *name < *newest_name) {
    logger()->warn("latest pointer {} is stale: it names {} but {} is newer; using the newer",
                   pointer.string(), pointed.string(), newest.string());
    return std::nullopt;
  }
  logger()->debug("latest pointer {} names {}", pointer.string(), pointed.string());
  return pointed;
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
  auto ordered = candidates;
  if (const auto pointed = pointed_checkpoint(dir, candidates.front())) {
    // Valid pointer: it names the newest; try it first (it is normally candidates.front()).
    ordered.erase(std::remove(ordered.begin(), ordered.end(), *pointed), ordered.end());
    ordered.insert(ordered.begin(), *pointed);
  }
  std::string reasons;
  for (const auto& path : ordered) {
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
  wait();
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
  wait();
  const auto path = choose([](const std::filesystem::path& candidate) { verify_file(candidate); });
  if (!path.empty()) logger()->info("verified checkpoint {}", path.string());
  return path;
}

}  // namespace ckpt
