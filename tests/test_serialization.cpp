#include <ckpt/checkpoint_error.h>
#include <ckpt/serialization.h>

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include "test_util.h"

using namespace std::string_literals;
using ckpt::StateDict;
using ckpt::test::message_contains;
using ckpt::test::TempDir;

namespace {

// A torch.save-style zip whose data.pkl is `pickle` (and optional extra records).
void write_zip(const std::filesystem::path& path, const std::string& pickle,
               const std::vector<std::pair<std::string, std::string>>& records = {}) {
  caffe2::serialize::PyTorchStreamWriter writer(path.string());
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  for (const auto& [name, data] : records) writer.writeRecord(name, data.data(), data.size());
  writer.writeEndOfFile();
}

std::string proto2(const std::string& body) { return std::string("\x80\x02", 2) + body + "."; }

}  // namespace

BOOST_AUTO_TEST_SUITE(serialization)

BOOST_AUTO_TEST_CASE(save_leaves_no_temporary_and_replaces_atomically) {
  TempDir dir;
  ckpt::save_state_file(StateDict{{"v", int64_t{1}}}, dir / "a.pt");
  ckpt::save_state_file(StateDict{{"v", int64_t{2}}}, dir / "a.pt");
  BOOST_TEST(ckpt::test::files_in(dir.path()) == std::vector<std::string>{"a.pt"},
             boost::test_tools::per_element());
  BOOST_TEST(ckpt::load_state_file(dir / "a.pt").at("v").toInt() == 2);
}

BOOST_AUTO_TEST_CASE(save_into_missing_directory_names_the_path_and_writes_nothing) {
  TempDir dir;
  BOOST_CHECK_EXCEPTION(ckpt::save_state_file(StateDict{}, dir / "missing" / "a.pt"),
                        ckpt::CheckpointError, message_contains("missing/a.pt"));
  BOOST_TEST(!std::filesystem::exists(dir / "missing"));
}

BOOST_AUTO_TEST_CASE(failed_save_keeps_the_previous_file) {
  TempDir dir;
  ckpt::save_state_file(StateDict{{"v", int64_t{1}}}, dir / "a.pt");
  StateDict bad{{"v", torch::ones({2}).to_sparse()}};
  BOOST_CHECK_THROW(ckpt::save_state_file(bad, dir / "a.pt"), ckpt::CheckpointError);
  BOOST_TEST(ckpt::load_state_file(dir / "a.pt").at("v").toInt() == 1);
  BOOST_TEST(ckpt::test::count_files(dir.path()) == 1u);
}

BOOST_AUTO_TEST_CASE(stores_the_format_version) {
  TempDir dir;
  ckpt::save_state_file(StateDict{}, dir / "a.pt");
  caffe2::serialize::PyTorchStreamReader reader((dir / "a.pt").string());
  BOOST_REQUIRE(reader.hasRecord("ckpt_format_version"));
  auto [data, size] = reader.getRecord("ckpt_format_version");
  BOOST_TEST(std::string(static_cast<const char*>(data.get()), size) ==
             std::to_string(ckpt::kFormatVersion) + "\n");
}

BOOST_AUTO_TEST_CASE(refuses_a_newer_format_version) {
  TempDir dir;
  write_zip(dir / "new.pt", proto2("}"s), {{"ckpt_format_version", "99\n"}});
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "new.pt"), ckpt::CheckpointError,
                        message_contains("new.pt", "format version 99"));
}

BOOST_AUTO_TEST_CASE(missing_empty_and_garbage_files_are_named) {
  TempDir dir;
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "none.pt"), ckpt::CheckpointError,
                        message_contains("none.pt", "does not exist"));
  ckpt::test::write_text(dir / "empty.pt", "");
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "empty.pt"), ckpt::CheckpointError,
                        message_contains("empty.pt", "empty"));
  ckpt::test::write_text(dir / "text.pt", "this is not a checkpoint at all, just some text\n");
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "text.pt"), ckpt::CheckpointError,
                        message_contains("text.pt"));
  std::filesystem::create_directory(dir / "dir.pt");
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "dir.pt"), ckpt::CheckpointError,
                        message_contains("dir.pt", "not a regular file"));
}

BOOST_AUTO_TEST_CASE(refuses_globals_outside_the_allowlist) {
  TempDir dir;
  write_zip(dir / "evil.pt", proto2("cposix\nsystem\n(X\x05\0\0\0touchtR"s));
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "evil.pt"), ckpt::CheckpointError,
                        message_contains("evil.pt", "posix.system", "not allowed"));
}

BOOST_AUTO_TEST_CASE(refuses_unknown_opcodes_and_truncated_pickles) {
  TempDir dir;
  write_zip(dir / "op.pt", proto2("}\xff"s));
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "op.pt"), ckpt::CheckpointError,
                        message_contains("op.pt", "opcode 0xff"));
  write_zip(dir / "short.pt", "\x80\x02X\xff\0\0\0ab"s);
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "short.pt"), ckpt::CheckpointError,
                        message_contains("short.pt", "truncated"));
}

BOOST_AUTO_TEST_CASE(refuses_tensors_larger_than_their_storage) {
  TempDir dir;
  // A tensor of shape (100,) over a storage of 2 floats.
  const std::string pickle = proto2(
      "}(X\x01\0\0\0t" "ctorch._utils\n_rebuild_tensor_v2\n("
      "(X\x07\0\0\0storage" "ctorch\nFloatStorage\n" "X\x01\0\0\0" "0" "X\x03\0\0\0cpu" "K\x02tQ"
      "K\x00" "K\x64\x85" "K\x01\x85" "\x89" "}" "tR" "u"s);
  write_zip(dir / "big.pt", pickle, {{"data/0", std::string(8, '\0')}});
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "big.pt"), ckpt::CheckpointError,
                        message_contains("big.pt", "needs more than the storage's 2 elements"));
}

BOOST_AUTO_TEST_CASE(refuses_self_containing_and_deeply_nested_values) {
  TempDir dir;
  // A list appended to itself: ] q0 h0 a
  write_zip(dir / "cycle.pt", proto2("]q\x00h\x00" "a"s));
  BOOST_CHECK_EXCEPTION(ckpt::load_ivalue_file(dir / "cycle.pt"), ckpt::CheckpointError,
                        message_contains("cycle.pt", "nested deeper"));
  std::string deep;
  for (int i = 0; i < 2000; ++i) deep += "]";
  for (int i = 0; i < 1999; ++i) deep += "a";
  write_zip(dir / "deep.pt", proto2(deep));
  BOOST_CHECK_EXCEPTION(ckpt::load_ivalue_file(dir / "deep.pt"), ckpt::CheckpointError,
                        message_contains("deep.pt", "nested deeper"));
}

BOOST_AUTO_TEST_CASE(checkpoint_with_unknown_key_is_an_error_naming_it) {
  TempDir dir;
  ckpt::save_state_file(StateDict{{"trainer_state", ckpt::StateDict{}.to_ivalue()},
                                  {"surprise", int64_t{1}}},
                        dir / "c.pt");
  BOOST_CHECK_EXCEPTION(ckpt::load_checkpoint_file(dir / "c.pt"), ckpt::CheckpointError,
                        message_contains("c.pt", "'surprise'"));
}

BOOST_AUTO_TEST_CASE(checkpoint_with_none_or_missing_states_loads_them_empty) {
  TempDir dir;
  ckpt::save_state_file(StateDict{{"module_interface_state", c10::IValue()},
                                  {"trainer_state", StateDict{{"last_epoch", int64_t{0}}}.to_ivalue()}},
                        dir / "c.pt");
  const auto checkpoint = ckpt::load_checkpoint_file(dir / "c.pt");
  BOOST_TEST(checkpoint.module_interface_state.empty());
  BOOST_TEST(checkpoint.trainer_backend_state.empty());
  BOOST_TEST(checkpoint.trainer_state.at("last_epoch").toInt() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
