#include <ckpt/distributed_checkpointer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>
#include <ckpt/serialization.h>

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <vector>

namespace ckpt {
namespace {

constexpr const char* kRankStatesKey = "ckpt_rank_states";
constexpr const char* kSavedWorldSizeKey = "ckpt_saved_world_size";

std::string to_bytes(const c10::IValue& value) {
  const std::vector<char> bytes = torch::jit::pickle_save(value);
  return std::string(bytes.begin(), bytes.end());
}

c10::IValue from_bytes(const std::string& bytes) {
  return torch::jit::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
}

std::string checkpoint_to_bytes(const Checkpoint& checkpoint) {
  return to_bytes(checkpoint_to_state(checkpoint).to_ivalue());
}

Checkpoint checkpoint_from_bytes(const std::string& bytes) {
  const std::string what = "the checkpoint from rank 0";
  return checkpoint_from_state(StateDict::from_ivalue(from_bytes(bytes), what), what);
}

// The outcome rank 0 shares: 'O' + payload on success, 'E' + message on failure.
constexpr char kOk = 'O';
constexpr char kError = 'E';

// A path or none, as shared by rank 0.
std::string encode_path(const std::optional<std::filesystem::path>& path) {
  return path ? "P" + path->string() : std::string("N");
}

std::optional<std::filesystem::path> decode_path(const std::string& bytes) {
  if (bytes.empty() || bytes[0] != 'P') return std::nullopt;
  return std::filesystem::path(bytes.substr(1));
}

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// The collectives, each waited for with the timeout; a failure names the operation and the rank.
class DistributedCollectives {
 public:
  DistributedCollectives(c10d::ProcessGroup& group, const DistributedCheckpointerOptions& options,
                         int rank, std::string what)
      : group_(group), options_(options), rank_(rank), what_(std::move(what)) {}

  void run(const c10::intrusive_ptr<c10d::Work>& work) {
    try {
      work->wait(options_.timeout);
    } catch (const std::exception& e) {
      const std::string reason = message_of(e);
      const double seconds = std::chrono::duration<double>(options_.timeout).count();
      std::string lowered = reason;
      std::transform(lowered.begin(), lowered.end(), lowered.begin(), ::tolower);
      if (lowered.find("timed out") != std::string::npos ||
          lowered.find("timeout") != std::string::npos) {
        throw CheckpointError(
            fmt::format("rank {}: {}: timed out after {} s waiting for the other ranks ({}): {}",
                        rank_, what_, seconds, options_.timeout_name, first_line(reason)));
      }
      throw CheckpointError(fmt::format("rank {}: {}: lost contact with the other ranks: {}", rank_,
                                        what_, first_line(reason)));
    }
  }

  // Rank 0's `bytes` on every rank.
  std::string broadcast(std::string bytes) {
    std::vector<at::Tensor> size{at::empty({1}, at::kLong)};
    size[0].fill_(static_cast<int64_t>(bytes.size()));
    run(group_.broadcast(size));
    const int64_t n = size[0].item<int64_t>();
    std::vector<at::Tensor> data{at::empty({n}, at::kByte)};
    if (rank_ == 0) std::memcpy(data[0].data_ptr(), bytes.data(), bytes.size());
    run(group_.broadcast(data));
    return std::string(static_cast<const char*>(data[0].data_ptr()), static_cast<size_t>(n));
  }

  // Every rank's `mine`, in rank order, on every rank.
  std::vector<std::string> allgather(const std::string& mine, int world_size) {
    std::vector<at::Tensor> size_in{at::full({1}, static_cast<int64_t>(mine.size()), at::kLong)};
    std::vector<std::vector<at::Tensor>> size_out(1);
    for (int r = 0; r < world_size; ++r) size_out[0].push_back(at::empty({1}, at::kLong));
    run(group_.allgather(size_out, size_in));
    int64_t longest = 1;
    for (const auto& s : size_out[0]) longest = std::max(longest, s.item<int64_t>());
    std::vector<at::Tensor> data_in{at::zeros({longest}, at::kByte)};
    std::memcpy(data_in[0].data_ptr(), mine.data(), mine.size());
    std::vector<std::vector<at::Tensor>> data_out(1);
    for (int r = 0; r < world_size; ++r) data_out[0].push_back(at::empty({longest}, at::kByte));
    run(group_.allgather(data_out, data_in));
    std::vector<std::string> all;
    for (int r = 0; r < world_size; ++r) {
      all.emplace_back(static_cast<const char*>(data_out[0][r].data_ptr()),
                       static_cast<size_t>(size_out[0][r].item<int64_t>()));
    }
    return all;
  }

 private:
  static std::string first_line(std::string s) {
    const auto newline = s.find('\n');
    if (newline != std::string::npos) s.resize(newline);
    return s;
  }

  c10d::ProcessGroup& group_;
  const DistributedCheckpointerOptions& options_;
  int rank_;
  std::string what_;
};

}  // namespace

DistributedCheckpointer::DistributedCheckpointer(c10::intrusive_ptr<c10d::ProcessGroup> group,
                                                 const Factory& make_inner,
                                                 DistributedCheckpointerOptions options)
    : group_(std::move(group)), options_(options) {
  if (!group_) throw std::invalid_argument("DistributedCheckpointer: no process group");
  if (options_.timeout.count() <= 0) {
    throw std::invalid_argument("DistributedCheckpointer: invalid timeout " +
                                std::to_string(options_.timeout.count()) + " ms: must be > 0");
  }
  rank_ = group_->getRank();
  world_size_ = group_->getSize();
  agree("setting up the checkpointer", [&] {
    if (!make_inner) throw CheckpointError("no checkpointer factory was given");
    inner_ = make_inner();
    if (!inner_) throw CheckpointError("the checkpointer factory returned no checkpointer");
    return std::string();
  });
}

DistributedCheckpointer::~DistributedCheckpointer() = default;

std::string DistributedCheckpointer::agree(const std::string& what,
                                           const std::function<std::string()>& on_rank0) {
  const std::string operation = fmt::format("{} (checkpoint operation #{})", what, ++operation_);
  DistributedCollectives collectives(*group_, options_, rank_, operation);
  std::exception_ptr failure;
  std::string outcome;
  if (rank_ == 0) {
    try {
      outcome = kOk + on_rank0();
    } catch (const std::exception& e) {
      failure = std::current_exception();
      outcome = kError + message_of(e);
    } catch (...) {
      failure = std::current_exception();
      outcome = std::string(1, kError) + "unknown error";
    }
  }
  if (world_size_ > 1) outcome = collectives.broadcast(std::move(outcome));
  if (failure) std::rethrow_exception(failure);  // rank 0: its own error, unchanged
  if (outcome.empty() || outcome[0] != kOk) {
    throw CheckpointError(fmt::format("rank {}: {} failed on rank 0: {}", rank_, what,
                                      outcome.empty() ? "no reason given" : outcome.substr(1)));
  }
  return outcome.substr(1);
}

std::optional<std::filesystem::path> DistributedCheckpointer::save_gathered(
    const std::string& what, const Checkpoint& checkpoint,
    const std::function<std::optional<std::filesystem::path>(const Checkpoint&)>& write) {
  // Everyone's per-rank state travels to rank 0 before it writes.
  std::vector<std::string> states;
  if (world_size_ > 1) {
    DistributedCollectives collectives(*group_, options_, rank_,
                                       fmt::format("{} (gathering the ranks' states)", what));
    states =
        collectives.allgather(to_bytes(checkpoint.trainer_backend_state.to_ivalue()), world_size_);
  }
  const std::string answer = agree(what, [&] {
    Checkpoint merged = checkpoint;
    c10::impl::GenericList rank_states(c10::AnyType::get());
    if (world_size_ == 1) {
      rank_states.push_back(checkpoint.trainer_backend_state.to_ivalue());
    } else {
      for (const std::string& bytes : states) rank_states.push_back(from_bytes(bytes));
    }
    merged.trainer_backend_state.insert_or_assign(kRankStatesKey, rank_states);
    merged.metadata.insert_or_assign("world_size", static_cast<int64_t>(world_size_));
    throw_pending_failure();
    // An asynchronous inner checkpointer writes on in the background; its outcome is agreed at
    // the next collective.
    return encode_path(write(merged));
  });
  return decode_path(answer);
}

std::optional<std::filesystem::path> DistributedCheckpointer::save(const Checkpoint& checkpoint,
                                                                   int64_t index, bool force) {
  return save_gathered(
      fmt::format("saving checkpoint {}", index), checkpoint,
      [&](const Checkpoint& merged) { return inner_->save(merged, index, force); });
}

std::optional<std::filesystem::path> DistributedCheckpointer::save_step(
    const Checkpoint& checkpoint, const TrainingProgress& progress, bool force) {
  return save_gathered(
      fmt::format("saving the checkpoint of step {}", progress.global_step), checkpoint,
      [&](const Checkpoint& merged) { return inner_->save_step(merged, progress, force); });
}

std::optional<std::filesystem::path> DistributedCheckpointer::save_model(
    const StateDict& model_state, int64_t index) {
  const std::string answer = agree(fmt::format("saving the model of {}", index), [&] {
    throw_pending_failure();
    const std::optional<std::filesystem::path> path = inner_->save_model(model_state, index);
    if (path) inner_->wait();
    return encode_path(path);
  });
  return decode_path(answer);
}

void DistributedCheckpointer::throw_pending_failure() {
  if (!pending_failure_) return;
  std::exception_ptr failure;
  std::swap(failure, pending_failure_);
  std::rethrow_exception(failure);
}

bool DistributedCheckpointer::step_due(const TrainingProgress& progress) {
  if (world_size_ == 1) return inner_->step_due(progress);
  // Asked after every step: one broadcast of rank 0's answer (1 due, 0 not, -1 failed), not the
  // two of agree(). Only a failure costs a second one, carrying rank 0's reason.
  const std::string what = fmt::format("deciding whether to save at step {}", progress.global_step);
  std::exception_ptr failure;
  std::string reason;
  int64_t decision = 0;
  if (rank_ == 0) {
    try {
      // A background save that failed since the last collective is reported here, to everyone.
      throw_pending_failure();
      inner_->wait_staged();  // staged already (the trainer waited before its step): no wait
      decision = inner_->step_due(progress) ? 1 : 0;
    } catch (const std::exception& e) {
      failure = std::current_exception();
      reason = message_of(e);
      decision = -1;
    } catch (...) {
      failure = std::current_exception();
      reason = "unknown error";
      decision = -1;
    }
  }
  DistributedCollectives collectives(
      *group_, options_, rank_, fmt::format("{} (checkpoint operation #{})", what, ++operation_));
  std::vector<at::Tensor> answer{at::full({1}, decision, at::kLong)};
  collectives.run(group_->broadcast(answer));
  decision = answer[0].item<int64_t>();
  if (decision < 0) reason = collectives.broadcast(std::move(reason));
  if (failure) std::rethrow_exception(failure);  // rank 0: its own error, unchanged
  if (decision < 0) {
    throw CheckpointError(fmt::format("rank {}: {} failed on rank 0: {}", rank_, what, reason));
  }
  return decision == 1;
}

void DistributedCheckpointer::wait() {
  agree("waiting for the checkpoint writes", [&] {
    throw_pending_failure();
    inner_->wait();
    return std::string();
  });
}

void DistributedCheckpointer::wait_staged() {
  if (rank_ != 0) return;  // the other ranks' states were serialized in save()
  if (world_size_ == 1) return inner_->wait_staged();  // nobody to keep in step
  try {
    inner_->wait_staged();
  } catch (...) {
    // Thrown on rank 0 alone it would leave the others waiting in their next collective.
    if (!pending_failure_) pending_failure_ = std::current_exception();
  }
}

Checkpoint DistributedCheckpointer::load() {
  Checkpoint checkpoint = checkpoint_from_bytes(
      agree("loading the checkpoint", [&] { return checkpoint_to_bytes(inner_->load()); }));
  StateDict& backend = checkpoint.trainer_backend_state;
  if (backend.empty()) return checkpoint;  // a fresh start, or weights only
  const bool has_list = backend.contains(kRankStatesKey) && backend.at(kRankStatesKey).isList();
  const int64_t saved_world_size =
      has_list ? static_cast<int64_t>(backend.at(kRankStatesKey).toListRef().size()) : 1;
  if (has_list && saved_world_size == world_size_) {
    backend =
        StateDict::from_ivalue(backend.at(kRankStatesKey).toListRef()[static_cast<size_t>(rank_)],
                               fmt::format("trainer_backend_state.{}[{}]", kRankStatesKey, rank_));
    return checkpoint;
  }
  if (!has_list && world_size_ == 1) return checkpoint;  // a single process resuming as one rank
  if (rank_ == 0) {
    logger()->warn(
        "the checkpoint was saved by {} rank{} and training resumes with {}: every rank starts "
        "from rank 0's trainer_backend_state (with '{}' = {}), so per-rank state such as the "
        "random generator and the data position is re-derived",
        saved_world_size, saved_world_size == 1 ? "" : "s", world_size_, kSavedWorldSizeKey,
        saved_world_size);
  }
  backend.erase(kRankStatesKey);
  backend.insert_or_assign(kSavedWorldSizeKey, saved_world_size);
  return checkpoint;
}

}  // namespace ckpt
