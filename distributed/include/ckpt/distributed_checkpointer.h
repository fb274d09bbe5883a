#pragma once

#include <ckpt/abstract_checkpointer.h>
#include <ckpt/checkpoint.h>
#include <ckpt/state_dict.h>

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace c10d {
class ProcessGroup;
}  // namespace c10d

namespace ckpt {

/// Options of DistributedCheckpointer.
struct DistributedCheckpointerOptions {
  /// How long a rank waits for the others in one checkpoint operation (e.g. for rank 0 to finish
  /// writing) before it gives up with a CheckpointError that says so. Default: 300 s.
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  /// How errors name the timeout, e.g. the flag that sets it ("--dist.timeout").
  std::string timeout_name = "DistributedCheckpointerOptions::timeout";
};

/// Checkpointing for data-parallel training: wraps the checkpointer of rank 0 so that every rank
/// of a c10d process group (e.g. `c10d::ProcessGroupGloo`) takes part in each save and load, and
/// only rank 0 touches storage.
///
/// - The inner checkpointer is constructed on rank 0 only (`make_inner`), so deletion
///   (`delete_existing_checkpoints`), retention and discovery happen there once, never racing.
/// - save/save_step: every rank passes its own Checkpoint. Rank 0 writes its own, whose
///   `trainer_backend_state` also holds every rank's `trainer_backend_state`, in rank order, as
///   the list `ckpt_rank_states` (per-rank state such as the random generator and the data
///   position), and `ckpt_metadata.world_size`. The replicated parts (module, trainer, registered
///   state, hyperparameters) are taken from rank 0. Every rank returns with the path rank 0
///   wrote, once rank 0's inner save() returned: with a synchronous inner checkpointer the file is
///   durable then; with an asynchronous one (`async`) the write goes on in the background while
///   every rank trains on.
/// - Asynchronous saves: the outcome of a background save is agreed at the next point where the
///   ranks already meet for checkpointing: the next step_due(), save(), save_step(), save_model()
///   or wait(). A failed background save is thrown there on every rank with rank 0's reason, at
///   most one save later, without an extra collective per step. wait() agrees on the last save:
///   call it (the Trainer does) before exporting or exiting.
/// - A failure on rank 0 is thrown on every rank as a CheckpointError carrying rank 0's reason; a
///   rank that gets no answer within `options.timeout` (rank 0 stuck, or gone) throws one that
///   says so. No rank waits forever.
/// - Every collective is checked before its result is used: it must have completed, and what each
///   rank sent must belong to the same operation and the same step of it (each exchange starts
///   with a small header naming both). A failed, timed-out or mismatched collective throws a
///   CheckpointError naming the operation and the rank, and leaves the checkpointer refusing any
///   later operation with a CheckpointError (the ranks are no longer in step); never another
///   exception type, and never a result built from what another operation sent.
/// - wait_staged() is not a collective: rank 0 waits for its inner checkpointer's copy of the state
///   (the other ranks' tensors were serialized during save()), and keeps a failure for the next
///   collective instead of throwing it on rank 0 alone.
/// - load: rank 0 loads (inner `load()`), and every rank gets the same checkpoint, with its own
///   rank's entry of `ckpt_rank_states` as its `trainer_backend_state`. When the checkpoint was
///   written by a different number of ranks (or by a single process without the list), a warning
///   is logged and every rank gets rank 0's `trainer_backend_state` with the key
///   `ckpt_saved_world_size` added: the backend must re-derive its per-rank state from it.
/// - step_due is decided by rank 0 and shared, so all ranks agree on when to save.
///
/// Every member function is a collective: all ranks must call it, in the same order, like any
/// c10d collective. The checkpoint travels from rank 0 to the others through the process group
/// at load time (one broadcast of the serialized checkpoint).
///
///   auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
///   auto checkpointer = std::make_shared<ckpt::DistributedCheckpointer>(group, [&] {
///     return std::make_shared<ckpt::DefaultCheckpointer>(args);  // runs on rank 0 only
///   });
///   Trainer trainer(backend, module, trainer_args, checkpointer);
///
/// Thread safety: one thread at a time, and that thread must not run other collectives on the
/// same process group concurrently.
class DistributedCheckpointer final : public AbstractCheckpointer {
 public:
  using Factory = std::function<std::shared_ptr<AbstractCheckpointer>()>;

  /// Collective. Calls `make_inner` on rank 0 (other ranks never call it). If it throws or
  /// returns null, every rank throws a CheckpointError with rank 0's reason. Throws
  /// std::invalid_argument for a null group or a non-positive timeout.
  DistributedCheckpointer(c10::intrusive_ptr<c10d::ProcessGroup> group, const Factory& make_inner,
                          DistributedCheckpointerOptions options = {});
  ~DistributedCheckpointer() override;

  std::optional<std::filesystem::path> save(const Checkpoint& checkpoint, int64_t index,
                                            bool force = false) override;
  /// Rank 0 saves its `model_state`; the other ranks' are not used (they are replicas).
  std::optional<std::filesystem::path> save_model(const StateDict& model_state,
                                                  int64_t index) override;
  bool step_due(const TrainingProgress& progress) override;
  std::optional<std::filesystem::path> save_step(const Checkpoint& checkpoint,
                                                 const TrainingProgress& progress,
                                                 bool force = false) override;
  Checkpoint load() override;
  void wait() override;
  void wait_staged() override;
  /// Rank 0: its inner checkpointer's. Other ranks: rank 0's as of the last wait().
  std::optional<SaveHealth> save_health() const override;

  int rank() const noexcept { return rank_; }
  int world_size() const noexcept { return world_size_; }
  /// The inner checkpointer on rank 0; null on every other rank.
  AbstractCheckpointer* inner() const noexcept { return inner_.get(); }

 private:
  // One checkpoint operation, as a collective: gathers every rank's `mine` (when given) to rank
  // 0, runs `on_rank0` there with them (in rank order), and shares its outcome: its bytes on
  // success, or its error, which every rank then throws. `kind` (an Operation of the .cpp) and
  // `what` name the operation, for the other ranks and in errors.
  std::string agree(int64_t kind, const std::string& what,
                    const std::function<std::string(const std::vector<std::string>&)>& on_rank0,
                    const std::string* mine = nullptr);
  std::optional<std::filesystem::path> save_gathered(
      const std::string& what, const Checkpoint& checkpoint,
      const std::function<std::optional<std::filesystem::path>(const Checkpoint&)>& write);
  // Throws instead of starting operation `what` once a collective has failed (see broken_).
  void check_in_step(const std::string& what) const;
  void throw_pending_failure();

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  DistributedCheckpointerOptions options_;
  int rank_ = 0;
  int world_size_ = 1;
  std::shared_ptr<AbstractCheckpointer> inner_;
  int64_t operation_ = 0;  // checkpoint operations so far; every rank counts the same
  // Why the ranks are no longer in step: a collective failed, timed out or did not match the
  // other ranks'. Every later operation is refused rather than started, since its collectives
  // would pair with the wrong ones on the other ranks. Empty while they are in step.
  std::string broken_;
  // Rank 0: a failure seen by wait_staged(), thrown on every rank at the next collective.
  std::exception_ptr pending_failure_;
  // Other ranks: rank 0's save health, as shared at the last wait().
  std::optional<SaveHealth> health_;
};

}  // namespace ckpt
