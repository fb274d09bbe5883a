// safetensors files: ckpt's writer against an independent reader written from the specification,
// ckpt's loader against an independent writer, hostile files, atomicity, and model_format.

#include "failing_storage.h"
#include "test_util.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>

namespace fs = std::filesystem;
using ckpt::CheckpointError;
using ckpt::test::message_contains;
using ckpt::test::TempDir;

namespace {

// Every dtype safetensors and ckpt share, odd shapes, a view and tied tensors.
ckpt::StateDict sample_tensors() {
  torch::manual_seed(7);
  const at::Tensor shared = torch::randn({4, 6});
  ckpt::StateDict state;
  state.insert_or_assign("f32", torch::randn({2, 3}));
  state.insert_or_assign("f64", torch::randn({5}, torch::kDouble));
  state.insert_or_assign("f16", torch::randn({3, 1}).to(torch::kHalf));
  state.insert_or_assign("bf16", torch::randn({7}).to(torch::kBFloat16));
  state.insert_or_assign("i64", torch::arange(-3, 9, torch::kLong).reshape({3, 4}));
  state.insert_or_assign("i32", torch::tensor({-2147483647 - 1, 0, 2147483647}, torch::kInt));
  state.insert_or_assign("i16", torch::tensor({-32768, 1, 32767}, torch::kShort));
  state.insert_or_assign("i8", torch::tensor({-128, 0, 127}, torch::kChar));
  state.insert_or_assign("u8", torch::tensor({0, 17, 255}, torch::kByte));
  state.insert_or_assign("bool", torch::tensor({true, false, true}));
  state.insert_or_assign("scalar", torch::tensor(3.5));
  state.insert_or_assign("empty", torch::zeros({0, 4}));
  state.insert_or_assign("encoder.weight", shared);
  state.insert_or_assign("decoder.weight", shared);        // tied: the same tensor
  state.insert_or_assign("decoder.weight_t", shared.t());  // a non-contiguous view
  state.insert_or_assign("row", shared.select(0, 2));      // a view at an offset
  return state;
}

void check_equal(const ckpt::StateDict& actual, const ckpt::StateDict& expected) {
  BOOST_REQUIRE(actual.keys() == expected.keys());
  for (const auto& [key, value] : expected) {
    BOOST_TEST_CONTEXT("key " << key) {
      const at::Tensor& a = actual.at(key).toTensor();
      const at::Tensor& e = value.toTensor();
      BOOST_CHECK(a.scalar_type() == e.scalar_type());
      BOOST_CHECK(a.sizes() == e.sizes());
      BOOST_CHECK(torch::equal(a, e));
    }
  }
}

std::string read_bytes(const fs::path& path) { return ckpt::test::read_text(path); }

void write_bytes(const fs::path& path, const std::string& bytes) {
  ckpt::test::write_text(path, bytes);
}

// A file with `header` (padded) and `buffer`, as a hostile writer would make it.
std::string make_file(const std::string& header, const std::string& buffer) {
  std::string text = header;
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return file + text + buffer;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(safetensors)

BOOST_AUTO_TEST_CASE(round_trip_in_cpp_and_against_the_specification_reader) {
  TempDir dir;
  const ckpt::StateDict state = sample_tensors();
  const fs::path file = dir / "weights.safetensors";
  const uint64_t bytes = ckpt::save_safetensors_file(state, file);
  BOOST_CHECK_EQUAL(bytes, fs::file_size(file));
  BOOST_CHECK(ckpt::is_safetensors_file(file));
  check_equal(ckpt::load_safetensors_file(file), state);

  // The layout, byte by byte: little-endian length, padded JSON, tied names each with bytes.
  const std::string raw = read_bytes(file);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i)
    header_size = (header_size << 8) | static_cast<unsigned char>(raw[i]);
  BOOST_CHECK_EQUAL(header_size % 8, 0u);
  const auto header = nlohmann::json::parse(raw.substr(8, header_size));
  BOOST_CHECK_EQUAL(header["__metadata__"]["format"], "pt");
  BOOST_CHECK_EQUAL(header["__metadata__"]["ckpt_format_version"], "1");
  BOOST_CHECK_EQUAL(header["f16"]["dtype"], "F16");
  BOOST_CHECK_EQUAL(header["bf16"]["dtype"], "BF16");
  BOOST_CHECK_EQUAL(header["bool"]["dtype"], "BOOL");
  BOOST_CHECK(header["scalar"]["shape"] == nlohmann::json::array());
  BOOST_CHECK(header["encoder.weight"]["data_offsets"] != header["decoder.weight"]["data_offsets"]);
  BOOST_CHECK_EQUAL(header.size(), state.size() + 1);

  // Python, from the specification only, against the same tensors saved with torch.save's format.
  ckpt::save_state_file(state, dir / "reference.pt");
  const std::string out = ckpt::test::run_python(
      "safetensors_spec.py", "check " + ckpt::test::quote(file.string()) + " " +
                                 ckpt::test::quote((dir / "reference.pt").string()));
  BOOST_CHECK_MESSAGE(out.find("ok 16 tensors") != std::string::npos, out);
  BOOST_CHECK_MESSAGE(out.find("\"ckpt_format_version\": \"1\"") != std::string::npos, out);
}

BOOST_AUTO_TEST_CASE(loads_a_file_written_by_the_specification_writer) {
  TempDir dir;
  const ckpt::StateDict state = sample_tensors();
  ckpt::save_state_file(state, dir / "reference.pt");
  ckpt::test::run_python("safetensors_spec.py",
                         "write " + ckpt::test::quote((dir / "python.safetensors").string()) + " " +
                             ckpt::test::quote((dir / "reference.pt").string()));
  ckpt::StateDict loaded = ckpt::load_safetensors_file(dir / "python.safetensors");
  BOOST_CHECK(ckpt::verify_safetensors_file(dir / "python.safetensors").empty());  // no metadata
  // The writer orders by dtype size, then name; compare by name.
  BOOST_REQUIRE_EQUAL(loaded.size(), state.size());
  for (const auto& [key, value] : state) {
    BOOST_TEST_CONTEXT("key " << key) {
      BOOST_CHECK(loaded.at(key).toTensor().scalar_type() == value.toTensor().scalar_type());
      BOOST_CHECK(torch::equal(loaded.at(key).toTensor(), value.toTensor()));
    }
  }
}

BOOST_AUTO_TEST_CASE(refuses_what_safetensors_cannot_hold) {
  TempDir dir;
  const fs::path file = dir / "w.safetensors";
  ckpt::StateDict with_int{{"weight", torch::ones({2})}, {"step", int64_t{3}}};
  BOOST_CHECK_EXCEPTION(ckpt::save_safetensors_file(with_int, file), CheckpointError,
                        message_contains(file.string(), "'step'", "not a tensor"));
  ckpt::StateDict complex{{"z", torch::zeros({2}, torch::kComplexFloat)}};
  BOOST_CHECK_EXCEPTION(ckpt::save_safetensors_file(complex, file), CheckpointError,
                        message_contains(file.string(), "'z'", "ComplexFloat"));
  ckpt::StateDict reserved{{"__metadata__", torch::ones({1})}};
  BOOST_CHECK_EXCEPTION(ckpt::save_safetensors_file(reserved, file), CheckpointError,
                        message_contains("'__metadata__'", "reserved"));
  BOOST_CHECK(ckpt::test::files_in(dir.path()).empty());  // nothing written, no temporary left
}

BOOST_AUTO_TEST_CASE(hostile_and_damaged_files_get_a_clear_error) {
  TempDir dir;
  const fs::path good = dir / "good.safetensors";
  ckpt::save_safetensors_file(sample_tensors(), good);
  const std::string raw = read_bytes(good);
  const fs::path bad = dir / "bad.safetensors";
  auto check_refused = [&](const std::string& bytes, const std::string& why) {
    write_bytes(bad, bytes);
    BOOST_TEST_CONTEXT(why) {
      BOOST_CHECK_EXCEPTION(ckpt::load_safetensors_file(bad), CheckpointError,
                            message_contains(bad.string(), why));
      BOOST_CHECK_EXCEPTION(ckpt::verify_safetensors_file(bad), CheckpointError,
                            message_contains(bad.string(), why));
    }
  };
  std::string flipped = raw;
  flipped[flipped.size() - 5] ^= 0x10;
  check_refused(flipped, "checksum mismatch");
  check_refused(raw.substr(0, raw.size() - 4), "outside the");
  check_refused(raw.substr(0, 5), "no header length");
  std::string huge = raw;
  huge[6] = '\x7f';
  check_refused(huge, "header length");
  check_refused(make_file("{\"a\": [1, 2", ""), "header is not JSON");
  check_refused(make_file("[1]", ""), "not a JSON object");
  check_refused(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          std::string(8, '\0')),
                "overlap");
  check_refused(
      make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "need 12");
  check_refused(
      make_file(R"({"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "unsupported dtype 'C64'");
  check_refused(make_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],)"
                          R"("data_offsets":[0,8]}})",
                          std::string(8, '\0')),
                "bytes but its dtype and shape need");
  check_refused(
      make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')),
      "not a non-negative integer");
  check_refused(make_file(R"({"__metadata__":{"ckpt_format_version":"2"}})", ""),
                "format version 2");
  BOOST_CHECK_EXCEPTION(ckpt::load_safetensors_file(dir / "missing.safetensors"), CheckpointError,
                        message_contains((dir / "missing.safetensors").string(), "does not exist"));
  BOOST_CHECK(!ckpt::is_safetensors_file(dir / "missing.safetensors"));
  ckpt::save_state_file(sample_tensors(), dir / "zip.pt");
  BOOST_CHECK(!ckpt::is_safetensors_file(dir / "zip.pt"));
}

BOOST_AUTO_TEST_CASE(a_failed_save_leaves_the_previous_file_and_no_temporary) {
  TempDir dir;
  const fs::path file = dir / "w.safetensors";
  ckpt::StateDict first{{"w", torch::ones({3})}};
  ckpt::save_safetensors_file(first, file);
  const std::string before = read_bytes(file);
  auto storage = std::make_shared<ckpt::test::FailingStorage>();
  for (const auto op : {ckpt::test::Op::append, ckpt::test::Op::sync, ckpt::test::Op::rename}) {
    BOOST_TEST_CONTEXT(ckpt::test::op_name(op)) {
      storage->fail(op, 0, ENOSPC);
      BOOST_CHECK_EXCEPTION(ckpt::save_safetensors_file(sample_tensors(), file, *storage),
                            CheckpointError,
                            message_contains(file.string(), std::strerror(ENOSPC)));
      storage->disarm();
      BOOST_CHECK(read_bytes(file) == before);
      BOOST_CHECK(ckpt::test::files_in(dir.path()) == std::vector<std::string>{"w.safetensors"});
    }
  }
}

BOOST_AUTO_TEST_CASE(default_checkpointer_model_format) {
  TempDir dir;
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = dir / "save";
  args.model_state_save_dir = dir / "models";
  args.model_format = "safetensors";
  args.file_ext = "tar";
  ckpt::StateDict weights{{"fc.weight", torch::randn({3, 2})}, {"fc.bias", torch::randn({3})}};
  {
    ckpt::DefaultCheckpointer checkpointer(args);
    const auto path = checkpointer.save_model(weights, 4);
    BOOST_REQUIRE(path);
    // The extension follows the format, not file_ext; checkpoints keep file_ext.
    BOOST_CHECK_EQUAL(*path, dir / "models" / "model_model_4.safetensors");
    check_equal(ckpt::load_safetensors_file(*path), weights);
    BOOST_CHECK_EQUAL(*checkpointer.save(ckpt::Checkpoint{}, 4), dir / "save" / "model_4.tar");
  }
  // Its own files, so delete_existing_checkpoints removes them (and nothing else).
  ckpt::test::write_text(dir / "models" / "notes.safetensors", "keep me");
  args.delete_existing_checkpoints = true;
  ckpt::DefaultCheckpointer cleaner(args);
  BOOST_CHECK(ckpt::test::files_in(dir / "models") ==
              std::vector<std::string>{"notes.safetensors"});

  args.model_format = "onnx";
  BOOST_CHECK_EXCEPTION(args.validate(), CheckpointError,
                        message_contains("invalid model_format 'onnx'", "pt or safetensors"));
}

BOOST_AUTO_TEST_SUITE_END()
