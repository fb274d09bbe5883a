// Asynchronous saves (DefaultCheckpointerArguments::async): the snapshot, one save in flight,
// failures that surface on the next call, bounded staging memory, files identical to synchronous
// ones. Nothing here is timed.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include "failing_storage.h"
#include "log_capture.h"
#include "test_util.h"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

namespace fs = std::filesystem;
using namespace ckpt::test;

namespace {

ckpt::DefaultCheckpointerArguments async_args(const fs::path& dir) {
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = dir;
  args.model_state_save_dir = dir;
  args.async = true;
  args.latest_pointer = false;  // these tests count checkpoint files; the pointer is tested below
  // These tests are about how a background failure is thrown; riding failures out (the default,
  // on_save_failure continue) is save_failure_policy's.
  args.on_save_failure = "stop";
  return args;
}

// A small model's state with what the writer must keep: a view into a shared storage, an int
// tensor, nested dicts and lists, scalars.
ckpt::Checkpoint make_checkpoint(int64_t scale = 1) {
  torch::manual_seed(7);
  ckpt::Checkpoint checkpoint;
  auto weight = torch::randn({64 * scale, 32});
  checkpoint.module_interface_state.insert_or_assign("fc.weight", weight);
  checkpoint.module_interface_state.insert_or_assign("fc.weight_row", weight[3]);  // a view
  checkpoint.module_interface_state.insert_or_assign("fc.bias", torch::randn({64 * scale}));
  checkpoint.module_interface_state.insert_or_assign("steps", torch::arange(10));
  c10::impl::GenericDict moments(c10::StringType::get(), c10::AnyType::get());
  moments.insert("exp_avg", torch::randn({64 * scale, 32}));
  moments.insert("exp_avg_sq", torch::rand({64 * scale, 32}));
  c10::impl::GenericList optimizers(c10::AnyType::get());
  optimizers.push_back(moments);
  checkpoint.trainer_state.insert_or_assign("last_epoch", int64_t{2});
  checkpoint.trainer_state.insert_or_assign("optimizers", optimizers);
  checkpoint.trainer_backend_state.insert_or_assign("lr", 0.5);
  checkpoint.trainer_backend_state.insert_or_assign("name", std::string("run"));
  return checkpoint;
}

// Every tensor of `c`, in place, so that a save that did not snapshot would write new values.
void modify_in_place(ckpt::Checkpoint& c) {
  c.module_interface_state.at("fc.weight").toTensor().add_(1.0);
  c.module_interface_state.at("fc.bias").toTensor().mul_(-3.0);
  c.module_interface_state.at("steps").toTensor().fill_(-1);
  auto moments = c.trainer_state.at("optimizers").toListRef()[0].toGenericDict();
  moments.at("exp_avg").toTensor().zero_();
  moments.at("exp_avg_sq").toTensor().fill_(42.0);
}

// Bitwise equality of every tensor (torch::equal would accept -0.0 for 0.0).
bool bitwise_equal(const c10::IValue& a, const c10::IValue& b) {
  if (a.isTensor() != b.isTensor()) return false;
  if (a.isTensor()) {
    const auto x = a.toTensor().contiguous();
    const auto y = b.toTensor().contiguous();
    const bool same = x.dtype() == y.dtype() && x.sizes() == y.sizes() &&
                      std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
    if (!same) BOOST_TEST_MESSAGE("tensors differ: " << x.sizes() << " vs " << y.sizes());
    return same;
  }
  if (a.isGenericDict()) {
    const auto da = a.toGenericDict();
    const auto db = b.toGenericDict();
    if (da.size() != db.size()) return false;
    for (const auto& item : da) {
      if (!db.contains(item.key()) || !bitwise_equal(item.value(), db.at(item.key()))) {
        BOOST_TEST_MESSAGE("differs at key " << item.key());
        return false;
      }
    }
    return true;
  }
  if (a.isList()) {
    const auto la = a.toListRef();
    const auto lb = b.toListRef();
    if (la.size() != lb.size()) return false;
    for (std::size_t i = 0; i < la.size(); ++i) {
      if (!bitwise_equal(la[i], lb[i])) return false;
    }
    return true;
  }
  return ckpt::deep_equal(a, b);
}

bool bitwise_equal(const ckpt::Checkpoint& a, const ckpt::Checkpoint& b) {
  return bitwise_equal(a.module_interface_state.to_ivalue(),
                       b.module_interface_state.to_ivalue()) &&
         bitwise_equal(a.trainer_state.to_ivalue(), b.trainer_state.to_ivalue()) &&
         bitwise_equal(a.trainer_backend_state.to_ivalue(), b.trainer_backend_state.to_ivalue());
}

// The storage under test, holding every file's commit (the moment it becomes visible and durable)
// until released, and recording how many writers are open at once.
class GatedStorage final : public ckpt::StorageWrapper {
 public:
  GatedStorage() : StorageWrapper(storage_under_test()) {}

  std::unique_ptr<ckpt::WritableFile> create(const fs::path& path) override {
    auto file = StorageWrapper::create(path);
    std::lock_guard<std::mutex> lock(mutex_);
    max_open_ = std::max(max_open_, ++open_);
    return std::make_unique<File>(*this, std::move(file));
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }
  // Blocks until a file has reached its commit.
  void wait_for_commit() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return committing_ > 0; });
  }
  int max_open() {
    std::lock_guard<std::mutex> lock(mutex_);
    return max_open_;
  }

 private:
  class File final : public ckpt::WritableFile {
   public:
    File(GatedStorage& owner, std::unique_ptr<ckpt::WritableFile> inner)
        : owner_(owner), inner_(std::move(inner)) {}
    ~File() override {
      inner_.reset();
      std::lock_guard<std::mutex> lock(owner_.mutex_);
      --owner_.open_;
    }
    void append(const void* data, std::size_t size) override { inner_->append(data, size); }
    void commit() override {
      {
        std::unique_lock<std::mutex> lock(owner_.mutex_);
        ++owner_.committing_;
        owner_.changed_.notify_all();
        owner_.changed_.wait(lock, [&] { return owner_.released_; });
      }
      inner_->commit();
    }

   private:
    GatedStorage& owner_;
    std::unique_ptr<ckpt::WritableFile> inner_;
  };

  std::mutex mutex_;
  std::condition_variable changed_;
  bool released_ = false;
  int committing_ = 0;
  int open_ = 0;
  int max_open_ = 0;
};

// A field of /proc/self/status in kB (VmRSS, VmHWM).
int64_t status_kb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  BOOST_FAIL("no " << field << " in /proc/self/status");
  return 0;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(async_save)

BOOST_AUTO_TEST_CASE(the_file_holds_the_state_at_save_not_later_updates) {
  TempDir dir;
  ckpt::Checkpoint live = make_checkpoint();
  // The same values, built again (IValue::deepcopy would turn the view into a copy of the whole
  // weight: its memo identifies tensors by storage).
  const ckpt::Checkpoint before = make_checkpoint();
  ckpt::DefaultCheckpointer checkpointer(async_args(dir.path()), storage_under_test());
  const auto path = checkpointer.save(live, 0);
  modify_in_place(live);  // at once, while the background write may still be running
  BOOST_REQUIRE(path.has_value());
  BOOST_CHECK(*path == dir / "model_0.pt");
  checkpointer.wait();
  const ckpt::Checkpoint loaded = ckpt::load_checkpoint_file(*path, *storage_under_test());
  BOOST_CHECK(bitwise_equal(loaded, before));
  BOOST_CHECK(!bitwise_equal(loaded, live));
  // The view still shares its storage with the weight it views, as in a synchronous save.
  const auto& module = loaded.module_interface_state;
  BOOST_CHECK(module.at("fc.weight_row")
                  .toTensor()
                  .storage()
                  .is_alias_of(module.at("fc.weight").toTensor().storage()));
}

BOOST_AUTO_TEST_CASE(async_files_are_byte_identical_to_sync_files_and_verify) {
  TempDir dir;
  const ckpt::Checkpoint checkpoint = make_checkpoint();
  auto sync_args = async_args(dir / "sync");
  sync_args.async = false;
  sync_args.latest_pointer = true;
  auto background_args = async_args(dir / "async");
  background_args.latest_pointer = true;  // written by the background thread after the file
  ckpt::DefaultCheckpointer sync(sync_args, storage_under_test());
  ckpt::DefaultCheckpointer async(background_args, storage_under_test());
  for (int64_t index : {0, 1, 2}) {
    sync.save(checkpoint, index);
    async.save(checkpoint, index);
  }
  async.save_model(checkpoint.module_interface_state, 2);  // waits for the save in flight
  sync.save_model(checkpoint.module_interface_state, 2);
  BOOST_REQUIRE(files_in(dir / "async") == files_in(dir / "sync"));
  BOOST_CHECK_EQUAL(files_in(dir / "async").size(), 5u);  // 3 checkpoints, weights, pointer
  BOOST_CHECK_EQUAL(read_text(dir / "async" / "model_latest"), "model_2.pt\n");
  for (const auto& name : files_in(dir / "sync")) {
    BOOST_TEST_CONTEXT(name) {
      BOOST_CHECK(read_text(dir / "async" / name) == read_text(dir / "sync" / name));
      if (name != "model_latest") ckpt::verify_file(dir / "async" / name, *storage_under_test());
    }
  }
  auto load_args = async_args(dir / "async");
  load_args.load_dir = dir / "async";
  BOOST_CHECK(ckpt::DefaultCheckpointer(load_args, storage_under_test()).load() == checkpoint);
}

BOOST_AUTO_TEST_CASE(save_returns_before_the_write_is_durable_and_one_save_is_in_flight) {
  TempDir dir;
  auto storage = std::make_shared<GatedStorage>();
  ckpt::DefaultCheckpointer checkpointer(async_args(dir.path()), storage);
  const ckpt::Checkpoint checkpoint = make_checkpoint();

  checkpointer.save(checkpoint, 0);
  storage->wait_for_commit();  // the background write of model_0.pt is held at its commit
  BOOST_CHECK(!ckpt::test::exists(dir / "model_0.pt"));
  // The next save waits for the one in flight: it cannot return while that is held.
  auto second = std::async(std::launch::async, [&] { return checkpointer.save(checkpoint, 1); });
  BOOST_CHECK(second.wait_for(std::chrono::milliseconds(200)) == std::future_status::timeout);
  BOOST_CHECK(!ckpt::test::exists(dir / "model_1.pt"));
  storage->release();
  BOOST_CHECK(second.get() == dir / "model_1.pt");
  checkpointer.wait();
  BOOST_CHECK(files_in(dir.path()) == (std::vector<std::string>{"model_0.pt", "model_1.pt"}));
  BOOST_CHECK_EQUAL(storage->max_open(), 1);
}

// A system call failing (FailingStorage: the local filesystem's).
BOOST_AUTO_TEST_CASE(a_background_failure_is_thrown_by_the_next_save_once,
                     *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  ckpt::DefaultCheckpointer checkpointer(async_args(dir.path()), storage);
  const ckpt::Checkpoint checkpoint = make_checkpoint();
  checkpointer.save(checkpoint, 0);
  checkpointer.wait();
  storage->fail(Op::append, 0, ENOSPC);
  LogCapture log;
  BOOST_CHECK(checkpointer.save(checkpoint, 1) == dir / "model_1.pt");  // accepted, then fails
  BOOST_CHECK_EXCEPTION(checkpointer.save(checkpoint, 2), ckpt::CheckpointError,
                        message_contains("model_1.pt", std::strerror(ENOSPC)));
  BOOST_CHECK(log.contains("[error] background save of checkpoint index=1 failed"));
  // Reported once; the failed save left only the earlier checkpoint, no temporary.
  BOOST_CHECK(files_in(dir.path()) == std::vector<std::string>{"model_0.pt"});
  checkpointer.save(checkpoint, 2);
  checkpointer.wait();
  BOOST_CHECK(files_in(dir.path()) == (std::vector<std::string>{"model_0.pt", "model_2.pt"}));
  ckpt::verify_file(dir / "model_2.pt", *storage);
}

// A system call failing (FailingStorage: the local filesystem's).
BOOST_AUTO_TEST_CASE(a_background_failure_is_thrown_by_wait_with_its_path,
                     *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  ckpt::DefaultCheckpointer checkpointer(async_args(dir.path()), storage);
  storage->fail(Op::sync, 0, EIO);
  checkpointer.save(make_checkpoint(), 4);
  try {
    checkpointer.wait();
    BOOST_FAIL("wait() did not throw the background failure");
  } catch (const ckpt::CheckpointError& e) {
    BOOST_CHECK(e.path() == dir / "model_4.pt");
    BOOST_CHECK_EQUAL(e.error_number(), EIO);
  }
  BOOST_CHECK_NO_THROW(checkpointer.wait());  // thrown once
  BOOST_CHECK(files_in(dir.path()).empty());
}

// A system call failing (FailingStorage: the local filesystem's).
BOOST_AUTO_TEST_CASE(a_failure_pending_at_destruction_is_logged_as_an_error,
                     *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  LogCapture log;
  {
    ckpt::DefaultCheckpointer checkpointer(async_args(dir.path()), storage);
    storage->fail(Op::rename, 0, EACCES);
    checkpointer.save(make_checkpoint(), 0);
  }  // no wait(): the destructor waits, and must not throw
  BOOST_CHECK_MESSAGE(log.contains("[error] a background save failed and nobody called wait()"),
                      log.text());
  BOOST_CHECK(log.contains("model_0.pt"));
  BOOST_CHECK(files_in(dir.path()).empty());
}

BOOST_AUTO_TEST_CASE(staging_memory_is_reused_and_bounded_over_20_saves) {
  TempDir dir;
  ckpt::Checkpoint live = make_checkpoint(/*scale=*/2048);  // about 50 MB of tensors
  uint64_t tensor_bytes = 0;
  for (const auto& [key, value] : live.module_interface_state) {
    if (key != "fc.weight_row") tensor_bytes += value.toTensor().nbytes();
  }
  auto moments = live.trainer_state.at("optimizers").toListRef()[0].toGenericDict();
  for (const auto& item : moments) tensor_bytes += item.value().toTensor().nbytes();

  ckpt::DefaultCheckpointer checkpointer(async_args(dir.path()), storage_under_test());
  BOOST_CHECK_EQUAL(checkpointer.staging_bytes(), 0u);
  int64_t rss_after_warmup = 0;
  int64_t hwm_after_warmup = 0;
  for (int64_t i = 0; i < 20; ++i) {
    checkpointer.save(live, i);
    modify_in_place(live);
    // One checkpoint's tensor bytes (each storage rounded up to 64), no more, from the first save.
    BOOST_CHECK_GE(checkpointer.staging_bytes(), tensor_bytes);
    BOOST_CHECK_LE(checkpointer.staging_bytes(), tensor_bytes + 64 * 8);
    checkpointer.wait();
    BOOST_CHECK(ckpt::load_checkpoint_file(dir / ("model_" + std::to_string(i) + ".pt"),
                                           *storage_under_test()) !=
                live);  // the snapshot, not the state modified after save()
    remove_file(dir / ("model_" + std::to_string(i) + ".pt"));
    if (i == 2) {
      rss_after_warmup = status_kb("VmRSS");
      hwm_after_warmup = status_kb("VmHWM");
    }
  }
  // A leak of one staging buffer per save would add about 50 MB each time.
  // Under AddressSanitizer freed memory waits in its quarantine (256 MB by default) before it is
  // reused, so resident memory may rise by that much; a leak of one copy per save (20 x 50 MB)
  // would still exceed it.
#if defined(__SANITIZE_ADDRESS__)
  const int64_t slack_kb = (16 + 256) * 1024;
#else
  const int64_t slack_kb = 16 * 1024;
#endif
  BOOST_CHECK_LE(status_kb("VmRSS"), rss_after_warmup + slack_kb);
  BOOST_CHECK_LE(status_kb("VmHWM"), hwm_after_warmup + slack_kb);
}

BOOST_AUTO_TEST_CASE(synchronous_checkpointers_have_nothing_in_flight) {
  TempDir dir;
  auto args = async_args(dir.path());
  args.async = false;
  ckpt::DefaultCheckpointer checkpointer(args, storage_under_test());
  checkpointer.save(make_checkpoint(), 0);
  BOOST_CHECK(ckpt::test::exists(dir / "model_0.pt"));  // durable on return
  BOOST_CHECK_NO_THROW(checkpointer.wait());
  BOOST_CHECK_EQUAL(checkpointer.staging_bytes(), 0u);
}

BOOST_AUTO_TEST_CASE(skipped_and_disabled_saves_stage_nothing) {
  TempDir dir;
  auto args = async_args(dir.path());
  args.period = 2;
  ckpt::DefaultCheckpointer checkpointer(args, storage_under_test());
  BOOST_CHECK(!checkpointer.save(make_checkpoint(), 1).has_value());
  BOOST_CHECK_EQUAL(checkpointer.staging_bytes(), 0u);
  checkpointer.wait();
  BOOST_CHECK(files_in(dir.path()).empty());
}

// ---- stage_in_background: the copy itself runs on the writer's thread ----

ckpt::DefaultCheckpointerArguments staged_args(const fs::path& dir) {
  auto args = async_args(dir);
  args.stage_in_background = true;
  return args;
}

BOOST_AUTO_TEST_CASE(staging_in_the_background_is_done_before_the_write_is_durable) {
  TempDir dir;
  auto storage = std::make_shared<GatedStorage>();
  ckpt::DefaultCheckpointer checkpointer(staged_args(dir.path()), storage);
  ckpt::Checkpoint live = make_checkpoint();
  const ckpt::Checkpoint before = make_checkpoint();
  BOOST_REQUIRE(checkpointer.save(live, 0) == dir / "model_0.pt");
  // Staged means copied, not written: wait_staged() returns while the commit is held.
  auto staged = std::async(std::launch::async, [&] { checkpointer.wait_staged(); });
  const bool returned = staged.wait_for(std::chrono::seconds(120)) == std::future_status::ready;
  if (!returned) storage->release();  // do not leave the test hanging on the gate
  BOOST_REQUIRE_MESSAGE(returned, "wait_staged() waited for the held commit");
  staged.get();
  storage->wait_for_commit();
  BOOST_CHECK(!ckpt::test::exists(dir / "model_0.pt"));
  modify_in_place(live);  // allowed now: the copy is done
  storage->release();
  checkpointer.wait();
  const ckpt::Checkpoint loaded =
      ckpt::load_checkpoint_file(dir / "model_0.pt", *storage_under_test());
  BOOST_CHECK(bitwise_equal(loaded, before));
  BOOST_CHECK(!bitwise_equal(loaded, live));
}

BOOST_AUTO_TEST_CASE(files_staged_in_the_background_are_byte_identical_to_sync_files) {
  TempDir dir;
  ckpt::Checkpoint live = make_checkpoint();
  auto sync_args = async_args(dir / "sync");
  sync_args.async = false;
  ckpt::DefaultCheckpointer sync(sync_args, storage_under_test());
  ckpt::DefaultCheckpointer staged(staged_args(dir / "staged"), storage_under_test());
  for (int64_t index : {0, 1, 2}) {
    sync.save(live, index);
    staged.save(live, index);
    staged.wait_staged();
    modify_in_place(live);  // as an optimizer step would, once staged
  }
  staged.wait();
  BOOST_REQUIRE(files_in(dir / "staged") == files_in(dir / "sync"));
  BOOST_CHECK_EQUAL(files_in(dir / "staged").size(), 3u);
  for (const auto& name : files_in(dir / "sync")) {
    BOOST_TEST_CONTEXT(name) {
      BOOST_CHECK(read_text(dir / "staged" / name) == read_text(dir / "sync" / name));
    }
  }
}

// Registered objects are the user's: they may change their tensors at any time, so their state is
// copied before save() returns even when the rest is staged in the background.
BOOST_AUTO_TEST_CASE(registered_state_is_copied_before_save_returns) {
  TempDir dir;
  ckpt::Checkpoint live = make_checkpoint();
  live.registered_state.insert_or_assign("ema", torch::full({1000}, 2.0));
  ckpt::DefaultCheckpointer checkpointer(staged_args(dir.path()), storage_under_test());
  checkpointer.save(live, 0);
  live.registered_state.at("ema").toTensor().fill_(-7.0);  // no wait_staged() first
  checkpointer.wait();
  const ckpt::Checkpoint loaded =
      ckpt::load_checkpoint_file(dir / "model_0.pt", *storage_under_test());
  BOOST_CHECK(torch::equal(loaded.registered_state.at("ema").toTensor(), torch::full({1000}, 2.0)));
}

// A system call failing (FailingStorage: the local filesystem's).
BOOST_AUTO_TEST_CASE(wait_staged_throws_a_finished_background_failure_once,
                     *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  ckpt::DefaultCheckpointer checkpointer(staged_args(dir.path()), storage);
  storage->fail(Op::append, 0, ENOSPC);
  checkpointer.save(make_checkpoint(), 3);
  // wait_staged() does not wait for the write, so ask until the failure has happened (bounded).
  std::string message;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (message.empty() && std::chrono::steady_clock::now() < deadline) {
    try {
      checkpointer.wait_staged();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } catch (const ckpt::CheckpointError& e) {
      message = e.what();
    }
  }
  BOOST_CHECK_MESSAGE(message.find("model_3.pt") != std::string::npos, message);
  BOOST_CHECK_MESSAGE(message.find(std::strerror(ENOSPC)) != std::string::npos, message);
  BOOST_CHECK_NO_THROW(checkpointer.wait());  // thrown once
  BOOST_CHECK(files_in(dir.path()).empty());
}

BOOST_AUTO_TEST_CASE(stage_in_background_without_async_is_refused_by_name) {
  TempDir dir;
  auto args = staged_args(dir.path());
  args.async = false;
  BOOST_CHECK_EXCEPTION(ckpt::DefaultCheckpointer(args, storage_under_test()),
                        ckpt::CheckpointError, message_contains("stage_in_background", "async"));
  BOOST_CHECK(files_in(dir.path()).empty());
}

BOOST_AUTO_TEST_CASE(wait_staged_is_a_no_op_without_a_save_in_flight) {
  TempDir dir;
  ckpt::DefaultCheckpointer checkpointer(staged_args(dir.path()), storage_under_test());
  BOOST_CHECK_NO_THROW(checkpointer.wait_staged());
  auto args = async_args(dir.path());
  args.async = false;
  ckpt::DefaultCheckpointer sync(args, storage_under_test());
  sync.save(make_checkpoint(), 0);
  BOOST_CHECK_NO_THROW(sync.wait_staged());
}

BOOST_AUTO_TEST_SUITE_END()
