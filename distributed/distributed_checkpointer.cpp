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
#include <limits>
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

// Rank 0's SaveHealth, as shared at wait(); empty: its checkpointer tracks none.
std::string encode_health(const std::optional<SaveHealth>& health) {
  if (!health) return {};
  StateDict state;
  state.insert_or_assign("failed_saves", health->failed_saves);
  state.insert_or_assign("failures_in_a_row", health->failures_in_a_row);
  state.insert_or_assign("last_durable", health->last_durable
                                             ? c10::IValue(health->last_durable->string())
                                             : c10::IValue());
  state.insert_or_assign("longest_unsaved_seconds", health->longest_unsaved_seconds);
  state.insert_or_assign("last_failure", health->last_failure);
  return to_bytes(state.to_ivalue());
}

std::optional<SaveHealth> decode_health(const std::string& bytes) {
  if (bytes.empty()) return std::nullopt;
  const StateDict state = StateDict::from_ivalue(from_bytes(bytes), "rank 0's save health");
  SaveHealth health;
  health.failed_saves = state.at("failed_saves").toInt();
  health.failures_in_a_row = state.at("failures_in_a_row").toInt();
  if (!state.at("last_durable").isNone()) {
    health.last_durable = std::filesystem::path(state.at("last_durable").toStringRef());
  }
  health.longest_unsaved_seconds = state.at("longest_unsaved_seconds").toDouble();
  health.last_failure = state.at("last_failure").toStringRef();
  return health;
}

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// The checkpoint operations, as the ranks name them to each other.
enum Operation : int64_t { kSetup = 1, kSave, kSaveModel, kStepDue, kWait, kLoad };

const char* kind_name(int64_t kind) {
  switch (kind) {
    case kSetup: return "setting up";
    case kSave: return "a save";
    case kSaveModel: return "a model save";
    case kStepDue: return "step_due";
    case kWait: return "wait";
    case kLoad: return "a load";
    default: return "an unknown operation";
  }
}

// Every exchange starts with a header: a constant, the operation's kind and number, the index of
// the collective within the operation, and a value (a byte count, or step_due's decision). A rank
// compares what it received with where it is before it uses anything, so a collective that paired
// with another operation's on another rank is an error, not data.
constexpr int64_t kHeaderMagic = 0x636b707448445200;  // "ckptHDR"
constexpr int64_t kHeaderSize = 5;
// What every receive buffer holds before the collective: a header that still holds it was never
// received (no value a rank sends is this).
constexpr int64_t kUnset = std::numeric_limits<int64_t>::min();

// The collectives of one checkpoint operation, each waited for with the timeout and checked. Any
// failure throws a CheckpointError naming the operation and the rank, and records in `broken` why
// the ranks are no longer in step.
class DistributedCollectives {
 public:
  DistributedCollectives(c10d::ProcessGroup& group, const DistributedCheckpointerOptions& options,
                         int rank, int world_size, int64_t kind, int64_t operation,
                         std::string what, std::string& broken)
      : group_(group),
        options_(options),
        rank_(rank),
        world_size_(world_size),
        kind_(kind),
        operation_(operation),
        what_(std::move(what)),
        broken_(broken) {}

  // Rank 0's `value` on every rank; the others check that it lies in [min, max].
  int64_t broadcast_value(int64_t value, int64_t min, int64_t max) {
    const int64_t index = ++collective_;
    std::vector<at::Tensor> header{rank_ == 0 ? header_of(index, value)
                                              : at::full({kHeaderSize}, kUnset, at::kLong)};
    run("broadcast", [&] { return group_.broadcast(header); });
    const int64_t received = check_header(header[0].data_ptr<int64_t>(), 0, index);
    if (received < min || received > max) {
      fail(fmt::format("rank 0 sent {} where {}..{} was expected", received, min, max));
    }
    return received;
  }

  // Rank 0's `bytes` on every rank.
  std::string broadcast(std::string bytes) {
    const auto n = broadcast_value(static_cast<int64_t>(bytes.size()), 0, kMaxBytes);
    std::vector<at::Tensor> data{allocate(n, "rank 0's data")};
    if (rank_ == 0) std::memcpy(data[0].data_ptr(), bytes.data(), bytes.size());
    ++collective_;
    run("broadcast", [&] { return group_.broadcast(data); });
    if (rank_ == 0) return bytes;
    return std::string(static_cast<const char*>(data[0].data_ptr()), static_cast<size_t>(n));
  }

  // Every rank's `mine`, in rank order, on every rank.
  std::vector<std::string> allgather(const std::string& mine) {
    const int64_t index = ++collective_;
    std::vector<at::Tensor> header_in{header_of(index, static_cast<int64_t>(mine.size()))};
    std::vector<std::vector<at::Tensor>> headers(1);
    for (int r = 0; r < world_size_; ++r) {
      headers[0].push_back(at::full({kHeaderSize}, kUnset, at::kLong));
    }
    run("allgather", [&] { return group_.allgather(headers, header_in); });
    std::vector<int64_t> sizes;
    int64_t longest = 1;
    for (int r = 0; r < world_size_; ++r) {
      sizes.push_back(check_header(headers[0][r].data_ptr<int64_t>(), r, index));
      if (sizes.back() < 0 || sizes.back() > kMaxBytes) {
        fail(fmt::format("rank {} sent the byte count {}", r, sizes.back()));
      }
      longest = std::max(longest, sizes.back());
    }
    std::vector<at::Tensor> data_in{allocate(longest, "this rank's data")};
    std::memcpy(data_in[0].data_ptr(), mine.data(), mine.size());
    std::vector<std::vector<at::Tensor>> data_out(1);
    for (int r = 0; r < world_size_; ++r) {
      data_out[0].push_back(allocate(longest, fmt::format("rank {}'s data", r)));
    }
    ++collective_;
    run("allgather", [&] { return group_.allgather(data_out, data_in); });
    std::vector<std::string> all;
    for (int r = 0; r < world_size_; ++r) {
      all.emplace_back(static_cast<const char*>(data_out[0][r].data_ptr()),
                       static_cast<size_t>(sizes[static_cast<size_t>(r)]));
    }
    return all;
  }

  // Throws the CheckpointError of a failed collective, and marks the ranks out of step.
  [[noreturn]] void fail(const std::string& problem) {
    const std::string message = fmt::format("rank {}: {}: {}", rank_, what_, problem);
    if (broken_.empty()) broken_ = message;
    throw CheckpointError(message);
  }

 private:
  // Far above any checkpoint, far below what would overflow a size.
  static constexpr int64_t kMaxBytes = int64_t{1} << 48;

  // Issues a collective and waits for it; whatever goes wrong in either becomes a CheckpointError.
  void run(const char* collective, const std::function<c10::intrusive_ptr<c10d::Work>()>& issue) {
    try {
      issue()->wait(options_.timeout);
    } catch (const std::exception& e) {
      const std::string reason = first_line(message_of(e));
      const double seconds = std::chrono::duration<double>(options_.timeout).count();
      std::string lowered = reason;
      std::transform(lowered.begin(), lowered.end(), lowered.begin(), ::tolower);
      if (lowered.find("timed out") != std::string::npos ||
          lowered.find("timeout") != std::string::npos) {
        fail(fmt::format("timed out after {} s waiting for the other ranks ({}) in {} {}: {}",
                         seconds, options_.timeout_name, collective, collective_, reason));
      }
      fail(fmt::format("lost contact with the other ranks in {} {}: {}", collective, collective_,
                       reason));
    }
  }

  at::Tensor header_of(int64_t index, int64_t value) const {
    at::Tensor header = at::empty({kHeaderSize}, at::kLong);
    int64_t* h = header.data_ptr<int64_t>();
    h[0] = kHeaderMagic;
    h[1] = kind_;
    h[2] = operation_;
    h[3] = index;
    h[4] = value;
    return header;
  }

  // The value in the header `from` sent, once it says that `from` is where this rank is.
  int64_t check_header(const int64_t* h, int from, int64_t index) {
    if (h[0] != kHeaderMagic) {
      fail(fmt::format(
          "the ranks are out of step: what rank {} sent in collective {} is not a checkpoint "
          "header ({}), so rank {} is in another exchange on this process group",
          from, index, h[0] == kUnset ? "nothing was received" : "unknown contents", from));
    }
    if (h[1] != kind_ || h[2] != operation_ || h[3] != index) {
      fail(fmt::format(
          "the ranks are out of step: rank {} is in collective {} of {} (checkpoint operation "
          "#{}), this rank in collective {} of {} (checkpoint operation #{})",
          from, h[3], kind_name(h[1]), h[2], index, kind_name(kind_), operation_));
    }
    return h[4];
  }

  at::Tensor allocate(int64_t bytes, const std::string& of) {
    try {
      return at::zeros({bytes}, at::kByte);
    } catch (const std::exception& e) {
      fail(fmt::format("cannot allocate {} bytes for {}: {}", bytes, of, first_line(message_of(e))));
    }
  }

  static std::string first_line(std::string s) {
    const auto newline = s.find('\n');
    if (newline != std::string::npos) s.resize(newline);
    return s;
  }

  c10d::ProcessGroup& group_;
  const DistributedCheckpointerOptions& options_;
  int rank_;
  int world_size_;
  int64_t kind_;
  int64_t operation_;
  std::string what_;
  std::string& broken_;
  int64_t collective_ = 0;  // collectives issued so far in this operation
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
  agree(kSetup, "setting up the checkpointer", [&](const std::vector<std::string>&) {
    if (!make_inner) throw CheckpointError("no checkpointer factory was given");
    inner_ = make_inner();
    if (!inner_) throw CheckpointError("the checkpointer factory returned no checkpointer");
    return std::string();
  });
}

DistributedCheckpointer::~DistributedCheckpointer() = default;

void DistributedCheckpointer::check_in_step(const std::string& what) const {
  if (broken_.empty()) return;
  throw CheckpointError(fmt::format(
      "rank {}: {}: not attempted: the ranks are out of step since an earlier checkpoint "
      "collective failed ({}); the process group cannot checkpoint any more",
      rank_, what, broken_));
}

std::string DistributedCheckpointer::agree(
    int64_t kind, const std::string& what,
    const std::function<std::string(const std::vector<std::string>&)>& on_rank0,
    const std::string* mine) {
  check_in_step(what);
  const int64_t number = ++operation_;
  DistributedCollectives collectives(*group_, options_, rank_, world_size_, kind, number,
                                     fmt::format("{} (checkpoint operation #{})", what, number),
                                     broken_);
  std::vector<std::string> gathered;
  if (mine) gathered = world_size_ > 1 ? collectives.allgather(*mine) : std::vector{*mine};
  std::exception_ptr failure;
  std::string outcome;
  if (rank_ == 0) {
    try {
      outcome = kOk + on_rank0(gathered);
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
  if (outcome.empty() || (outcome[0] != kOk && outcome[0] != kError)) {
    collectives.fail("rank 0's outcome is neither a success nor an error");
  }
  if (outcome[0] != kOk) {
    throw CheckpointError(fmt::format("rank {}: {} failed on rank 0: {}", rank_, what,
                                      outcome.size() == 1 ? "no reason given" : outcome.substr(1)));
  }
  return outcome.substr(1);
}

std::optional<std::filesystem::path> DistributedCheckpointer::save_gathered(
    const std::string& what, const Checkpoint& checkpoint,
    const std::function<std::optional<std::filesystem::path>(const Checkpoint&)>& write) {
  // Everyone's per-rank state travels to rank 0 before it writes, in the same operation.
  const std::string mine = to_bytes(checkpoint.trainer_backend_state.to_ivalue());
  const std::string answer = agree(
      kSave, what,
      [&](const std::vector<std::string>& states) {
        Checkpoint merged = checkpoint;
        c10::impl::GenericList rank_states(c10::AnyType::get());
        for (const std::string& bytes : states) rank_states.push_back(from_bytes(bytes));
        merged.trainer_backend_state.insert_or_assign(kRankStatesKey, rank_states);
        merged.metadata.insert_or_assign("world_size", static_cast<int64_t>(world_size_));
        throw_pending_failure();
        // An asynchronous inner checkpointer writes on in the background; its outcome is agreed
        // at the next collective.
        return encode_path(write(merged));
      },
      &mine);
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
  const std::string answer =
      agree(kSaveModel, fmt::format("saving the model of {}", index),
            [&](const std::vector<std::string>&) {
              throw_pending_failure();
              const std::optional<std::filesystem::path> path =
                  inner_->save_model(model_state, index);
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
  // two of agree(). Only a failure costs two more, carrying rank 0's reason.
  const std::string what = fmt::format("deciding whether to save at step {}", progress.global_step);
  check_in_step(what);
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
  const int64_t number = ++operation_;
  DistributedCollectives collectives(*group_, options_, rank_, world_size_, kStepDue, number,
                                     fmt::format("{} (checkpoint operation #{})", what, number),
                                     broken_);
  decision = collectives.broadcast_value(decision, -1, 1);
  if (decision < 0) reason = collectives.broadcast(std::move(reason));
  if (failure) std::rethrow_exception(failure);  // rank 0: its own error, unchanged
  if (decision < 0) {
    throw CheckpointError(fmt::format("rank {}: {} failed on rank 0: {}", rank_, what, reason));
  }
  return decision == 1;
}

void DistributedCheckpointer::wait() {
  const std::string health =
      agree(kWait, "waiting for the checkpoint writes", [&](const std::vector<std::string>&) {
        throw_pending_failure();
        inner_->wait();
        return encode_health(inner_->save_health());
      });
  // Every rank then knows whether the last save landed, and reports the same figures.
  if (rank_ != 0) health_ = decode_health(health);
}

std::optional<SaveHealth> DistributedCheckpointer::save_health() const {
  return rank_ == 0 ? inner_->save_health() : health_;
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
  const std::string what = "loading the checkpoint";
  const std::string bytes = agree(kLoad, what, [&](const std::vector<std::string>&) {
    return checkpoint_to_bytes(inner_->load());
  });
  Checkpoint checkpoint;
  try {
    checkpoint = checkpoint_from_bytes(bytes);
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("rank {}: {}: cannot read the checkpoint rank 0 sent: {}",
                                      rank_, what, message_of(e)));
  }
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
