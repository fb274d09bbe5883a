#pragma once
// Asynchronous saves: a snapshot of the state in reused staging memory, written by one background
// thread, one save in flight.

#include <ckpt/checkpoint.h>
#include <ckpt/checkpoint_names.h>

#include <c10/core/Storage.h>

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

namespace ckpt::detail {

/// Copies a checkpoint's tensors into one reused staging buffer: a snapshot that later in-place
/// updates of the live tensors cannot reach. Each distinct storage is copied once, whole, so views
/// and shared storages come out as they went in and the file is byte for byte the one a
/// synchronous save writes.
class Stager {
 public:
  /// The copy; its tensors alias the staging memory until the next snapshot().
  Checkpoint snapshot(const Checkpoint& checkpoint);
  /// Bytes of staging memory: the largest checkpoint so far (each storage aligned to 64 bytes).
  uint64_t capacity() const noexcept { return capacity_; }

 private:
  struct Staged {
    uint64_t offset = 0;
    c10::Storage storage;
  };
  void plan(const c10::IValue& value, uint64_t& needed);
  c10::IValue copy_of(const c10::IValue& value);

  std::unique_ptr<char, void (*)(void*)> staging_{nullptr, &std::free};
  uint64_t capacity_ = 0;
  std::unordered_map<c10::StorageImpl*, Staged> storages_;
};

/// One background thread and at most one save in flight. A failure is kept until rethrown once.
/// Thread safety: submit, wait_idle and rethrow_failure from one thread (the checkpointer's).
class BackgroundWriter {
 public:
  using Write = std::function<void(const Checkpoint& snapshot, const CheckpointName& name)>;
  explicit BackgroundWriter(Write write);
  /// Waits for the save in flight, then stops the thread.
  ~BackgroundWriter();

  /// Snapshots `checkpoint` and queues its write. Call only when idle (wait_idle).
  void submit(const Checkpoint& checkpoint, const CheckpointName& name);
  /// Returns once nothing is in flight.
  void wait_idle();
  /// Throws a failure not yet reported, once.
  void rethrow_failure();
  /// The message of a failure not yet reported (empty if none).
  std::string pending_failure() const;

  uint64_t staging_bytes() const noexcept { return stager_.capacity(); }

 private:
  struct Job {
    Checkpoint snapshot;  // its tensors alias the staging memory
    CheckpointName name;
  };
  void run();

  Write write_;
  Stager stager_;             // touched by the caller's thread only, and only while no job is set
  mutable std::mutex mutex_;  // guards job_, failure_, failure_what_, stop_
  std::condition_variable changed_;
  std::optional<Job> job_;
  std::exception_ptr failure_;
  std::string failure_what_;
  bool stop_ = false;
  std::thread worker_;  // last: starts once everything it uses exists
};

}  // namespace ckpt::detail
