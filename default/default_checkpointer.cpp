#include <ckpt/default_checkpointer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>
#include <ckpt/serialization.h>
#include <ckpt/storage.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

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

std::filesystem::path model_name(const DefaultCheckpointerArguments& args, int64_t index) {
  return args.file_prefix + "_model_" + std::to_string(index) + "." + args.file_ext;
}

bool is_own_name(const std::string& name, const DefaultCheckpointerArguments& args) {
  return index_in_name(name, args.file_prefix + "_", args.file_ext) ||
         index_in_name(name, args.file_prefix + "_model_", args.file_ext);
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

// Copies a checkpoint's tensors into one reused staging buffer: a snapshot that later in-place
// updates of the live tensors cannot reach. Each distinct storage is copied once, whole, so views
// and shared storages come out as they went in and the file is byte for byte the one a
// synchronous save writes.
class Stager {
 public:
  Checkpoint snapshot(const Checkpoint& checkpoint) {
    const c10::IValue states[] = {checkpoint.module_interface_state.to_ivalue(),
                                  checkpoint.trainer_state.to_ivalue(),
                                  checkpoint.trainer_backend_state.to_ivalue()};
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
                    StateDict::from_ivalue(copy_of(states[2]))};
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

// One background thread and at most one save in flight. `mutex` guards `job` (set while a save
// is queued or being written) and `failure`; the staging memory is touched only by the caller's
// thread, and only while no job is set.
struct DefaultCheckpointer::Background {
  struct Job {
    Checkpoint snapshot;  // its tensors alias the staging memory
    int64_t index = 0;
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
        owner.write_checkpoint(job->snapshot, job->index);
      } catch (const std::exception& e) {
        error = std::current_exception();
        what = e.what();
      } catch (...) {
        error = std::current_exception();
        what = "unknown exception";
      }
      if (error) {
        logger()->error("background save of checkpoint index={} failed: {}", job->index, what);
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

  void submit(Checkpoint snapshot, int64_t index) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      job = Job{std::move(snapshot), index};
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
      ((p + "log_level").c_str(),
       po::value<std::string>(&args.log_level)->default_value(defaults.log_level),
       "ckpt's log level: trace, debug, info, warning, error, critical, off")
      ((p + "async").c_str(),
       po::value<bool>(&args.async)->default_value(defaults.async, "false"),
       "save in the background: save() blocks only while it copies the state; one save in "
       "flight, its failure thrown by the next call");
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

namespace {

// Calls `found(index, path)` for every file under `load_dir` (recursively) named exactly
// `{file_prefix}_{N}.{file_ext}`.
template <class Found>
void for_each_checkpoint(const std::filesystem::path& load_dir, const std::string& file_prefix,
                         const std::string& file_ext, Found&& found) {
  std::error_code ec;
  if (!std::filesystem::is_directory(load_dir, ec)) return;
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
    if (index && it->is_regular_file(ec)) found(*index, it->path());
  }
}

}  // namespace

std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& load_dir,
                                                    const std::string& file_prefix,
                                                    const std::string& file_ext) {
  std::vector<std::pair<int64_t, std::filesystem::path>> found;
  for_each_checkpoint(load_dir, file_prefix, file_ext,
                      [&](int64_t index, const std::filesystem::path& path) {
                        found.emplace_back(index, path);
                      });
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
  // One pass keeping the best so far: linear in the number of files, no list, no sort.
  int64_t best_index = -1;
  std::filesystem::path best;
  for_each_checkpoint(load_dir, file_prefix, file_ext,
                      [&](int64_t index, const std::filesystem::path& path) {
                        if (index > best_index || (index == best_index && path < best)) {
                          best_index = index;
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

std::filesystem::path DefaultCheckpointer::write_checkpoint(const Checkpoint& checkpoint,
                                                            int64_t index) {
  ensure_directory(*storage_, args_.save_dir);
  const auto path = args_.save_dir / checkpoint_name(args_, index);
  const auto start = Clock::now();
  const uint64_t bytes = save_checkpoint_file(checkpoint, path, *storage_);
  logger()->info("saved checkpoint index={} to {} ({:.2f} MB in {:.1f} ms)", index, path.string(),
                 megabytes(bytes), elapsed_ms(start));
  return path;
}

std::optional<std::filesystem::path> DefaultCheckpointer::save(const Checkpoint& checkpoint,
                                                               int64_t index, bool force) {
  if (index < 0) {
    throw CheckpointError("invalid checkpoint index " + std::to_string(index) +
                          ": must be >= 0");
  }
  if (background_) background_->rethrow_failure();  // a finished failure, without waiting
  if (!args_.checkpoint || !(index % args_.period == 0 || force)) return std::nullopt;
  if (!background_) return write_checkpoint(checkpoint, index);

  wait();  // one save in flight: the staging memory is free once it is done
  const auto start = Clock::now();
  Checkpoint snapshot = background_->stager.snapshot(checkpoint);
  logger()->debug("copied checkpoint index={} for a background save ({:.2f} MB in {:.1f} ms)",
                  index, megabytes(background_->stager.capacity()), elapsed_ms(start));
  background_->submit(std::move(snapshot), index);
  return args_.save_dir / checkpoint_name(args_, index);
}

void DefaultCheckpointer::wait() {
  if (!background_) return;
  background_->wait_idle();
  background_->rethrow_failure();
}

uint64_t DefaultCheckpointer::staging_bytes() const noexcept {
  return background_ ? background_->stager.capacity() : 0;
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
  const uint64_t bytes = save_state_file(model_state, path, *storage_);
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
