// The "Storage backends" example of docs/storage.md, verbatim, so that it stays true.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/memory_storage.h>
#include <ckpt/serialization.h>
#include <ckpt/storage.h>

#include <boost/test/unit_test.hpp>
#include <torch/torch.h>

#include <functional>
#include <iostream>

namespace {

// ---- from docs/storage.md ----
class AnnouncedCommits final : public ckpt::StorageWrapper {
 public:
  AnnouncedCommits(std::shared_ptr<ckpt::Storage> target,
                   std::function<void(const std::filesystem::path&)> announce)
      : StorageWrapper(std::move(target)), announce_(std::move(announce)) {}

  std::unique_ptr<ckpt::WritableFile> create(const std::filesystem::path& path) override {
    return std::make_unique<File>(StorageWrapper::create(path), path, announce_);
  }

 private:
  struct File final : ckpt::WritableFile {
    File(std::unique_ptr<ckpt::WritableFile> inner, std::filesystem::path path,
         std::function<void(const std::filesystem::path&)> announce)
        : inner(std::move(inner)), path(std::move(path)), announce(std::move(announce)) {}
    void append(const void* data, std::size_t size) override { inner->append(data, size); }
    void commit() override {
      inner->commit();  // throws: nothing to announce
      announce(path);
    }
    std::unique_ptr<ckpt::WritableFile> inner;
    std::filesystem::path path;
    std::function<void(const std::filesystem::path&)> announce;
  };
  std::function<void(const std::filesystem::path&)> announce_;
};
// ---- end of docs/storage.md's example ----

}  // namespace

BOOST_AUTO_TEST_SUITE(storage_example)

BOOST_AUTO_TEST_CASE(announces_each_committed_file_and_nothing_that_failed) {
  // 400 kB: room for the first checkpoint and its pointer, not for a second, larger one.
  auto memory = std::make_shared<ckpt::MemoryStorage>(400 * 1024);
  std::vector<std::string> announced;
  auto storage = std::make_shared<AnnouncedCommits>(
      memory, [&](const std::filesystem::path& path) { announced.push_back(path.string()); });
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = "runs/a";
  args.load_dir = "runs/a";
  args.disk_margin_mb = 0;
  args.on_save_failure = "stop";  // the refused save below throws
  ckpt::DefaultCheckpointer checkpointer(args, storage);

  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state.insert_or_assign("w", torch::ones({1000}));
  checkpointer.save(checkpoint, 0);
  BOOST_TEST(announced == (std::vector<std::string>{"runs/a/model_0.pt", "runs/a/model_latest"}));

  checkpoint.module_interface_state.insert_or_assign("w", torch::ones({100000}));  // 400 kB
  BOOST_CHECK_THROW(checkpointer.save(checkpoint, 1), ckpt::CheckpointError);
  BOOST_TEST(announced.size() == 2u);  // the refused save announced nothing
  BOOST_TEST(!memory->stat("runs/a/model_1.pt"));

  const ckpt::Checkpoint loaded = ckpt::load_checkpoint_file("runs/a/model_0.pt", *storage);
  BOOST_TEST(torch::equal(loaded.module_interface_state.at("w").toTensor(), torch::ones({1000})));
}

BOOST_AUTO_TEST_SUITE_END()
