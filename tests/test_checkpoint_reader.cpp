// CheckpointReader (issue 15): lazy open, partial loads that read only their records, per-record
// verification, and the failures a partial read must still catch. The suite runs on the local
// filesystem (memory-mapped reads) and, as partial_loads_memory / partial_loads_s3, on
// MemoryStorage and the S3 gateway (ranged reads).
#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_reader.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "test_util.h"
#include "torch_compat.h"

using ckpt::test::message_contains;
using ckpt::test::storage_under_test;
using ckpt::test::TempDir;

namespace {

// A module + Adam checkpoint in PyMarlin's layout: the optimizer's two moments make the file
// about three times the weights. The first weight is filled with 1.5 and the first moment with
// 7.25, so a test can find their bytes in the file.
struct ModelAndAdam {
  torch::nn::Sequential model{torch::nn::Linear(256, 512), torch::nn::ReLU(),
                              torch::nn::Linear(512, 256)};
  std::unique_ptr<torch::optim::Adam> adam;
  ckpt::StateDict state;

  ModelAndAdam() {
    torch::manual_seed(5);
    adam =
        std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(1e-3));
    model->forward(torch::randn({8, 256})).sum().backward();
    adam->step();
    torch::NoGradGuard no_grad;
    model->parameters()[0].fill_(1.5f);
    auto& adam_state = static_cast<torch::optim::AdamParamState&>(
        *adam->state().at(ckpt::compat::optimizer_state_key(model->parameters()[0])));
    adam_state.exp_avg().fill_(7.25f);
    c10::impl::GenericList optimizers(c10::AnyType::get());
    optimizers.push_back(ckpt::optimizer_state(*adam).to_ivalue());
    ckpt::StateDict trainer;
    trainer.insert_or_assign("optimizers", optimizers);
    trainer.insert_or_assign("last_epoch", int64_t{3});
    state.insert_or_assign("module_interface_state", ckpt::module_state(*model).to_ivalue());
    state.insert_or_assign("trainer_state", trainer.to_ivalue());
    state.insert_or_assign("trainer_backend_state", ckpt::StateDict().to_ivalue());
  }
};

// The offset in `path` of the first run of 64 bytes of the float `value`.
std::size_t offset_of(const std::filesystem::path& path, float value) {
  const std::string bytes = ckpt::test::read_text(path);
  std::string pattern;
  for (int i = 0; i < 16; ++i) pattern.append(reinterpret_cast<const char*>(&value), sizeof value);
  const std::size_t at = bytes.find(pattern);
  BOOST_REQUIRE_MESSAGE(at != std::string::npos, "pattern not found in " << path);
  return at;
}

// A module + Adam checkpoint saved as model_3.pt in a fresh directory of the storage under test.
struct SavedCheckpoint {
  TempDir dir;
  ModelAndAdam m;
  ckpt::Storage& storage = *storage_under_test();
  const std::filesystem::path path = dir / "model_3.pt";
  SavedCheckpoint() { ckpt::save_state_file(m.state, path, storage); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(partial_loads)

BOOST_FIXTURE_TEST_CASE(a_subtree_reads_only_its_records, SavedCheckpoint) {
  const ckpt::StateDict full = ckpt::load_state_file(path, storage);

  const ckpt::CheckpointReader reader(path, storage);
  const uint64_t opened = reader.bytes_read();
  const ckpt::StateDict weights = reader.load_state("module_interface_state");
  BOOST_TEST(ckpt::deep_equal(weights.to_ivalue(), full.at("module_interface_state")));
  // The weights are a third of the tensor bytes; Adam's two moments are the rest.
  const double share = static_cast<double>(reader.bytes_read()) / reader.file_size();
  BOOST_TEST_MESSAGE("weights read " << reader.bytes_read() << " of " << reader.file_size()
                                     << " bytes (" << share * 100 << "%), " << opened
                                     << " of them at open");
  BOOST_TEST(share <= 0.40);
  BOOST_TEST(share >= 0.30);  // it did read the weights

  // Int keys (an optimizer's per-parameter state) and list indices are steps too.
  const c10::IValue moments = reader.load("trainer_state/optimizers/0/state/0");
  BOOST_TEST(ckpt::deep_equal(
      moments, ckpt::value_at_key(full.to_ivalue(), "trainer_state/optimizers/0/state/0", "full")));
  BOOST_TEST(reader.load("trainer_state/last_epoch").toInt() == 3);
  // The whole value through the reader is the whole file.
  BOOST_TEST(ckpt::deep_equal(reader.load(), full.to_ivalue()));
}

BOOST_AUTO_TEST_CASE(bytes_read_counts_each_byte_of_the_file_once) {
  // A small file (about 5 KB, within the tail read at open), read whole several ways: the zip
  // directory, data.pkl and the records are viewed more than once, and bytes_read() once
  // reported 13095 of 8005 bytes.
  TempDir dir;
  ckpt::Storage& storage = *storage_under_test();
  const auto path = dir / "small.pt";
  ckpt::StateDict state{{"w", torch::ones({1000})}, {"b", torch::zeros({10})},
                        {"step", int64_t{15}}};
  ckpt::save_state_file(state, path, storage);
  const ckpt::CheckpointReader reader(path, storage);
  BOOST_TEST(reader.file_size() < 16384u);
  reader.load("w");
  reader.load("w");  // the same record again adds nothing
  BOOST_TEST(reader.bytes_read() <= reader.file_size());
  reader.load("", ckpt::Verification::records_read);
  reader.load("", ckpt::Verification::whole_file);  // every byte, checked by the file's CRC-32
  reader.load("", ckpt::Verification::records_read);
  BOOST_TEST_MESSAGE(reader.bytes_read() << " of " << reader.file_size() << " bytes read");
  BOOST_TEST(reader.bytes_read() == reader.file_size());
}

BOOST_FIXTURE_TEST_CASE(the_outline_has_every_shape_and_reads_no_tensor, SavedCheckpoint) {
  const ckpt::CheckpointReader reader(path, storage);
  const c10::IValue outline = reader.outline("module_interface_state");
  const auto weights = ckpt::StateDict::from_ivalue(outline);
  BOOST_TEST(weights.keys() == ckpt::module_state(*m.model).keys(),
             boost::test_tools::per_element());
  const at::Tensor w = weights.at("0.weight").toTensor();
  BOOST_TEST(w.is_meta());
  BOOST_TEST(w.sizes() == at::IntArrayRef({512, 256}), boost::test_tools::per_element());
  BOOST_TEST(w.scalar_type() == at::kFloat);
  BOOST_TEST(reader.contains("trainer_state/optimizers/0/param_groups"));
  BOOST_TEST(!reader.contains("trainer_state/optimizers/1"));
  // The directory and data.pkl only: a few KiB (plus the last 64 KiB read as one piece).
  BOOST_TEST(reader.bytes_read() < reader.file_size() / 10);
}

BOOST_FIXTURE_TEST_CASE(a_corrupt_record_outside_the_subtree_is_never_read, SavedCheckpoint) {
  ckpt::test::flip_byte(path, offset_of(path, 7.25f) + 5);  // inside the first moment

  const ckpt::CheckpointReader reader(path, storage);
  BOOST_TEST(ckpt::deep_equal(reader.load("module_interface_state"),
                              m.state.at("module_interface_state")));
  // What does read the damaged record fails, naming it.
  BOOST_CHECK_EXCEPTION(reader.load("trainer_state"), ckpt::CheckpointError,
                        message_contains("checksum mismatch in record 'data/", "model_3.pt"));
  BOOST_CHECK_EXCEPTION(reader.load("module_interface_state", ckpt::Verification::whole_file),
                        ckpt::CheckpointError, message_contains("checksum mismatch", "model_3.pt"));
  BOOST_CHECK_EXCEPTION(ckpt::load_ivalue_file(path, storage), ckpt::CheckpointError,
                        message_contains("checksum mismatch in record 'data/"));
}

BOOST_FIXTURE_TEST_CASE(a_corrupt_record_inside_the_subtree_fails_before_any_tensor_is_returned,
                        SavedCheckpoint) {
  ckpt::test::flip_byte(path, offset_of(path, 1.5f) + 9);  // inside the first weight

  const ckpt::CheckpointReader reader(path, storage);
  BOOST_CHECK_EXCEPTION(reader.load("module_interface_state"), ckpt::CheckpointError,
                        message_contains("checksum mismatch in record 'data/", "model_3.pt"));
  BOOST_CHECK_EXCEPTION(reader.load("module_interface_state/0.weight"), ckpt::CheckpointError,
                        message_contains("checksum mismatch in record 'data/"));
  // The optimizer's records are intact and still read.
  BOOST_CHECK_NO_THROW(reader.load("trainer_state/optimizers/0"));
}

BOOST_FIXTURE_TEST_CASE(truncated_and_damaged_files_fail_at_open_naming_the_file, SavedCheckpoint) {
  const std::string bytes = ckpt::test::read_text(path);
  for (const std::size_t keep : {bytes.size() - 1, bytes.size() / 2, std::size_t{40}}) {
    const auto cut = dir / ("cut_" + std::to_string(keep) + ".pt");
    ckpt::test::write_text(cut, bytes.substr(0, keep));
    BOOST_CHECK_EXCEPTION(ckpt::CheckpointReader(cut, storage), ckpt::CheckpointError,
                          message_contains(cut.string(), "truncated"));
  }
  const auto empty = dir / "empty.pt";
  ckpt::test::write_text(empty, "");
  BOOST_CHECK_EXCEPTION(ckpt::CheckpointReader(empty, storage), ckpt::CheckpointError,
                        message_contains("empty.pt is empty"));
  BOOST_CHECK_EXCEPTION(ckpt::CheckpointReader(dir / "absent.pt", storage), ckpt::CheckpointError,
                        message_contains("absent.pt does not exist"));
  // data.pkl is checked at open: a flipped byte in it fails there.
  const std::size_t pickle_at = bytes.find("module_interface_state");
  BOOST_REQUIRE(pickle_at != std::string::npos);
  ckpt::test::flip_byte(path, pickle_at);
  BOOST_CHECK_EXCEPTION(ckpt::CheckpointReader(path, storage), ckpt::CheckpointError,
                        message_contains("checksum mismatch in record 'data.pkl'"));
}

BOOST_FIXTURE_TEST_CASE(a_missing_key_names_what_is_there, SavedCheckpoint) {
  const ckpt::CheckpointReader reader(path, storage);
  BOOST_CHECK_EXCEPTION(reader.load("modul_interface_state"), ckpt::CheckpointError,
                        message_contains("no 'modul_interface_state' in the top level",
                                         "model_3.pt", "module_interface_state, trainer_state"));
  BOOST_CHECK_EXCEPTION(reader.load("trainer_state/optimizers/4"), ckpt::CheckpointError,
                        message_contains("no '4' in 'trainer_state/optimizers'", "a list of 1"));
  BOOST_CHECK_EXCEPTION(reader.load_state("trainer_state/last_epoch"), ckpt::CheckpointError,
                        message_contains("trainer_state/last_epoch"));
}

BOOST_AUTO_TEST_CASE(a_python_file_loads_partially) {
  TempDir dir;
  const auto local = dir.path() / "python.pt";
  const auto written = ckpt::test::run_command(
      ckpt::test::quote(ckpt::test::python()) + " -c " +
      ckpt::test::quote("import torch, collections\n"
                        "model = collections.OrderedDict([('w', torch.arange(12.).reshape(3, 4)),"
                        " ('b', torch.arange(4, dtype=torch.int64))])\n"
                        "big = {'moments': [torch.full((1000, 100), 2.0) for _ in range(4)]}\n"
                        "torch.save({'model': model, 'optimizer': big, 'step': 17}, '" +
                        local.string() + "')\n"));
  BOOST_REQUIRE_MESSAGE(written.exit_code == 0, written.output);
  auto& storage = *storage_under_test();
  const auto path = dir / "python_copy.pt";
  ckpt::test::write_text(path, ckpt::test::read_text(local, *ckpt::Storage::local()));
  const ckpt::CheckpointReader reader(path, storage);
  const ckpt::StateDict model = reader.load_state("model");
  BOOST_TEST(model.keys() == std::vector<std::string>({"w", "b"}),
             boost::test_tools::per_element());
  BOOST_TEST(torch::equal(model.at("w").toTensor(), torch::arange(12.).reshape({3, 4})));
  BOOST_TEST(torch::equal(model.at("b").toTensor(), torch::arange(4, torch::kLong)));
  BOOST_TEST(reader.load("step").toInt() == 17);
  BOOST_TEST(reader.bytes_read() < reader.file_size() / 4);  // not the 1.6 MB of moments
  BOOST_TEST(reader.load("optimizer/moments/3").toTensor().eq(2.0).all().item<bool>());
}

BOOST_AUTO_TEST_CASE(loaded_tensors_are_private_copies_on_write_and_outlive_the_file,
                     *boost::unit_test::precondition(ckpt::test::local_only)) {
  TempDir dir;
  ModelAndAdam m;
  const auto path = dir / "model_3.pt";
  ckpt::save_state_file(m.state, path);
  at::Tensor weight;
  {
    const ckpt::CheckpointReader reader(path);
    weight = reader.load("module_interface_state/0.weight").toTensor();
  }
  BOOST_TEST(weight.eq(1.5f).all().item<bool>());
  weight.add_(1);  // writes to the mapping stay in this process
  BOOST_TEST(weight.eq(2.5f).all().item<bool>());
  BOOST_CHECK_NO_THROW(ckpt::verify_file(path));
  const ckpt::CheckpointReader again(path);
  BOOST_TEST(again.load("module_interface_state/0.weight").toTensor().eq(1.5f).all().item<bool>());
  // The mapping keeps the bytes after the file is gone (as an open file would).
  std::filesystem::remove(path);
  BOOST_TEST(weight.eq(2.5f).all().item<bool>());
  BOOST_TEST(weight.sum().item<float>() == 2.5f * 512 * 256);
}

// A record of several MB is read in 2 MB pages where the kernel allows it (byte_source.cpp): a
// write to a tensor over them still stays in this process, and damage deep inside is caught.
BOOST_AUTO_TEST_CASE(large_records_stay_private_and_checked_when_read_in_huge_pages,
                     *boost::unit_test::precondition(ckpt::test::local_only)) {
  TempDir dir;
  const int64_t count = 3 << 20;  // 12 MB of floats, several whole 2 MB pages
  ckpt::StateDict state;
  state.insert_or_assign("small", torch::full({3}, 2.0f));  // the large record off a 2 MB boundary
  state.insert_or_assign("large", torch::full({count}, 3.75f));
  const auto path = dir / "large.pt";
  ckpt::save_state_file(state, path);
  for (const bool partial : {true, false}) {
    BOOST_TEST_CONTEXT((partial ? "partial load" : "full load")) {
      at::Tensor large = partial ? ckpt::CheckpointReader(path).load("large").toTensor()
                                 : ckpt::load_state_file(path).at("large").toTensor();
      BOOST_TEST(large.eq(3.75f).all().item<bool>());
      large.mul_(-1);
      BOOST_TEST(large.eq(-3.75f).all().item<bool>());
      BOOST_CHECK_NO_THROW(ckpt::verify_file(path));  // the file did not change
    }
  }
  ckpt::test::flip_byte(path, offset_of(path, 3.75f) + (7 << 20) + 3);
  const ckpt::CheckpointReader reader(path);
  BOOST_TEST(reader.load("small").toTensor().eq(2.0f).all().item<bool>());
  BOOST_CHECK_EXCEPTION(reader.load("large"), ckpt::CheckpointError,
                        message_contains("checksum mismatch in record 'data/", "large.pt"));
}

BOOST_AUTO_TEST_SUITE_END()
