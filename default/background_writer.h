#pragma once
// Asynchronous saves: a snapshot of the state in reused staging memory, written by one background
// thread, one save in flight. The copy into staging memory runs before submit() returns or, when
// staging in the background, on the writer's thread while the caller goes on until wait_staged().

#include <ckpt/checkpoint.h>
#include <ckpt/checkpoint_names.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>
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
#include <vector>

namespace ckpt::detail {

/// Copies a checkpoint's tensors into one reused staging buffer: a snapshot that later in-place
/// updates of the live tensors cannot reach. Each distinct storage is copied once, whole, so views
/// and shared storages come out as they went in and the file is byte for byte the one a
/// synchronous save writes.
class Stager {
 public:
  /// One contiguous piece of a live storage and where it goes in the staging memory.
  struct Copy {
    const char* from;
    char* to;
    std::size_t size;
  };
  /// A snapshot whose copy may be unfinished: its tensors alias the staging memory (until the next
  /// snapshot()) and hold the right bytes once every Copy in `deferred` has run. `sources` keeps
  /// the live storages those copies read alive until then.
  struct Snapshot {
    Checkpoint checkpoint;
    std::vector<Copy> deferred;
    std::vector<c10::Storage> sources;
    /// One per device with tensors in the checkpoint: recorded on its current stream after the
    /// copies of its storages into the staging memory, which run there asynchronously. Those
    /// bytes are there once every event has completed (wait_for_devices).
    std::vector<c10::Event> device_copies;
  };

  /// Builds the snapshot of `checkpoint` and copies its tensors. With `defer`, copies only those of
  /// `registered_state` (user objects, which may change them at any time) and leaves the rest,
  /// which the trainer keeps unchanged until wait_staged(), in `deferred`. Device tensors' copies
  /// are issued on their devices' current streams either way (device_copies): without `defer`,
  /// snapshot() waits for them; with it, the writer's thread does. The staging memory is pinned
  /// when a storage is on CUDA, so those copies run asynchronously; pageable otherwise.
  Snapshot snapshot(const Checkpoint& checkpoint, bool defer);
  /// Runs copies, in chunks, on LibTorch's intra-op threads.
  static void copy(const std::vector<Copy>& copies);
  /// Waits until the device copies of `snapshot` have completed, then forgets them.
  static void wait_for_devices(Snapshot& snapshot);
  /// Bytes of staging memory: the largest checkpoint so far (each storage aligned to 64 bytes).
  uint64_t capacity() const noexcept { return capacity_; }

 private:
  struct Staged {
    uint64_t offset = 0;
    bool now = true;       // copied before snapshot() returns
    c10::Storage source;   // the live storage
    c10::Storage storage;  // its copy, in the staging memory
  };
  void plan(const c10::IValue& value, bool now, uint64_t& needed);
  c10::IValue copy_of(const c10::IValue& value);

  void allocate(uint64_t needed, bool pinned);
  std::unique_ptr<char, void (*)(void*)> staging_{nullptr, &std::free};
  at::Tensor pinned_;  // the staging memory instead, page-locked, when a CUDA state needs it
  char* base_ = nullptr;
  uint64_t capacity_ = 0;
  std::unordered_map<c10::StorageImpl*, Staged> storages_;
};

/// One background thread and at most one save in flight, which passes two completions: staged (it
/// no longer reads the live tensors) and durable (written). A failure is kept until rethrown once.
/// Thread safety: every member from one thread (the checkpointer's).
class BackgroundWriter {
 public:
  /// Writes a snapshot; `must_land` is submit()'s, passed through. A failure it throws is kept
  /// for rethrow_failure().
  using Write = std::function<void(const Checkpoint& snapshot, const CheckpointName& name,
                                   bool must_land)>;
  explicit BackgroundWriter(Write write);
  /// Waits for the save in flight, then stops the thread.
  ~BackgroundWriter();

  /// Snapshots `checkpoint` and queues its write. With `stage_in_background`, the copy of all but
  /// its registered state runs on the writer's thread: the caller must not change those tensors
  /// until wait_staged() returns. Call only when idle (wait_idle).
  void submit(const Checkpoint& checkpoint, const CheckpointName& name, bool stage_in_background,
              bool must_land);
  /// Returns once the save in flight, if any, no longer reads the live tensors.
  void wait_staged();
  /// Returns once nothing is in flight.
  void wait_idle();
  /// Throws a failure not yet reported, once.
  void rethrow_failure();
  /// The message of a failure not yet reported (empty if none).
  std::string pending_failure() const;

  uint64_t staging_bytes() const noexcept { return stager_.capacity(); }

 private:
  struct Job {
    Stager::Snapshot snapshot;
    CheckpointName name;
    bool must_land = false;
  };
  void run();

  Write write_;
  Stager stager_;             // touched by the caller's thread only, and only while no job is set
  mutable std::mutex mutex_;  // guards job_, staging_, failure_, failure_what_, stop_
  std::condition_variable changed_;
  std::optional<Job> job_;
  bool staging_ = false;  // job_'s deferred copies have not all run
  std::exception_ptr failure_;
  std::string failure_what_;
  bool stop_ = false;
  std::thread worker_;  // last: starts once everything it uses exists
};

}  // namespace ckpt::detail
