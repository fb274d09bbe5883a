#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>

#include "test_util.h"

using ckpt::Checkpoint;
using ckpt::DefaultCheckpointer;
using ckpt::DefaultCheckpointerArguments;
using ckpt::test::count_files;
using ckpt::test::files_in;
using ckpt::test::message_contains;
using ckpt::test::storage_under_test;
using ckpt::test::TempDir;

namespace {

Checkpoint checkpoint_at_epoch(int64_t epoch) {
  Checkpoint checkpoint;
  checkpoint.trainer_state.insert_or_assign("last_epoch", epoch);
  return checkpoint;
}

DefaultCheckpointerArguments pymarlin_args(const TempDir& dir) {
  DefaultCheckpointerArguments args;
  args.period = 2;
  args.file_prefix = "test";
  args.file_ext = "tar";
  args.save_dir = dir / "save";
  args.model_state_save_dir = dir / "model";
  args.latest_pointer = false;  // PyMarlin's tests count files; PyMarlin writes no pointer
  return args;
}

}  // namespace

// PyMarlin's own tests (tests/utils/test_checkpointer.py), ported.
BOOST_AUTO_TEST_SUITE(pymarlin_cases)

BOOST_AUTO_TEST_CASE(test_save) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  args.checkpoint = false;
  DefaultCheckpointer off(args, storage_under_test());
  BOOST_TEST(!off.save(checkpoint_at_epoch(0), 0).has_value());
  BOOST_TEST(count_files(args.save_dir) == 0u);

  args.checkpoint = true;
  DefaultCheckpointer on(args, storage_under_test());
  BOOST_TEST(on.save(checkpoint_at_epoch(1), 1, /*force=*/true).has_value());
  BOOST_TEST(count_files(args.save_dir) == 1u);
  BOOST_TEST(!on.save(checkpoint_at_epoch(3), 3).has_value());
  BOOST_TEST(count_files(args.save_dir) == 1u);
  const auto path = on.save(checkpoint_at_epoch(4), 4);
  BOOST_TEST(count_files(args.save_dir) == 2u);
  BOOST_TEST(path.value() == args.save_dir / "test_4.tar");
  on.save(checkpoint_at_epoch(4), 4);
  BOOST_TEST(count_files(args.save_dir) == 2u);
}

BOOST_AUTO_TEST_CASE(test_save_model) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  const ckpt::StateDict weights{{"w", torch::ones({2})}};
  args.checkpoint = false;
  DefaultCheckpointer off(args, storage_under_test());
  BOOST_TEST(!off.save_model(weights, 0).has_value());
  BOOST_TEST(count_files(args.model_weights_dir()) == 0u);
  args.checkpoint = true;
  DefaultCheckpointer on(args, storage_under_test());
  on.save_model(weights, 0);
  on.save_model(weights, 1);  // period 2 does not apply
  BOOST_TEST(files_in(args.model_weights_dir()) ==
                 (std::vector<std::string>{"test_model_0.tar", "test_model_1.tar"}),
             boost::test_tools::per_element());
  BOOST_TEST((ckpt::load_state_file(args.model_weights_dir() / "test_model_1.tar",
                                    *storage_under_test()) == weights));
}

BOOST_AUTO_TEST_CASE(test_load) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  for (const std::optional<std::filesystem::path>& load_dir :
       {std::optional<std::filesystem::path>(dir / "missing"),
        std::optional<std::filesystem::path>(""), std::optional<std::filesystem::path>()}) {
    args.load_dir = load_dir;
    BOOST_TEST(DefaultCheckpointer(args, storage_under_test()).load().empty());
  }
  ckpt::test::make_directories(dir / "empty");
  args.load_dir = dir / "empty";
  BOOST_TEST(DefaultCheckpointer(args, storage_under_test()).load().empty());

  args.load_dir = args.save_dir;
  DefaultCheckpointer checkpointer(args, storage_under_test());
  checkpointer.save(checkpoint_at_epoch(0), 0);
  const Checkpoint loaded = checkpointer.load();
  BOOST_TEST(loaded.trainer_state.at("last_epoch").toInt() == 0);
  BOOST_TEST((loaded == checkpoint_at_epoch(0)));

  ckpt::save_checkpoint_file(checkpoint_at_epoch(1), args.save_dir / "custom_filename.tar",
                             *storage_under_test());
  checkpointer.save(checkpoint_at_epoch(8), 8);
  args.load_filename = "custom_filename.tar";
  BOOST_TEST(DefaultCheckpointer(args, storage_under_test())
                 .load()
                 .trainer_state.at("last_epoch")
                 .toInt() == 1);
}

BOOST_AUTO_TEST_CASE(test_get_latest_file) {
  TempDir dir;
  ckpt::test::write_text(dir / "test_1.tar", "");
  ckpt::test::write_text(dir / "test_2.tar", "");
  BOOST_TEST(ckpt::get_latest_file(dir.path(), "test", "tar", *storage_under_test()) ==
             dir / "test_2.tar");
}

BOOST_AUTO_TEST_SUITE_END()

// Where ckpt deliberately differs from PyMarlin: one case per fix.
BOOST_AUTO_TEST_SUITE(default_checkpointer)

BOOST_AUTO_TEST_CASE(defaults_are_pymarlins) {
  const DefaultCheckpointerArguments args;
  BOOST_TEST(args.checkpoint);
  BOOST_TEST(!args.delete_existing_checkpoints);
  BOOST_TEST(args.period == 1);
  BOOST_TEST(args.save_dir == std::filesystem::current_path() / "checkpoints");
  BOOST_TEST(!args.model_state_save_dir.has_value());  // unset: follows save_dir
  BOOST_TEST(args.model_weights_dir() == args.save_dir);
  BOOST_TEST(!args.load_dir.has_value());
  BOOST_TEST(!args.load_filename.has_value());
  BOOST_TEST(args.file_prefix == "model");
  BOOST_TEST(args.file_ext == "pt");
  BOOST_TEST(args.log_level == "INFO");
}

BOOST_AUTO_TEST_CASE(checkpoint_false_beats_force_and_index_zero_saves) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  args.checkpoint = false;
  BOOST_TEST(!DefaultCheckpointer(args, storage_under_test())
                  .save(checkpoint_at_epoch(1), 1, true)
                  .has_value());
  args.checkpoint = true;
  args.period = 5;
  BOOST_TEST(
      DefaultCheckpointer(args, storage_under_test()).save(checkpoint_at_epoch(0), 0).has_value());
}

BOOST_AUTO_TEST_CASE(invalid_period_is_an_error_naming_the_value) {
  TempDir dir;
  for (int64_t period : {0, -3}) {
    auto args = pymarlin_args(dir);
    args.period = period;
    BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()), ckpt::CheckpointError,
                          message_contains("period", std::to_string(period)));
  }
  auto args = pymarlin_args(dir);
  args.log_level = "chatty";
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()), ckpt::CheckpointError,
                        message_contains("log_level", "chatty"));
  args = pymarlin_args(dir);
  args.file_ext = ".pt";
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()), ckpt::CheckpointError,
                        message_contains("file_ext", ".pt"));
}

BOOST_AUTO_TEST_CASE(negative_index_is_an_error) {
  TempDir dir;
  DefaultCheckpointer checkpointer(pymarlin_args(dir), storage_under_test());
  BOOST_CHECK_EXCEPTION(checkpointer.save(checkpoint_at_epoch(0), -2), ckpt::CheckpointError,
                        message_contains("index -2"));
  BOOST_TEST(count_files(dir / "save") == 0u);
}

BOOST_AUTO_TEST_CASE(save_creates_directories_and_a_save_dir_that_is_a_file_is_an_error) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  args.save_dir = dir / "a" / "b" / "c";
  DefaultCheckpointer(args, storage_under_test()).save(checkpoint_at_epoch(0), 0);
  BOOST_TEST(ckpt::test::exists(args.save_dir / "test_0.tar"));

  ckpt::test::write_text(dir / "file", "precious");
  args.save_dir = dir / "file";
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()), ckpt::CheckpointError,
                        message_contains("save_dir", "file", "not a directory"));
  BOOST_TEST(ckpt::test::read_text(dir / "file") == "precious");
  BOOST_CHECK_EXCEPTION(ckpt::check_mk_dir(dir / "file", *storage_under_test()),
                        ckpt::CheckpointError, message_contains("not a directory"));
}

BOOST_AUTO_TEST_CASE(missing_load_filename_is_an_error_not_a_fresh_start) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  args.load_dir = dir.path();
  args.load_filename = "gone.tar";
  args.delete_existing_checkpoints = true;
  DefaultCheckpointer(pymarlin_args(dir), storage_under_test()).save(checkpoint_at_epoch(0), 0);
  // Refused at construction, before delete_existing_checkpoints could delete anything.
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()), ckpt::CheckpointError,
                        message_contains("load_filename", "gone.tar", "does not exist"));
  BOOST_TEST(count_files(dir / "save") == 1u);
  args.load_dir.reset();
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()), ckpt::CheckpointError,
                        message_contains("load_filename", "gone.tar", "load_dir"));
}

BOOST_AUTO_TEST_CASE(load_filename_wins_over_a_newer_file) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  args.period = 1;
  args.load_dir = args.save_dir;
  DefaultCheckpointer writer(args, storage_under_test());
  writer.save(checkpoint_at_epoch(3), 3);
  writer.save(checkpoint_at_epoch(9), 9);
  args.load_filename = "test_3.tar";
  BOOST_TEST(DefaultCheckpointer(args, storage_under_test())
                 .load()
                 .trainer_state.at("last_epoch")
                 .toInt() == 3);
  args.load_filename.reset();
  BOOST_TEST(DefaultCheckpointer(args, storage_under_test())
                 .load()
                 .trainer_state.at("last_epoch")
                 .toInt() == 9);
}

BOOST_AUTO_TEST_CASE(latest_file_matches_names_exactly) {
  TempDir dir;
  for (const char* name : {"model_model_30.pt", "model_3.ckpt", "model_10_step2.pt", "model_-7.pt",
                           "model_.pt", "model_x1.pt", "xmodel_50.pt", "model_40.pt.tmp",
                           ".model_60.pt.ckpt-tmp-abc123"}) {
    ckpt::test::write_text(dir / name, "");
  }
  BOOST_TEST(ckpt::get_latest_file(dir.path(), "model", "pt", *storage_under_test()).empty());
  ckpt::test::write_text(dir / "model_3.pt", "");
  ckpt::test::write_text(dir / "model_12.pt", "");
  BOOST_TEST(ckpt::get_latest_file(dir.path(), "model", "pt", *storage_under_test()) ==
             dir / "model_12.pt");
}

BOOST_AUTO_TEST_CASE(latest_file_is_recursive_numeric_and_deterministic) {
  TempDir dir;
  ckpt::test::make_directories(dir / "b" / "deep");
  ckpt::test::make_directories(dir / "a");
  ckpt::test::write_text(dir / "model_9.pt", "");
  ckpt::test::write_text(dir / "b" / "deep" / "model_10.pt", "");
  ckpt::test::write_text(dir / "a" / "model_10.pt", "");
  ckpt::test::make_directories(dir / "model_99.pt");  // a directory is no candidate
  BOOST_TEST(ckpt::get_latest_file(dir.path(), "model", "pt", *storage_under_test()) ==
             dir / "a" / "model_10.pt");
  BOOST_TEST(ckpt::get_latest_file(dir / "missing", "model", "pt", *storage_under_test()).empty());
}

BOOST_AUTO_TEST_CASE(delete_existing_removes_only_our_own_files) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  args.model_state_save_dir = args.save_dir;
  ckpt::test::make_directories(args.save_dir / "sub");
  const std::vector<std::string> ours{"test_0.tar", "test_12.tar", "test_model_3.tar"};
  const std::vector<std::string> theirs{"transcript", "notes.tar", "test_best.tar", "other_1.tar",
                                        "test_1.tar.bak"};
  for (const auto& name : ours) ckpt::test::write_text(args.save_dir / name, "x");
  for (const auto& name : theirs) ckpt::test::write_text(args.save_dir / name, "x");
  ckpt::test::write_text(args.save_dir / "sub" / "test_5.tar", "x");
  args.delete_existing_checkpoints = true;
  DefaultCheckpointer checkpointer(args, storage_under_test());
  auto expected = theirs;
  std::sort(expected.begin(), expected.end());
  BOOST_TEST(files_in(args.save_dir) == expected, boost::test_tools::per_element());
  BOOST_TEST(ckpt::test::exists(args.save_dir / "sub" / "test_5.tar"));
}

BOOST_AUTO_TEST_CASE(written_file_holds_exactly_pymarlins_three_keys) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  DefaultCheckpointer checkpointer(args, storage_under_test());
  const auto path = checkpointer.save(checkpoint_at_epoch(0), 0).value();
  const auto file = ckpt::load_state_file(path, *storage_under_test());
  BOOST_TEST(file.keys() == (std::vector<std::string>{"module_interface_state", "trainer_state",
                                                      "trainer_backend_state"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(model_state_save_dir_follows_save_dir_when_unset) {
  TempDir dir;
  DefaultCheckpointerArguments args;
  args.save_dir = dir / "run";  // only save_dir: the weights go there too, not to <cwd>
  args.log_level = "off";
  DefaultCheckpointer checkpointer(args, storage_under_test());
  const auto path = checkpointer.save_model({{"w", torch::ones({2})}}, 3);
  BOOST_TEST(path.value() == dir / "run" / "model_model_3.pt");
  BOOST_TEST(files_in(dir / "run") == std::vector<std::string>{"model_model_3.pt"},
             boost::test_tools::per_element());
  args.model_state_save_dir = std::filesystem::path();  // empty: no weights
  DefaultCheckpointer off(args, storage_under_test());
  BOOST_TEST(!off.save_model({{"w", torch::ones({2})}}, 4).has_value());
}

BOOST_AUTO_TEST_CASE(loaded_path_names_the_file_load_restored) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  args.load_dir = dir / "save";
  DefaultCheckpointer checkpointer(args, storage_under_test());
  BOOST_TEST(!checkpointer.loaded_path().has_value());  // never loaded
  BOOST_TEST(checkpointer.load().empty());
  BOOST_TEST(!checkpointer.loaded_path().has_value());  // fresh start
  checkpointer.save(checkpoint_at_epoch(0), 0);
  checkpointer.save(checkpoint_at_epoch(2), 2);
  BOOST_TEST(checkpointer.load().trainer_state.at("last_epoch").toInt() == 2);
  BOOST_TEST(checkpointer.loaded_path().value() == dir / "save" / "test_2.tar");
  // The newest does not verify: load() falls back, and says which file it used.
  ckpt::test::write_text(dir / "save" / "test_4.tar", "not a checkpoint");
  BOOST_TEST(checkpointer.load().trainer_state.at("last_epoch").toInt() == 2);
  BOOST_TEST(checkpointer.loaded_path().value() == dir / "save" / "test_2.tar");
  args.load_filename = "test_0.tar";
  DefaultCheckpointer named(args, storage_under_test());
  named.load();
  BOOST_TEST(named.loaded_path().value() == dir / "save" / "test_0.tar");
}

BOOST_AUTO_TEST_CASE(load_of_an_unreadable_file_is_an_error_naming_it) {
  TempDir dir;
  auto args = pymarlin_args(dir);
  ckpt::test::make_directories(args.save_dir);
  ckpt::test::write_text(args.save_dir / "test_4.tar", "garbage");
  args.load_dir = args.save_dir;
  BOOST_CHECK_EXCEPTION(DefaultCheckpointer(args, storage_under_test()).load(),
                        ckpt::CheckpointError, message_contains("test_4.tar"));
}

BOOST_AUTO_TEST_SUITE_END()
