// Issue 4: verified loads with fallback, crash-consistent saves, failures at every I/O call,
// disk full and read-only filesystems for real, unreadable directories.
#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include "failing_storage.h"
#include "log_capture.h"
#include "test_util.h"

using ckpt::Checkpoint;
using ckpt::DefaultCheckpointer;
using ckpt::DefaultCheckpointerArguments;
using ckpt::test::files_in;
using ckpt::test::LogCapture;
using ckpt::test::message_contains;
using ckpt::test::storage_under_test;
using ckpt::test::TempDir;

namespace {

// A real, small checkpoint: an MLP's weights, its Adam state, and backend counters.
Checkpoint real_checkpoint(int64_t epoch) {
  torch::manual_seed(epoch);
  torch::nn::Sequential model(torch::nn::Linear(6, 5), torch::nn::ReLU(), torch::nn::Linear(5, 3));
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01));
  adam.zero_grad();
  model->forward(torch::randn({4, 6})).sum().backward();
  adam.step();
  Checkpoint checkpoint;
  checkpoint.module_interface_state = ckpt::module_state(*model);
  c10::impl::GenericList optimizers(c10::AnyType::get());
  optimizers.push_back(ckpt::optimizer_state(adam).to_ivalue());
  checkpoint.trainer_state.insert_or_assign("last_epoch", epoch);
  checkpoint.trainer_state.insert_or_assign("optimizers", optimizers);
  checkpoint.trainer_backend_state.insert_or_assign("global_step_completed", epoch * 10);
  return checkpoint;
}

// on_save_failure stop: these suites are about the error a failed save reports and what it leaves;
// riding failures out is save_failure_policy's (test_save_failures.cpp).
DefaultCheckpointerArguments args_in(const std::filesystem::path& dir) {
  DefaultCheckpointerArguments args;
  args.file_prefix = "test";
  args.file_ext = "tar";
  args.save_dir = dir;
  args.model_state_save_dir = dir;
  args.load_dir = dir;
  // These tests count and fail each I/O call of the checkpoint's own write; the latest pointer
  // (a second write, whose failure does not fail the save) has its own tests.
  args.latest_pointer = false;
  // And the small filesystems here are for the write's own failures; the disk pre-flight (which
  // would refuse a save with less than 1 MiB to spare) has its own tests.
  args.disk_margin_mb = 0;
  args.on_save_failure = "stop";
  return args;
}

std::string read_bytes(const std::filesystem::path& path) { return ckpt::test::read_text(path); }

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  ckpt::test::write_text(path, bytes);
}

// Runs `body` in a child process (as user nobody when we are root, so permissions apply) and
// returns its exit status.
template <class Body>
int in_unprivileged_child(Body&& body) {
  std::cout.flush();
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(90);
    int code = 91;
    try {
      code = body();
    } catch (...) {
      code = 92;
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A tmpfs of `size` mounted at `dir` for the test's lifetime (root only: these machines allow it).
class Tmpfs {
 public:
  Tmpfs(const std::filesystem::path& dir, const std::string& options) : dir_(dir) {
    std::filesystem::create_directories(dir);
    BOOST_REQUIRE_MESSAGE(::geteuid() == 0,
                          "this test mounts a tmpfs and needs root (CI runs as root)");
    const int rc = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str());
    BOOST_REQUIRE_MESSAGE(
        rc == 0, "mount -t tmpfs -o " << options << " " << dir << ": " << std::strerror(errno));
  }
  ~Tmpfs() { ::umount2(dir_.c_str(), MNT_DETACH); }
  void remount(const std::string& options) {
    BOOST_REQUIRE(::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, options.c_str()) == 0);
  }

 private:
  std::filesystem::path dir_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(integrity)

// Every byte of a real checkpoint, flipped one at a time: header, pickle, each tensor's data,
// central directory, end record and checksum are all covered. Each flip is detected, named, and
// never crashes the loader.
BOOST_AUTO_TEST_CASE(every_flipped_byte_is_detected,
                     *boost::unit_test::precondition(ckpt::test::not_on_s3)) {
  TempDir dir;
  const auto path = dir / "test_0.tar";
  ckpt::save_checkpoint_file(real_checkpoint(0), path, *storage_under_test());
  const std::string good = read_bytes(path);
  std::size_t detected = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    write_bytes(path, bad);
    try {
      ckpt::verify_file(path, *storage_under_test());
      BOOST_ERROR("flip at byte " << i << " of " << good.size() << " not detected");
    } catch (const ckpt::CheckpointError& e) {
      detected += std::string(e.what()).find(path.string()) != std::string::npos ? 1 : 0;
    }
    BOOST_CHECK_THROW(ckpt::load_checkpoint_file(path, *storage_under_test()),
                      ckpt::CheckpointError);
  }
  BOOST_TEST_MESSAGE("flipped " << good.size() << " bytes, " << detected << " detected and named");
  BOOST_TEST(detected == good.size());
}

BOOST_AUTO_TEST_CASE(damaged_tensor_data_names_its_record) {
  TempDir dir;
  const auto path = dir / "test_0.tar";
  ckpt::save_checkpoint_file(real_checkpoint(0), path, *storage_under_test());
  std::string bytes = read_bytes(path);
  // The first tensor record's data follows the "data/0" name and its 64-byte alignment.
  const auto name = bytes.find("data/0");
  const auto data_start = (name + 6 + 4 + 63) / 64 * 64;
  bytes[data_start + 1] ^= 1;
  write_bytes(path, bytes);
  BOOST_CHECK_EXCEPTION(ckpt::verify_file(path, *storage_under_test()), ckpt::CheckpointError,
                        message_contains(path.string(), "record 'data/0'"));
}

BOOST_AUTO_TEST_CASE(truncated_zero_and_foreign_files_are_detected) {
  TempDir dir;
  const auto path = dir / "test_0.tar";
  ckpt::save_checkpoint_file(real_checkpoint(0), path, *storage_under_test());
  const std::string good = read_bytes(path);
  std::size_t cuts = 0;
  for (std::size_t length = 0; length < good.size(); length += 1 + length / 8) {
    write_bytes(path, good.substr(0, length));
    BOOST_CHECK_EXCEPTION(ckpt::load_checkpoint_file(path, *storage_under_test()),
                          ckpt::CheckpointError, message_contains(path.string()));
    ++cuts;
  }
  BOOST_TEST_MESSAGE("truncated at " << cuts << " lengths");
  write_bytes(path, "");
  BOOST_CHECK_EXCEPTION(ckpt::verify_file(path, *storage_under_test()), ckpt::CheckpointError,
                        message_contains(path.string(), "empty"));
  write_bytes(path, "#!/bin/sh\necho not a checkpoint\n");
  BOOST_CHECK_EXCEPTION(ckpt::verify_file(path, *storage_under_test()), ckpt::CheckpointError,
                        message_contains(path.string(), "not a valid checkpoint"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(fallback)

BOOST_AUTO_TEST_CASE(discovery_falls_back_to_the_newest_checkpoint_that_verifies) {
  TempDir dir;
  auto args = args_in(dir.path());
  DefaultCheckpointer writer(args, storage_under_test());
  for (int64_t epoch : {1, 2, 3}) writer.save(real_checkpoint(epoch), epoch);
  std::string bytes = read_bytes(dir / "test_3.tar");
  bytes[bytes.size() / 2] ^= 0x10;
  write_bytes(dir / "test_3.tar", bytes);
  write_bytes(dir / "test_2.tar", read_bytes(dir / "test_2.tar").substr(0, 100));

  LogCapture log;
  const Checkpoint loaded = DefaultCheckpointer(args, storage_under_test()).load();
  BOOST_TEST((loaded == real_checkpoint(1)));
  BOOST_TEST(log.contains("skipping checkpoint " + (dir / "test_3.tar").string()));
  BOOST_TEST(log.contains("skipping checkpoint " + (dir / "test_2.tar").string()));
  BOOST_TEST(DefaultCheckpointer(args, storage_under_test()).check() == dir / "test_1.tar");
  // Nothing was deleted or rewritten by loading.
  BOOST_TEST(
      files_in(dir.path()) == (std::vector<std::string>{"test_1.tar", "test_2.tar", "test_3.tar"}),
      boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(no_checkpoint_that_loads_is_an_error_listing_each) {
  TempDir dir;
  auto args = args_in(dir.path());
  write_bytes(dir / "test_1.tar", "junk");
  write_bytes(dir / "test_2.tar", "");
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()).load(),
                        ckpt::CheckpointError,
                        message_contains("none of the 2 checkpoints", "test_1.tar", "test_2.tar"));
}

BOOST_AUTO_TEST_CASE(a_named_file_that_fails_verification_is_an_error_not_a_substitute) {
  TempDir dir;
  auto args = args_in(dir.path());
  DefaultCheckpointer writer(args, storage_under_test());
  writer.save(real_checkpoint(1), 1);
  writer.save(real_checkpoint(2), 2);
  std::string bytes = read_bytes(dir / "test_2.tar");
  bytes[bytes.size() - 5] ^= 0x01;
  write_bytes(dir / "test_2.tar", bytes);
  args.load_filename = "test_2.tar";
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()).load(),
                        ckpt::CheckpointError,
                        message_contains((dir / "test_2.tar").string(), "checksum"));
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()).check(),
                        ckpt::CheckpointError,
                        message_contains((dir / "test_2.tar").string(), "checksum"));
}

// The temporaries are LocalStorage's (`.<name>.ckpt-tmp-XXXXXX`); an uncommitted MemoryStorage
// write leaves nothing to remove.
BOOST_AUTO_TEST_CASE(leftover_temporaries_of_ours_are_removed_and_never_loaded,
                     *boost::unit_test::precondition(ckpt::test::local_only)) {
  TempDir dir;
  auto args = args_in(dir.path());
  DefaultCheckpointer(args, storage_under_test()).save(real_checkpoint(1), 1);
  const std::string complete = read_bytes(dir / "test_1.tar");
  write_bytes(dir / ".test_9.tar.ckpt-tmp-Ab12Cd", complete);  // ours: removed
  write_bytes(dir / ".notes.txt.ckpt-tmp-Ab12Cd", "keep");     // not one of our names: kept
  write_bytes(dir / ".test_9.tar.ckpt-tmp-toolong", "keep");   // not our pattern: kept
  LogCapture log;
  BOOST_TEST(DefaultCheckpointer(args, storage_under_test()).check() == dir / "test_1.tar");
  BOOST_TEST(files_in(dir.path()) ==
                 (std::vector<std::string>{".notes.txt.ckpt-tmp-Ab12Cd",
                                           ".test_9.tar.ckpt-tmp-toolong", "test_1.tar"}),
             boost::test_tools::per_element());
  BOOST_TEST(log.contains("removed leftover temporary"));
}

BOOST_AUTO_TEST_SUITE_END()

// System calls failing, real small and read-only filesystems, permissions: the local filesystem's.
BOOST_AUTO_TEST_SUITE(storage_failures, *boost::unit_test::precondition(ckpt::test::local_only))

// Every I/O call a save makes, failed in turn with each errno: a CheckpointError naming the file
// and the system's reason, no partial file under a checkpoint's name, no temporary left, the older
// checkpoints intact, and the next save and resume work.
BOOST_AUTO_TEST_CASE(every_io_call_of_a_save_failing) {
  auto storage = std::make_shared<ckpt::test::FailingStorage>();
  std::map<ckpt::test::Op, int> calls;
  {
    TempDir dir;
    DefaultCheckpointer checkpointer(args_in(dir.path()), storage);
    checkpointer.save(real_checkpoint(2), 2);  // the directory exists from here on
    const auto before = [&] {
      std::map<ckpt::test::Op, int> c;
      for (auto op : ckpt::test::all_ops()) c[op] = storage->count(op);
      return c;
    }();
    checkpointer.save(real_checkpoint(1), 1);
    for (auto op : ckpt::test::all_ops()) calls[op] = storage->count(op) - before.at(op);
  }
  BOOST_TEST(calls[ckpt::test::Op::create] == 1);
  BOOST_TEST(calls[ckpt::test::Op::append] >= 1);
  BOOST_TEST(calls[ckpt::test::Op::rename] == 1);
  int cases = 0;
  for (int error_number : {ENOSPC, EACCES, EROFS, EIO}) {
    for (auto op : ckpt::test::all_ops()) {
      for (int nth = 0; nth < calls[op]; ++nth) {
        BOOST_TEST_CONTEXT(op_name(op)
                           << " #" << nth << " fails with " << std::strerror(error_number)) {
          TempDir dir;
          auto args = args_in(dir.path());
          DefaultCheckpointer checkpointer(args, storage);
          checkpointer.save(real_checkpoint(1), 1);
          checkpointer.save(real_checkpoint(2), 2);
          storage->fail(op, nth, error_number);
          const bool durable_only = op == ckpt::test::Op::sync_directory;
          BOOST_CHECK_EXCEPTION(
              checkpointer.save(real_checkpoint(3), 3), ckpt::CheckpointError,
              message_contains((dir / "test_3.tar").string(), std::strerror(error_number)));
          storage->disarm();
          auto names = files_in(dir.path());
          // Failing only the directory fsync leaves the complete new file (renamed, not durable).
          std::vector<std::string> expected{"test_1.tar", "test_2.tar"};
          if (durable_only) expected.push_back("test_3.tar");
          BOOST_TEST(names == expected, boost::test_tools::per_element());
          BOOST_TEST((DefaultCheckpointer(args).load() == real_checkpoint(durable_only ? 3 : 2)));
          BOOST_TEST(checkpointer.save(real_checkpoint(4), 4).has_value());
          BOOST_TEST((DefaultCheckpointer(args).load() == real_checkpoint(4)));
          ++cases;
        }
      }
    }
  }
  BOOST_TEST_MESSAGE("injected " << cases << " failures");
}

BOOST_AUTO_TEST_CASE(failing_to_create_the_save_dir_names_it) {
  TempDir dir;
  auto storage = std::make_shared<ckpt::test::FailingStorage>();
  auto args = args_in(dir / "new" / "dir");
  DefaultCheckpointer checkpointer(args, storage);
  storage->fail(ckpt::test::Op::create_directories, 0, EACCES);
  BOOST_CHECK_EXCEPTION(checkpointer.save(real_checkpoint(1), 1), ckpt::CheckpointError,
                        message_contains((dir / "new" / "dir").string(), std::strerror(EACCES)));
  BOOST_TEST(!std::filesystem::exists(dir / "new"));
}

BOOST_AUTO_TEST_CASE(only_the_checkpointers_own_files_are_ever_touched) {
  TempDir dir;
  auto storage = std::make_shared<ckpt::test::FailingStorage>();
  auto args = args_in(dir.path());
  write_bytes(dir / "notes.txt", "mine");
  args.delete_existing_checkpoints = true;
  DefaultCheckpointer checkpointer(args, storage);
  checkpointer.save(real_checkpoint(1), 1);
  checkpointer.save_model(real_checkpoint(1).module_interface_state, 1);
  for (const auto& entry : storage->journal()) {
    const std::string name = std::filesystem::path(entry.substr(entry.find(':') + 1)).filename();
    const bool ours =
        name == "test_1.tar" || name == "test_model_1.tar" || !ckpt::temporary_target(name).empty();
    BOOST_TEST(ours, entry);
  }
  BOOST_TEST(read_bytes(dir / "notes.txt") == "mine");
}

BOOST_AUTO_TEST_CASE(disk_full_for_real_on_a_small_tmpfs) {
  TempDir dir;
  const auto mount_point = dir / "small";
  Tmpfs tmpfs(mount_point, "size=256k");
  auto args = args_in(mount_point);
  DefaultCheckpointer checkpointer(args);
  checkpointer.save(real_checkpoint(1), 1);
  Checkpoint big = real_checkpoint(2);
  big.module_interface_state.insert_or_assign("huge", torch::ones({200 * 1024}));  // 800 KB
  // The disk pre-flight refuses it before writing...
  BOOST_CHECK_EXCEPTION(checkpointer.save(big, 2), ckpt::CheckpointError,
                        message_contains((mount_point / "test_2.tar").string(),
                                         "not enough free space", std::strerror(ENOSPC)));
  BOOST_TEST(files_in(mount_point) == std::vector<std::string>{"test_1.tar"},
             boost::test_tools::per_element());
  // ...and without it (a storage that claims unlimited space) the write itself hits ENOSPC.
  struct NoPreflight final : ckpt::StorageWrapper {
    using StorageWrapper::StorageWrapper;
    std::optional<uint64_t> available_space(const std::filesystem::path&) override {
      return UINT64_MAX / 2;
    }
  };
  DefaultCheckpointer unchecked(args, std::make_shared<NoPreflight>(ckpt::Storage::local()));
  BOOST_CHECK_EXCEPTION(
      unchecked.save(big, 2), ckpt::CheckpointError, [&](const ckpt::CheckpointError& e) {
        const std::string m = e.what();
        return m.find((mount_point / "test_2.tar").string()) != m.npos &&
               m.find(std::strerror(ENOSPC)) != m.npos && m.find("not enough free space") == m.npos;
      });
  BOOST_TEST(files_in(mount_point) == std::vector<std::string>{"test_1.tar"},
             boost::test_tools::per_element());
  BOOST_TEST((DefaultCheckpointer(args).load() == real_checkpoint(1)));
  BOOST_TEST(checkpointer.save(real_checkpoint(3), 3).has_value());  // space was given back
}

BOOST_AUTO_TEST_CASE(read_only_filesystem_for_real) {
  TempDir dir;
  const auto mount_point = dir / "ro";
  Tmpfs tmpfs(mount_point, "size=1m");
  auto args = args_in(mount_point);
  DefaultCheckpointer(args).save(real_checkpoint(1), 1);
  tmpfs.remount("ro");
  DefaultCheckpointer checkpointer(args);
  BOOST_CHECK_EXCEPTION(
      checkpointer.save(real_checkpoint(2), 2), ckpt::CheckpointError,
      message_contains((mount_point / "test_2.tar").string(), std::strerror(EROFS)));
  BOOST_TEST((checkpointer.load() == real_checkpoint(1)));
  tmpfs.remount("rw");
  BOOST_TEST(files_in(mount_point) == std::vector<std::string>{"test_1.tar"},
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(unreadable_load_dir_and_unwritable_save_dir) {
  TempDir dir;
  auto args = args_in(dir / "locked");
  DefaultCheckpointer(args).save(real_checkpoint(1), 1);
  std::filesystem::permissions(dir.path(), std::filesystem::perms::all);  // nobody may enter dir
  std::filesystem::permissions(dir / "locked", std::filesystem::perms::none);
  const int status = in_unprivileged_child([&] {
    try {
      DefaultCheckpointer(args).load();
      return 1;
    } catch (const ckpt::CheckpointError& e) {
      const std::string what = e.what();
      if (what.find((dir / "locked").string()) == std::string::npos) return 2;
      if (what.find(std::strerror(EACCES)) == std::string::npos) return 3;
    }
    try {
      DefaultCheckpointer(args).save(real_checkpoint(2), 2);
      return 4;
    } catch (const ckpt::CheckpointError& e) {
      // Construction already lists save_dir (to remove leftover temporaries): it fails there.
      const std::string what = e.what();
      if (what.find((dir / "locked").string()) == std::string::npos) return 5;
      if (what.find(std::strerror(EACCES)) == std::string::npos) return 6;
    }
    return 0;
  });
  std::filesystem::permissions(dir / "locked", std::filesystem::perms::owner_all);
  BOOST_TEST(status == 0, "child failed at step " << status);
  BOOST_TEST(files_in(dir / "locked") == std::vector<std::string>{"test_1.tar"},
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

// Crafted malformed containers: each absurd size or offset is refused by name, before any read
// outside the file or any allocation it asks for.
BOOST_AUTO_TEST_SUITE(hostile_files)

namespace {

struct Crafted {
  std::string bytes;
  std::size_t end;  // end-of-central-directory record
  std::size_t cd;   // first central directory entry

  explicit Crafted(const std::filesystem::path& good) : bytes(read_bytes(good)) {
    end = bytes.size() - 22 - 19;
    BOOST_REQUIRE(bytes.compare(end, 4, "PK\x05\x06") == 0);
    cd = get(end + 16, 4);
  }
  uint64_t get(std::size_t at, int n) const {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
    return v;
  }
  Crafted& set(std::size_t at, int n, uint64_t v) {
    for (int i = 0; i < n; ++i) bytes[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return *this;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(absurd_sizes_and_offsets_are_refused) {
  TempDir dir;
  const auto good = dir / "good.pt";
  ckpt::save_checkpoint_file(real_checkpoint(0), good, *storage_under_test());
  const Crafted base(good);
  const std::vector<std::pair<std::string, Crafted>> cases{
      {"central directory out of bounds", Crafted(base).set(base.end + 16, 4, 0xfffffff0)},
      {"central directory out of bounds", Crafted(base).set(base.end + 12, 4, 0x7fffffff)},
      {"more entries than the central directory holds",
       Crafted(base).set(base.end + 10, 2, 0xfffe).set(base.end + 8, 2, 0xfffe)},
      {"zip64 locator missing", Crafted(base).set(base.end + 10, 2, 0xffff)},
      {"header out of bounds", Crafted(base).set(base.cd + 42, 4, 0xfffffff0)},
      {"data out of bounds",
       Crafted(base).set(base.cd + 20, 4, 0x7ffffff0).set(base.cd + 24, 4, 0x7ffffff0)},
      {"entry truncated", Crafted(base).set(base.cd + 28, 2, 0xffff)},
      {"is compressed", Crafted(base).set(base.cd + 10, 2, 8)},
      {"inconsistent sizes", Crafted(base).set(base.cd + 20, 4, 1)},
      {"bad central directory signature", Crafted(base).set(base.cd, 4, 0x12345678)},
      {"bad local header", Crafted(base).set(0, 4, 0)},
      {"no end-of-central-directory record", Crafted(base).set(base.end + 20, 2, 3)},
  };
  for (const auto& [expected, crafted] : cases) {
    BOOST_TEST_CONTEXT(expected) {
      const auto path = dir / "hostile.pt";
      write_bytes(path, crafted.bytes);
      BOOST_CHECK_EXCEPTION(ckpt::load_checkpoint_file(path, *storage_under_test()),
                            ckpt::CheckpointError, message_contains(path.string(), expected));
    }
  }
}

BOOST_AUTO_TEST_CASE(files_from_the_seed_corpus_and_python_load) {
  // The fuzzer's seeds written by Python's torch.save are real inputs: they must load cleanly.
  for (const char* name : {"python_state_dict.pt", "python_pymarlin.pt"}) {
    const auto path = std::filesystem::path(CKPT_SOURCE_DIR) / "tests" / "fuzz" / "seeds" / name;
    BOOST_TEST_CONTEXT(name) {
      ckpt::verify_file(path);
      BOOST_TEST(!ckpt::load_state_file(path).empty());
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
