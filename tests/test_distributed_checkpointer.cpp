// DistributedCheckpointer over a real c10d::ProcessGroupGloo: ranks are threads of this process
// meeting through an in-memory c10d::HashStore, with an in-memory inner checkpointer on rank 0.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/distributed_checkpointer.h>
#include <ckpt/memory_storage.h>
#include <ckpt/serialization.h>
#include <ckpt/state_dict.h>

#include "log_capture.h"
#include "torch_compat.h"

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using ckpt::Checkpoint;
using ckpt::CheckpointError;
using ckpt::DistributedCheckpointer;
using ckpt::StateDict;

namespace {

// Keeps what it is given in memory and records every call.
class MemoryCheckpointer final : public ckpt::AbstractCheckpointer {
 public:
  std::optional<std::filesystem::path> save(const Checkpoint& checkpoint, int64_t index,
                                            bool force) override {
    calls.push_back("save " + std::to_string(index) + (force ? " force" : ""));
    if (!fail_with.empty()) throw CheckpointError(fail_with, "mem/ckpt_" + std::to_string(index));
    saved.push_back(checkpoint);
    return std::filesystem::path("mem/ckpt_" + std::to_string(index));
  }
  std::optional<std::filesystem::path> save_model(const StateDict& state, int64_t index) override {
    calls.push_back("save_model " + std::to_string(index));
    model = state;
    return std::filesystem::path("mem/model_" + std::to_string(index));
  }
  bool step_due(const ckpt::TrainingProgress& progress) override {
    calls.push_back("step_due " + std::to_string(progress.global_step));
    return progress.global_step % 3 == 0;
  }
  Checkpoint load() override {
    calls.push_back("load");
    return to_load;
  }
  void wait() override { calls.push_back("wait"); }

  std::vector<std::string> calls;
  std::vector<Checkpoint> saved;
  StateDict model;
  Checkpoint to_load;
  std::string fail_with;
};

StateDict backend_state(int rank) {
  StateDict state;
  state.insert_or_assign("global_step_completed", int64_t{7});
  state.insert_or_assign("rank", static_cast<int64_t>(rank));
  state.insert_or_assign("rng_state", torch::full({4}, rank + 1, torch::kByte));
  return state;
}

Checkpoint checkpoint_of(int rank) {
  Checkpoint c;
  c.module_interface_state.insert_or_assign("w", torch::arange(6, torch::kFloat) * (rank + 1));
  c.trainer_state.insert_or_assign("last_epoch", int64_t{2});
  c.trainer_backend_state = backend_state(rank);
  return c;
}

struct RankOutcome {
  std::exception_ptr error;
};

bool is_checkpoint_error(const std::exception_ptr& error) {
  try {
    if (error) std::rethrow_exception(error);
  } catch (const CheckpointError&) {
    return true;
  } catch (...) {
  }
  return false;
}

std::string message_of(const std::exception_ptr& error) {
  try {
    if (error) std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// LibTorch 2.x records every collective in a FlightRecorder shared by all process groups of the
// process, and its map is not safe for several groups enqueueing at once from different threads:
// run 10 times beside two busy loops on the 2.11 wheel, the suite crashed in 4
// (std::_Rb_tree_insert_and_rebalance in c10d::FlightRecorder::recordWithResetEnabled, called
// from ProcessGroupGloo::enqueue; a core dump's backtrace). A real job has one group per process;
// these tests run the ranks as threads, so they turn the recorder off (a buffer of 0 entries)
// before any group exists. LibTorch 1.13 has no recorder and ignores the variables.
const bool kFlightRecorderOff = [] {
  ::setenv("TORCH_FR_BUFFER_SIZE", "0", 1);
  ::setenv("TORCH_NCCL_TRACE_BUFFER_SIZE", "0", 1);
  return true;
}();

using Wrap = std::function<c10::intrusive_ptr<c10d::ProcessGroup>(
    int, c10::intrusive_ptr<c10d::ProcessGroup>)>;

// Runs `body` on `world` threads, one per rank, each with its own ProcessGroupGloo (passed through
// `wrap` when given, which then owns it); returns how each ended. `group_timeout` bounds every
// Gloo operation. `body` must not use Boost.Test's assertions, which are not thread-safe (a
// check on two ranks at once can corrupt the framework's log strings): it records, and the test
// checks after the ranks have ended.
// Every rank's group is connected before any rank starts `body`: a rank that dies at once (a test
// of a lost peer) would otherwise close its connections while another rank's ProcessGroupGloo
// constructor is still connecting to it, which fails that constructor with Gloo's error, outside
// anything ckpt does. (Found running the suite 60 times beside two busy loops.)
// Writes to shared results from `body` must be to separate objects: a std::vector<bool>'s
// elements share bytes, and two ranks writing theirs at once lose one of the writes.
std::vector<RankOutcome> run_ranks(
    int world, const std::function<void(int, c10::intrusive_ptr<c10d::ProcessGroup>)>& body,
    std::chrono::milliseconds group_timeout = 10s, const Wrap& wrap = nullptr) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<RankOutcome> outcomes(world);
  std::vector<std::thread> threads;
  std::mutex mutex;
  std::condition_variable changed;
  int connected = 0;

  const auto all_connected = [&] {
    std::unique_lock<std::mutex> lock(mutex);
    ++connected;
    changed.notify_all();
    changed.wait(lock, [&] { return connected >= world; });
  };
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      bool counted = false;
      try {
        auto options = c10d::ProcessGroupGloo::Options::create(group_timeout);
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        c10::intrusive_ptr<c10d::ProcessGroup> group = ckpt::compat::gloo_process_group(
            store, rank, world,
            c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options));
        counted = true;
        all_connected();
        if (wrap) group = wrap(rank, std::move(group));
        body(rank, std::move(group));
      } catch (...) {
        outcomes[rank].error = std::current_exception();
        if (!counted) all_connected();  // a rank whose group failed must not hold up the others
      }
    });
  }
  for (auto& t : threads) t.join();
  return outcomes;
}

// MemoryStorage whose commits wait for release() (held) or throw (failing).
class SlowOrFailingStorage final : public ckpt::StorageWrapper {
 public:
  SlowOrFailingStorage() : StorageWrapper(std::make_shared<ckpt::MemoryStorage>()) {}

  std::unique_ptr<ckpt::WritableFile> create(const std::filesystem::path& path) override {
    return std::make_unique<File>(*this, StorageWrapper::create(path), path);
  }
  void hold() {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ = true;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ = false;
    changed_.notify_all();
  }
  void wait_for_commit() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return committing_ > 0; });
  }
  std::atomic<bool> failing{false};

 private:
  class File final : public ckpt::WritableFile {
   public:
    File(SlowOrFailingStorage& owner, std::unique_ptr<ckpt::WritableFile> inner,
         std::filesystem::path path)
        : owner_(owner), inner_(std::move(inner)), path_(std::move(path)) {}
    void append(const void* data, std::size_t size) override { inner_->append(data, size); }
    void commit() override {
      if (owner_.failing) {
        throw CheckpointError("injected: the store went away writing " + path_.string(), path_);
      }
      {
        std::unique_lock<std::mutex> lock(owner_.mutex_);
        ++owner_.committing_;
        owner_.changed_.notify_all();
        owner_.changed_.wait(lock, [&] { return !owner_.held_; });
      }
      inner_->commit();
    }

   private:
    SlowOrFailingStorage& owner_;
    std::unique_ptr<ckpt::WritableFile> inner_;
    std::filesystem::path path_;
  };

  std::mutex mutex_;
  std::condition_variable changed_;
  bool held_ = false;
  int committing_ = 0;
};

// A DefaultCheckpointer that saves in the background, copy included, into `storage`.
std::shared_ptr<ckpt::AbstractCheckpointer> async_inner(std::shared_ptr<ckpt::Storage> storage) {
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = "ck";
  args.async = true;
  args.stage_in_background = true;
  args.latest_pointer = false;
  return std::make_shared<ckpt::DefaultCheckpointer>(args, std::move(storage));
}


// How a rank leaves the job in the middle of a checkpoint operation.
enum class Death { kKilled, kStalled };

// Forwards to a rank's ProcessGroupGloo until its `die_at`-th collective (counting from 1), where
// the rank dies before issuing it: killed, its connections close at once (its Gloo group is
// destroyed, as when a process dies); stalled, it first sleeps for `stall`, as a rank stuck in a
// long step would. Then it throws, which ends the rank. `died` is when it began to die.
class DyingGroup final : public c10d::ProcessGroup {
 public:
  DyingGroup(c10::intrusive_ptr<c10d::ProcessGroup> inner, int die_at, Death death,
             std::chrono::milliseconds stall, std::chrono::steady_clock::time_point& died)
      : ProcessGroup(inner->getRank(), inner->getSize()),
        inner_(std::move(inner)),
        die_at_(die_at),
        death_(death),
        stall_(stall),
        died_(died) {}

  const std::string getBackendName() const override { return "dying gloo"; }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& options) override {
    maybe_die();
    return inner_->broadcast(tensors, options);
  }

  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& options) override {
    maybe_die();
    return inner_->allgather(outputs, inputs, options);
  }

 private:
  void maybe_die() {
    if (++collectives_ != die_at_) return;
    died_ = std::chrono::steady_clock::now();
    if (death_ == Death::kStalled) std::this_thread::sleep_for(stall_);
    inner_.reset();  // the only reference: its connections close
    throw std::runtime_error("injected: this rank died at collective " + std::to_string(die_at_));
  }

  c10::intrusive_ptr<c10d::ProcessGroup> inner_;
  int die_at_;
  Death death_;
  std::chrono::milliseconds stall_;
  std::chrono::steady_clock::time_point& died_;
  int collectives_ = 0;
};

// Each collective the ranks issue in `every_operation` (on two ranks), and the operation it
// belongs to: setup 1-2, save 3-6 (the states' allgather, header and data; the outcome's
// broadcast, header and data), step_due 7, wait 8-9, load 10-11.
const std::vector<std::string> kOperationAtCollective{
    "",
    "setting up the checkpointer",
    "setting up the checkpointer",
    "saving checkpoint 1",
    "saving checkpoint 1",
    "saving checkpoint 1",
    "saving checkpoint 1",
    "deciding whether to save at step 3",
    "waiting for the checkpoint writes",
    "waiting for the checkpoint writes",
    "loading the checkpoint"};

void every_operation(int rank, c10::intrusive_ptr<c10d::ProcessGroup> group,
                     const ckpt::DistributedCheckpointerOptions& options) {
  DistributedCheckpointer checkpointer(
      group, [] { return std::make_shared<MemoryCheckpointer>(); }, options);
  checkpointer.save(checkpoint_of(rank), 1, true);
  checkpointer.step_due({0, 3, 10, 3, 0.0});
  checkpointer.wait();
  checkpointer.load();
}

// Runs every_operation on two ranks, `dying` dying at collective `die_at`; returns the survivor's
// outcome and how long after the death it ended.
std::pair<RankOutcome, double> lose_a_peer(int dying, int die_at, Death death,
                                           std::chrono::milliseconds timeout) {
  ckpt::DistributedCheckpointerOptions options;
  options.timeout = timeout;
  std::chrono::steady_clock::time_point died{};
  std::chrono::steady_clock::time_point survivor_ended{};
  const auto outcomes = run_ranks(
      2,
      [&](int rank, auto group) {
        try {
          every_operation(rank, std::move(group), options);
        } catch (...) {
          if (rank != dying) survivor_ended = std::chrono::steady_clock::now();
          throw;
        }
      },
      /*group_timeout=*/timeout,
      [&](int rank, c10::intrusive_ptr<c10d::ProcessGroup> group) {
        if (rank != dying) return group;
        return c10::intrusive_ptr<c10d::ProcessGroup>(c10::make_intrusive<DyingGroup>(
            std::move(group), die_at, death, 2 * timeout, died));
      });
  return {outcomes[1 - dying],
          std::chrono::duration<double>(survivor_ended - died).count()};
}

void check_survivor(const RankOutcome& survivor, int rank, const std::string& operation,
                    double seconds_after_death, double timeout_seconds) {
  BOOST_REQUIRE_MESSAGE(survivor.error, "the survivor went on");
  const std::string message = message_of(survivor.error);
  BOOST_CHECK_MESSAGE(is_checkpoint_error(survivor.error), "not a CheckpointError: " << message);
  const std::string expected = "rank " + std::to_string(rank) + ": " + operation;
  BOOST_CHECK_MESSAGE(message.find(expected) != std::string::npos,
                      "no '" << expected << "' in: " << message);
  BOOST_CHECK_MESSAGE(message.find("timed out") != std::string::npos ||
                          message.find("lost contact") != std::string::npos,
                      message);
  // Within the timeout (and a margin for a loaded machine) of the peer's death.
  BOOST_CHECK_LT(seconds_after_death, timeout_seconds + 1.5);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(distributed_checkpointer)

BOOST_AUTO_TEST_CASE(
    with_an_async_inner_checkpointer_every_rank_goes_on_before_the_file_is_durable) {
  auto storage = std::make_shared<SlowOrFailingStorage>();
  storage->hold();
  std::vector<std::optional<std::filesystem::path>> paths(2);
  bool visible_while_training = true;
  std::vector<int> due(2, -1);
  const auto outcomes = run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] { return async_inner(storage); });
    paths[rank] = checkpointer.save(checkpoint_of(rank), 0, true);
    checkpointer.wait_staged();  // rank 0: the copy; rank 1: nothing to wait for
    // Both ranks are past save() and meet again while the write is held at its commit.
    if (rank == 0) {
      storage->wait_for_commit();
      visible_while_training = storage->stat("ck/model_0.pt").has_value();
    }
    due[rank] = checkpointer.step_due({1, 1, 10, 1, 0.0});
    if (rank == 0) storage->release();
    checkpointer.wait();  // durable on every rank now
  });
  for (const auto& o : outcomes) BOOST_REQUIRE_MESSAGE(!o.error, message_of(o.error));
  BOOST_CHECK(!visible_while_training);
  BOOST_CHECK(due == (std::vector<int>{0, 0}));
  BOOST_CHECK(paths[0] == std::filesystem::path("ck/model_0.pt"));
  BOOST_CHECK(paths[1] == paths[0]);
  BOOST_REQUIRE(storage->stat("ck/model_0.pt").has_value());
  const Checkpoint written = ckpt::load_checkpoint_file("ck/model_0.pt", *storage);
  BOOST_CHECK(torch::equal(written.module_interface_state.at("w").toTensor(),
                           checkpoint_of(0).module_interface_state.at("w").toTensor()));
}

// The failure of a background save reaches every rank at the next point where they meet anyway
// (a step_due broadcast, or the next save), at most one save later, with rank 0's reason; never a
// hang, and no rank goes on past it.
BOOST_AUTO_TEST_CASE(a_background_failure_stops_every_rank_at_the_same_collective_with_its_reason) {
  auto storage = std::make_shared<SlowOrFailingStorage>();
  storage->failing = true;
  std::vector<std::string> thrown_at(2, "nowhere");
  std::vector<char> accepted(2);  // not vector<bool>: the ranks write their elements at once
  const auto outcomes = run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] { return async_inner(storage); });
    accepted[rank] = checkpointer.save(checkpoint_of(rank), 0, true).has_value();
    for (int64_t step = 1; step <= 20; ++step) {
      thrown_at[rank] = "step_due " + std::to_string(step);
      checkpointer.wait_staged();
      checkpointer.step_due({1, step, 100, step, 0.0});
    }
    thrown_at[rank] = "save 1";
    checkpointer.save(checkpoint_of(rank), 1, true);
    thrown_at[rank] = "nowhere";
  });
  BOOST_CHECK(accepted == (std::vector<char>{true, true}));
  BOOST_CHECK_NE(thrown_at[0], "nowhere");
  BOOST_CHECK_EQUAL(thrown_at[0], thrown_at[1]);
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_REQUIRE(outcomes[r].error);
      BOOST_CHECK_THROW(std::rethrow_exception(outcomes[r].error), CheckpointError);
      const std::string message = message_of(outcomes[r].error);
      BOOST_CHECK_MESSAGE(message.find("injected: the store went away") != std::string::npos,
                          message);
      BOOST_CHECK_MESSAGE(message.find("model_0.pt") != std::string::npos, message);
    }
  }
  BOOST_CHECK(message_of(outcomes[1].error).find("failed on rank 0") != std::string::npos);
  BOOST_CHECK(!storage->stat("ck/model_0.pt").has_value());
  BOOST_CHECK(!storage->stat("ck/model_1.pt").has_value());
}

BOOST_AUTO_TEST_CASE(wait_agrees_on_the_last_background_save_on_every_rank) {
  auto storage = std::make_shared<SlowOrFailingStorage>();
  storage->failing = true;
  const auto outcomes = run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] { return async_inner(storage); });
    checkpointer.save(checkpoint_of(rank), 5, true);
    checkpointer.wait();
  });
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_REQUIRE(outcomes[r].error);
      const std::string message = message_of(outcomes[r].error);
      BOOST_CHECK_MESSAGE(message.find("injected: the store went away") != std::string::npos,
                          message);
    }
  }
  BOOST_CHECK(
      message_of(outcomes[1].error).find("waiting for the checkpoint writes failed on rank 0") !=
      std::string::npos);
}

BOOST_AUTO_TEST_CASE(only_rank_0_builds_the_inner_checkpointer_and_saves_every_ranks_state) {
  std::atomic<int> factory_calls{0};
  std::shared_ptr<MemoryCheckpointer> inner;
  std::vector<std::optional<std::filesystem::path>> paths(2);
  std::vector<char> inner_seen(2);  // not vector<bool>: the ranks write their elements at once
  const auto outcomes = run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] {
      ++factory_calls;
      inner = std::make_shared<MemoryCheckpointer>();
      return inner;
    });
    inner_seen[rank] = checkpointer.inner() != nullptr;
    paths[rank] = checkpointer.save(checkpoint_of(rank), 2, /*force=*/false);
  });
  for (const auto& o : outcomes) BOOST_REQUIRE_MESSAGE(!o.error, message_of(o.error));
  BOOST_CHECK_EQUAL(factory_calls.load(), 1);
  BOOST_CHECK(inner_seen[0]);
  BOOST_CHECK(!inner_seen[1]);
  BOOST_REQUIRE_EQUAL(inner->saved.size(), 1u);
  // Every rank learns the path rank 0 wrote.
  BOOST_CHECK(paths[0] == std::filesystem::path("mem/ckpt_2"));
  BOOST_CHECK(paths[1] == std::filesystem::path("mem/ckpt_2"));
  const Checkpoint& written = inner->saved[0];
  // Replicated parts are rank 0's; the backend state is rank 0's plus every rank's, in order.
  BOOST_CHECK(ckpt::deep_equal(written.module_interface_state.to_ivalue(),
                               checkpoint_of(0).module_interface_state.to_ivalue()));
  BOOST_CHECK_EQUAL(written.trainer_backend_state.at("rank").toInt(), 0);
  const auto ranks = written.trainer_backend_state.at("ckpt_rank_states").toListRef();
  BOOST_REQUIRE_EQUAL(ranks.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_CHECK(ckpt::deep_equal(ranks[r], backend_state(r).to_ivalue()));
    }
  }
  BOOST_CHECK_EQUAL(written.metadata.at("world_size").toInt(), 2);
  // Nobody waits for durability inside save(): an asynchronous inner checkpointer writes on while
  // the ranks train (its outcome is agreed at the next collective).
  BOOST_CHECK(inner->calls == (std::vector<std::string>{"save 2"}));
}

BOOST_AUTO_TEST_CASE(load_gives_each_rank_its_own_state_and_the_same_rest) {
  // Save with two ranks, then load what was saved with two ranks.
  std::shared_ptr<MemoryCheckpointer> inner;
  run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] {
      inner = std::make_shared<MemoryCheckpointer>();
      return inner;
    });
    checkpointer.save(checkpoint_of(rank), 0);
  });
  BOOST_REQUIRE_EQUAL(inner->saved.size(), 1u);
  const Checkpoint saved = inner->saved[0];

  std::vector<Checkpoint> loaded(2);
  const auto outcomes = run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] {
      auto fresh = std::make_shared<MemoryCheckpointer>();
      fresh->to_load = saved;
      return fresh;
    });
    loaded[rank] = checkpointer.load();
  });
  for (const auto& o : outcomes) BOOST_REQUIRE_MESSAGE(!o.error, message_of(o.error));
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_CHECK(ckpt::deep_equal(loaded[r].trainer_backend_state.to_ivalue(),
                                   backend_state(r).to_ivalue()));
      BOOST_CHECK(ckpt::deep_equal(loaded[r].module_interface_state.to_ivalue(),
                                   saved.module_interface_state.to_ivalue()));
      BOOST_CHECK(
          ckpt::deep_equal(loaded[r].trainer_state.to_ivalue(), saved.trainer_state.to_ivalue()));
    }
  }
}

BOOST_AUTO_TEST_CASE(a_different_world_size_warns_and_hands_out_rank_0s_state) {
  // Written by three ranks, read by two.
  Checkpoint saved = checkpoint_of(0);
  c10::impl::GenericList ranks(c10::AnyType::get());
  for (int r = 0; r < 3; ++r) ranks.push_back(backend_state(r).to_ivalue());
  saved.trainer_backend_state.insert_or_assign("ckpt_rank_states", ranks);
  ckpt::test::LogCapture log;
  std::vector<Checkpoint> loaded(2);
  const auto outcomes = run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] {
      auto inner = std::make_shared<MemoryCheckpointer>();
      inner->to_load = saved;
      return inner;
    });
    loaded[rank] = checkpointer.load();
  });
  for (const auto& o : outcomes) BOOST_REQUIRE_MESSAGE(!o.error, message_of(o.error));
  StateDict expected = backend_state(0);
  expected.insert_or_assign("ckpt_saved_world_size", int64_t{3});
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_CHECK(
          ckpt::deep_equal(loaded[r].trainer_backend_state.to_ivalue(), expected.to_ivalue()));
    }
  }
  BOOST_CHECK(log.contains("saved by 3 ranks and training resumes with 2"));
}

BOOST_AUTO_TEST_CASE(a_failed_save_on_rank_0_is_thrown_on_every_rank) {
  std::vector<std::string> messages(2);
  const auto outcomes = run_ranks(2, [&](int rank, auto group) {
    DistributedCheckpointer checkpointer(group, [&] {
      auto inner = std::make_shared<MemoryCheckpointer>();
      inner->fail_with = "injected: disk on fire";
      return inner;
    });
    checkpointer.save(checkpoint_of(rank), 4, true);
  });
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_REQUIRE(outcomes[r].error);
      BOOST_CHECK_THROW(std::rethrow_exception(outcomes[r].error), CheckpointError);
      BOOST_CHECK(message_of(outcomes[r].error).find("injected: disk on fire") !=
                  std::string::npos);
    }
  }
  BOOST_CHECK(message_of(outcomes[1].error).find("rank 1: saving checkpoint 4 failed on rank 0") !=
              std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_failed_setup_on_rank_0_is_thrown_on_every_rank) {
  const auto outcomes = run_ranks(2, [&](int, auto group) {
    DistributedCheckpointer checkpointer(group,
                                         []() -> std::shared_ptr<ckpt::AbstractCheckpointer> {
                                           throw CheckpointError("cannot create save_dir /nowhere");
                                         });
  });
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_CHECK(message_of(outcomes[r].error).find("cannot create save_dir /nowhere") !=
                  std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_rank_that_hears_nothing_gives_up_after_the_timeout_and_says_so) {
  // Rank 0 is stuck (it sleeps past rank 1's timeout) before it joins the save.
  ckpt::DistributedCheckpointerOptions options;
  options.timeout = 1s;
  double rank1_waited = -1;
  const auto outcomes = run_ranks(
      2,
      [&](int rank, auto group) {
        DistributedCheckpointer checkpointer(
            group, [] { return std::make_shared<MemoryCheckpointer>(); }, options);
        if (rank == 0) std::this_thread::sleep_for(3s);
        const auto start = std::chrono::steady_clock::now();
        try {
          checkpointer.save(checkpoint_of(rank), 1);
        } catch (...) {
          if (rank == 1) {
            rank1_waited =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          }
          throw;
        }
      },
      /*group_timeout=*/2s);
  BOOST_REQUIRE(outcomes[1].error);
  const std::string message = message_of(outcomes[1].error);
  BOOST_CHECK_MESSAGE(message.find("rank 1: saving checkpoint 1") != std::string::npos, message);
  BOOST_CHECK_MESSAGE(message.find("timed out after 1 s") != std::string::npos, message);
  // It gave up after its own timeout, before rank 0 woke up.
  BOOST_CHECK_GE(rank1_waited, 0.9);
  BOOST_CHECK_LT(rank1_waited, 2.9);
}

BOOST_AUTO_TEST_CASE(rank_0_decides_when_a_step_is_due) {
  std::vector<std::vector<bool>> decisions(2);
  std::shared_ptr<MemoryCheckpointer> inner;
  const auto outcomes = run_ranks(2, [&](int, auto group) {
    DistributedCheckpointer checkpointer(group, [&] {
      inner = std::make_shared<MemoryCheckpointer>();
      return inner;
    });
    std::vector<bool> mine;
    for (int64_t step = 1; step <= 7; ++step) {
      mine.push_back(checkpointer.step_due({0, step, 10, step, 0.0}));
    }
    decisions[checkpointer.rank()] = mine;
    checkpointer.save_model(StateDict{}, 1);
  });
  for (const auto& o : outcomes) BOOST_REQUIRE_MESSAGE(!o.error, message_of(o.error));
  const std::vector<bool> expected{false, false, true, false, false, true, false};
  BOOST_CHECK(decisions[0] == expected);
  BOOST_CHECK(decisions[1] == expected);
  // Asked once per step, on rank 0 only; the model saved once.
  BOOST_CHECK_EQUAL(std::count(inner->calls.begin(), inner->calls.end(), "save_model 1"), 1);
  BOOST_CHECK_EQUAL(inner->calls.size(), 7u + 2u);  // 7 step_due, save_model, wait
}

// A rank that dies (its connections close) at any collective of setup, save, step_due, wait or
// load: the other rank ends with a CheckpointError that names that operation and itself, at once
// (well within the timeout), and never with another exception type.
BOOST_AUTO_TEST_CASE(a_peer_killed_at_any_collective_ends_the_survivor_with_a_checkpoint_error) {
  const auto timeout = 2s;
  for (int dying = 0; dying < 2; ++dying) {
    for (int die_at = 1; die_at < static_cast<int>(kOperationAtCollective.size()); ++die_at) {
      BOOST_TEST_CONTEXT("rank " << dying << " killed at collective " << die_at) {
        const auto [survivor, seconds] = lose_a_peer(dying, die_at, Death::kKilled, timeout);
        check_survivor(survivor, 1 - dying, kOperationAtCollective[die_at], seconds, 2.0);
      }
    }
  }
}

// A rank that stalls (alive, connections open, silent) at the first collective of save,
// step_due, wait and load: the other rank gives up with a CheckpointError within the timeout.
BOOST_AUTO_TEST_CASE(a_peer_stalled_in_save_step_due_wait_or_load_times_the_survivor_out) {
  const auto timeout = 500ms;
  for (const int die_at : {3, 5, 7, 8, 10}) {
    BOOST_TEST_CONTEXT("rank 1 stalled at collective " << die_at) {
      const auto [survivor, seconds] = lose_a_peer(1, die_at, Death::kStalled, timeout);
      check_survivor(survivor, 0, kOperationAtCollective[die_at], seconds, 0.5);
      BOOST_CHECK_MESSAGE(message_of(survivor.error).find("timed out after 0.5 s") !=
                              std::string::npos,
                          message_of(survivor.error));
    }
  }
}

// Ranks that call different operations (a bug in the caller): the collective pairs rank 0's
// step_due with rank 1's wait. Rank 1 sees it from the header and says so, instead of reading
// rank 0's decision as a byte count; rank 0 loses contact at its next operation; afterwards the
// checkpointer refuses every operation rather than pair more collectives wrongly.
BOOST_AUTO_TEST_CASE(ranks_out_of_step_end_with_a_checkpoint_error_naming_both_operations) {
  std::string refused;
  const auto outcomes = run_ranks(
      2,
      [&](int rank, auto group) {
        DistributedCheckpointer checkpointer(group,
                                             [] { return std::make_shared<MemoryCheckpointer>(); });
        if (rank == 0) {
          checkpointer.step_due({0, 3, 10, 3, 0.0});
          checkpointer.wait();
          return;
        }
        try {
          checkpointer.wait();
        } catch (const CheckpointError&) {
          try {
            checkpointer.step_due({0, 4, 10, 4, 0.0});
          } catch (const CheckpointError& e) {
            refused = e.what();
          }
          throw;
        }
      },
      /*group_timeout=*/2s);
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_REQUIRE(outcomes[r].error);
      BOOST_CHECK_MESSAGE(is_checkpoint_error(outcomes[r].error), message_of(outcomes[r].error));
    }
  }
  const std::string message = message_of(outcomes[1].error);
  BOOST_CHECK_MESSAGE(message.find("rank 1: waiting for the checkpoint writes (checkpoint "
                                   "operation #2): the ranks are out of step: rank 0 is in "
                                   "collective 1 of step_due") != std::string::npos,
                      message);
  BOOST_CHECK_MESSAGE(refused.find("rank 1: deciding whether to save at step 4: not attempted: "
                                   "the ranks are out of step") != std::string::npos,
                      refused);
}

BOOST_AUTO_TEST_SUITE_END()
