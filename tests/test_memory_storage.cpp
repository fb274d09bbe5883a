// MemoryStorage on its own (the in-memory Storage the *_memory suites run on), and what
// LocalStorage refuses or does not know: URLs, filesystems that report no blocks.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/local_storage.h>
#include <ckpt/memory_storage.h>
#include <ckpt/serialization.h>
#include <ckpt/storage.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include "test_util.h"

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

using ckpt::CheckpointError;
using ckpt::FileInfo;
using ckpt::MemoryStorage;
using ckpt::test::message_contains;
namespace fs = std::filesystem;

namespace {

void put(ckpt::Storage& storage, const fs::path& path, const std::string& bytes) {
  auto file = storage.create(path);
  file->append(bytes.data(), bytes.size());
  file->commit();
}

std::string get(ckpt::Storage& storage, const fs::path& path) {
  return ckpt::read_small_file(storage, path);
}

std::vector<std::string> paths_of(const std::vector<FileInfo>& files) {
  std::vector<std::string> paths;
  for (const auto& file : files) paths.push_back(file.path.string());
  return paths;
}

// A predicate for BOOST_CHECK_EXCEPTION: a CheckpointError with `error_number` whose message
// names `path`.
auto fails_with(int error_number, const std::string& path) {
  return [=](const CheckpointError& e) {
    const std::string what = e.what();
    BOOST_TEST_MESSAGE("error: " << what << " (errno " << e.error_number() << ")");
    return e.error_number() == error_number && what.find(path) != std::string::npos;
  };
}

}  // namespace

BOOST_AUTO_TEST_SUITE(memory_storage)

BOOST_AUTO_TEST_CASE(a_file_is_visible_only_once_committed) {
  MemoryStorage storage;
  {
    auto file = storage.create("d/a");
    file->append("hello ", 6);
    file->append("world", 5);
    BOOST_CHECK(!storage.stat("d/a"));
    BOOST_CHECK(storage.list("d", true).empty());
    BOOST_CHECK_EXCEPTION(storage.open("d/a"), CheckpointError, fails_with(ENOENT, "d/a"));
    BOOST_CHECK_EQUAL(storage.used_bytes(), 0u);
    file->commit();
    BOOST_CHECK_THROW(file->append("x", 1), CheckpointError);  // after commit
    BOOST_CHECK_THROW(file->commit(), CheckpointError);
  }
  BOOST_CHECK_EQUAL(get(storage, "d/a"), "hello world");
  BOOST_CHECK_EQUAL(storage.stat("d/a")->size, 11u);
  BOOST_CHECK_EQUAL(storage.used_bytes(), 11u);
  // A writer destroyed uncommitted leaves nothing, and the file it would have replaced untouched.
  {
    auto file = storage.create("d/b");
    file->append("lost", 4);
  }
  {
    auto file = storage.create("d/a");
    file->append("not this", 8);
  }
  BOOST_CHECK(!storage.stat("d/b"));
  BOOST_CHECK((paths_of(storage.list("d", false)) == std::vector<std::string>{"d/a"}));
  BOOST_CHECK_EQUAL(get(storage, "d/a"), "hello world");
}

BOOST_AUTO_TEST_CASE(a_replaced_file_stays_readable_to_an_open_reader) {
  MemoryStorage storage;
  put(storage, "f", "version one");
  const auto reader = storage.open("f");
  const int64_t first_mtime = storage.stat("f")->mtime_ns;
  BOOST_CHECK_GT(first_mtime, 0);
  put(storage, "f", "v2");
  std::string old(static_cast<std::size_t>(reader->size()), '\0');
  reader->read(0, old.size(), old.data());
  BOOST_CHECK_EQUAL(old, "version one");
  BOOST_CHECK_EQUAL(get(storage, "f"), "v2");
  BOOST_CHECK_GT(storage.stat("f")->mtime_ns, first_mtime);  // a rewrite is always a change
  BOOST_CHECK_EQUAL(storage.used_bytes(), 2u);
  // Removed: gone for new readers, still whole for the open one; removing again is no error.
  storage.remove("f");
  storage.remove("f");
  BOOST_CHECK(!storage.stat("f"));
  BOOST_CHECK_EQUAL(storage.used_bytes(), 0u);
  reader->read(8, 3, old.data());
  BOOST_CHECK_EQUAL(old.substr(0, 3), "one");
}

BOOST_AUTO_TEST_CASE(list_is_top_level_or_recursive_sorted_and_files_only) {
  MemoryStorage storage;
  for (const char* path : {"d/sub/deeper/e", "d/b", "other", "d/sub/c", "dx/f", "d/a", "d-y"}) {
    put(storage, path, path);
  }
  storage.create_directories("d/empty");
  BOOST_CHECK((paths_of(storage.list("d", false)) == std::vector<std::string>{"d/a", "d/b"}));
  BOOST_CHECK((paths_of(storage.list("d", true)) ==
               std::vector<std::string>{"d/a", "d/b", "d/sub/c", "d/sub/deeper/e"}));
  BOOST_CHECK((paths_of(storage.list("d/sub", false)) == std::vector<std::string>{"d/sub/c"}));
  // The same directory spelled otherwise lists the same files, named as the caller spelled it.
  BOOST_CHECK((paths_of(storage.list("d/", false)) == std::vector<std::string>{"d/a", "d/b"}));
  BOOST_CHECK((paths_of(storage.list(".", false)) == std::vector<std::string>{"./d-y", "./other"}));
  // Sizes and times as stat() reports them.
  const auto listed = storage.list("d", false);
  BOOST_REQUIRE_EQUAL(listed.size(), 2u);
  BOOST_CHECK_EQUAL(listed[0].size, 3u);
  BOOST_CHECK(!listed[0].is_directory);
  BOOST_CHECK_EQUAL(listed[0].mtime_ns, storage.stat("d/a")->mtime_ns);
  // Nothing there, a file, an empty directory: empty listings.
  BOOST_CHECK(storage.list("missing", true).empty());
  BOOST_CHECK(storage.list("d/a", true).empty());
  BOOST_CHECK(storage.list("d/empty", true).empty());
}

BOOST_AUTO_TEST_CASE(stat_reports_explicit_and_implicit_directories) {
  MemoryStorage storage;
  storage.create_directories("x/y/z");
  put(storage, "p/q/file", "12345");
  for (const char* dir : {"x", "x/y", "x/y/z", "p", "p/q", ".", "/"}) {
    BOOST_TEST_CONTEXT(dir) {
      const auto info = storage.stat(dir);
      BOOST_REQUIRE(info);
      BOOST_CHECK(info->is_directory);
      BOOST_CHECK_EQUAL(info->size, 0u);
    }
  }
  const auto file = storage.stat("p/q/file");
  BOOST_REQUIRE(file);
  BOOST_CHECK(!file->is_directory);
  BOOST_CHECK_EQUAL(file->size, 5u);
  BOOST_CHECK(!storage.stat("x/y/z/w"));
  BOOST_CHECK(!storage.stat("p/q/fil"));  // a prefix of a name is no directory
  // An implicit directory goes with its last file; an explicit one stays.
  storage.remove("p/q/file");
  BOOST_CHECK(!storage.stat("p/q"));
  BOOST_CHECK(storage.stat("x/y/z"));
  // Creating what exists is no error; a file is never turned into a directory.
  BOOST_CHECK_NO_THROW(storage.create_directories("x/y"));
  BOOST_CHECK_NO_THROW(storage.create_directories("/"));
}

BOOST_AUTO_TEST_CASE(errors_carry_errno_and_name_the_path) {
  MemoryStorage storage;
  put(storage, "d/a", "x");
  BOOST_CHECK_EXCEPTION(storage.open("d/missing"), CheckpointError,
                        fails_with(ENOENT, "d/missing"));
  BOOST_CHECK_EXCEPTION(storage.open("d"), CheckpointError, fails_with(EISDIR, "d"));
  BOOST_CHECK_EXCEPTION(storage.create("d"), CheckpointError, fails_with(EISDIR, "d"));
  BOOST_CHECK_EXCEPTION(storage.create("d/a/under_a_file"), CheckpointError,
                        fails_with(ENOTDIR, "d/a/under_a_file"));
  BOOST_CHECK_EXCEPTION(storage.create_directories("d/a/b"), CheckpointError,
                        fails_with(ENOTDIR, "d/a/b"));
  BOOST_CHECK_EXCEPTION(storage.create_directories("d/a"), CheckpointError,
                        fails_with(ENOTDIR, "d/a"));
  // None of them changed anything.
  BOOST_CHECK((paths_of(storage.list("d", true)) == std::vector<std::string>{"d/a"}));
  BOOST_CHECK_EQUAL(get(storage, "d/a"), "x");
}

BOOST_AUTO_TEST_CASE(capacity_bounds_commits_and_is_reported_as_available_space) {
  BOOST_CHECK(!MemoryStorage().available_space("anything"));  // no capacity: unknown
  MemoryStorage storage(100);
  BOOST_CHECK_EQUAL(*storage.available_space("d"), 100u);
  put(storage, "d/a", std::string(60, 'a'));
  BOOST_CHECK_EQUAL(*storage.available_space("d"), 40u);
  // Too big: the commit fails with ENOSPC naming the file, and nothing of it is visible.
  {
    auto file = storage.create("d/b");
    file->append(std::string(50, 'b').data(), 50);  // writing is not yet using the capacity
    BOOST_CHECK_EXCEPTION(file->commit(), CheckpointError, fails_with(ENOSPC, "d/b"));
  }
  BOOST_CHECK(!storage.stat("d/b"));
  BOOST_CHECK_EQUAL(*storage.available_space("d"), 40u);
  // Replacing a file counts only the difference; exactly full is allowed.
  put(storage, "d/a", std::string(100, 'A'));
  BOOST_CHECK_EQUAL(*storage.available_space("d"), 0u);
  BOOST_CHECK_EXCEPTION(put(storage, "d/c", "1"), CheckpointError, fails_with(ENOSPC, "d/c"));
  BOOST_CHECK_EQUAL(get(storage, "d/a"), std::string(100, 'A'));
  storage.remove("d/a");
  BOOST_CHECK_EQUAL(*storage.available_space("d"), 100u);
  BOOST_CHECK_EQUAL(storage.used_bytes(), 0u);
}

BOOST_AUTO_TEST_CASE(range_reads_past_the_end_throw_naming_the_key) {
  MemoryStorage storage;
  put(storage, "dir/k", "0123456789");
  const auto file = storage.open("dir/k");
  BOOST_CHECK_EQUAL(file->size(), 10u);
  char out[16] = {};
  file->read(5, 5, out);
  BOOST_CHECK_EQUAL(std::string(out, 5), "56789");
  file->read(10, 0, out);  // empty, at the end: fine
  for (const auto& [offset, size] : std::vector<std::pair<uint64_t, std::size_t>>{
           {8, 5}, {11, 0}, {0, 11}, {UINT64_MAX, 2}, {2, SIZE_MAX}}) {
    BOOST_TEST_CONTEXT(size << " bytes at " << offset) {
      BOOST_CHECK_EXCEPTION(file->read(offset, size, out), CheckpointError,
                            message_contains("dir/k", "past its end"));
    }
  }
  BOOST_CHECK_EQUAL(storage.bytes_read(), 5u);
}

BOOST_AUTO_TEST_CASE(locations_are_compared_after_lexical_normalisation) {
  MemoryStorage storage;
  put(storage, "a/./b", "one");
  BOOST_CHECK_EQUAL(get(storage, "a/b"), "one");
  BOOST_CHECK_EQUAL(get(storage, "a/c/../b"), "one");
  BOOST_CHECK(storage.stat("a//b"));
  BOOST_CHECK(storage.stat("a/")->is_directory);
  put(storage, "a/b", "two");  // the same file, replaced
  BOOST_CHECK_EQUAL(get(storage, "a/./b"), "two");
  BOOST_CHECK_EQUAL(storage.list("a/.", false).size(), 1u);
  BOOST_CHECK_EQUAL(storage.used_bytes(), 3u);
  storage.remove("./a/b");
  BOOST_CHECK(!storage.stat("a/b"));
}

// The whole checkpointer on it: its own listing shows what a save wrote, and a load reads it back.
BOOST_AUTO_TEST_CASE(a_checkpointer_saves_and_loads_through_it) {
  auto storage = std::make_shared<MemoryStorage>();
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = "/nowhere/run";
  args.model_state_save_dir = args.save_dir;
  args.load_dir = args.save_dir;
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state.insert_or_assign("w", torch::arange(4));
  ckpt::DefaultCheckpointer(args, storage).save(checkpoint, 3);
  BOOST_CHECK(!fs::exists("/nowhere"));  // nothing on the local disk
  BOOST_CHECK((ckpt::test::files_in(args.save_dir, *storage) ==
               std::vector<std::string>{"model_3.pt", "model_latest"}));
  BOOST_CHECK_EQUAL(get(*storage, "/nowhere/run/model_latest"), "model_3.pt\n");
  BOOST_CHECK(ckpt::DefaultCheckpointer(args, storage).load() == checkpoint);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(local_storage)

// `s3://bucket/x` is not a local path: LocalStorage refuses it by name instead of creating a
// directory `s3:`.
BOOST_AUTO_TEST_CASE(a_url_is_refused_naming_it) {
  ckpt::test::TempDir dir;
  const auto cwd = fs::current_path();
  fs::current_path(dir.path());  // where a directory named `s3:` would appear
  struct Back {
    fs::path to;
    ~Back() { fs::current_path(to); }
  } back{cwd};
  auto& storage = *ckpt::Storage::local();
  const fs::path url = "s3://bucket/x";
  const auto names_url = message_contains("s3://bucket/x", "URL");
  BOOST_CHECK_EXCEPTION(storage.create(url), CheckpointError, names_url);
  BOOST_CHECK_EXCEPTION(storage.open(url), CheckpointError, names_url);
  BOOST_CHECK_EXCEPTION(storage.stat(url), CheckpointError, names_url);
  BOOST_CHECK_EXCEPTION(storage.list(url, true), CheckpointError, names_url);
  BOOST_CHECK_EXCEPTION(storage.remove(url), CheckpointError, names_url);
  BOOST_CHECK_EXCEPTION(storage.create_directories(url), CheckpointError, names_url);
  BOOST_CHECK_EXCEPTION(storage.available_space(url), CheckpointError, names_url);
  BOOST_CHECK(!fs::exists(dir / "s3:"));
  // A colon elsewhere is an ordinary local name.
  BOOST_CHECK(!storage.stat("not-a-url:x"));

  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = "s3://bucket/run";
  args.model_state_save_dir = dir / "models";
  BOOST_CHECK_EXCEPTION(args.validate(storage), CheckpointError,
                        message_contains("invalid save_dir s3://bucket/run", "not a local path"));
  BOOST_CHECK_EXCEPTION((ckpt::DefaultCheckpointer{args, ckpt::Storage::local()}),
                        CheckpointError, message_contains("invalid save_dir s3://bucket/run"));
  // By default the storage follows the location, and a scheme this build has no storage for is
  // refused by name just the same.
  args.save_dir = "gs://bucket/run";
  const auto names_scheme = message_contains("invalid save_dir gs://bucket/run", "scheme 'gs'");
  BOOST_CHECK_EXCEPTION(args.validate(), CheckpointError, names_scheme);
  BOOST_CHECK_EXCEPTION(ckpt::DefaultCheckpointer{args}, CheckpointError, names_scheme);
  BOOST_CHECK(fs::is_empty(dir.path()));
  // The same location is a key like any other to a storage that takes it.
  BOOST_CHECK_NO_THROW(args.validate(*std::make_shared<MemoryStorage>()));
}

// A filesystem whose statvfs reports zero blocks (some FUSE and network filesystems): free space
// is unknown, so the pre-flight is skipped instead of calling the disk full.
BOOST_AUTO_TEST_CASE(unknown_free_space_lets_a_save_through_the_preflight) {
  struct NoBlocks final : ckpt::PosixFileSystemWrapper {
    using PosixFileSystemWrapper::PosixFileSystemWrapper;
    std::optional<uint64_t> available_space(const fs::path&) override {
      ++queries;
      return std::nullopt;
    }
    int queries = 0;
  };
  ckpt::test::TempDir dir;
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = dir / "save";
  args.model_state_save_dir = args.save_dir;
  args.disk_margin_mb = 1e9;  // a petabyte: no real disk has it to spare
  args.on_save_failure = "stop";  // the refusal itself is under test
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state.insert_or_assign("w", torch::ones({1024}));
  // The real filesystem knows its free space: refused.
  BOOST_CHECK_EXCEPTION(ckpt::DefaultCheckpointer(args, ckpt::Storage::local()).save(checkpoint, 0),
                        CheckpointError, message_contains("not enough free space", "model_0.pt"));
  BOOST_CHECK(ckpt::test::files_in(args.save_dir, *ckpt::Storage::local()).empty());
  // Zero blocks: let through, and written for real.
  auto fs = std::make_shared<NoBlocks>(ckpt::PosixFileSystem::real());
  auto storage = std::make_shared<ckpt::LocalStorage>(fs);
  BOOST_CHECK(!storage->available_space(dir.path()));
  const int queries = fs->queries;
  BOOST_REQUIRE(ckpt::DefaultCheckpointer(args, storage).save(checkpoint, 0));
  BOOST_CHECK_GT(fs->queries, queries);  // the save asked, and was told "unknown"
  ckpt::verify_file(args.save_dir / "model_0.pt");
  BOOST_CHECK(fs::exists(args.save_dir / "model_0.pt"));
}

BOOST_AUTO_TEST_SUITE_END()
