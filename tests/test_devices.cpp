// Tensors on a device: saved from it (synchronously through one reused piece of host memory, or
// staged asynchronously on its stream), recorded with their device as torch.save does, and loaded
// onto it. Runs on the test device (device/test_device.h), a device registered through
// PrivateUse1; what that cannot prove about a real GPU is said there.
#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_reader.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/device.h>
#include <ckpt/live_state.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>

#include "device/test_device.h"
#include "test_util.h"

using ckpt::StateDict;
using ckpt::test::message_contains;
using ckpt::test::quote;
using ckpt::test::TempDir;
using ckpt::test::test_device;
using ckpt::test::test_device_counters;
namespace fs = std::filesystem;

namespace {

// A state with what a device-resident training state has: parameters, a view into another
// tensor's storage, a 0-dim tensor, integer and bool tensors, plain values, and a tensor on the
// second device. Built on the CPU; on_device() moves it.
StateDict cpu_state() {
  const at::Tensor base = torch::arange(24, torch::kFloat32) * 0.5;
  return StateDict{{"weight", torch::arange(12, torch::kFloat32).reshape({3, 4}) - 3},
                   {"base", base},
                   {"view", base.slice(0, 4, 10)},
                   {"transposed", base.view({4, 6}).t()},
                   {"step", torch::tensor(7.0)},
                   {"counts", torch::arange(5, torch::kInt64)},
                   {"mask", torch::arange(6) % 2 == 0},
                   {"half", torch::arange(4, torch::kFloat16)},
                   {"lr", 0.125},
                   {"name", std::string("run")}};
}

// The same values on the test device: each storage moved once (views keep sharing), "half" on
// the second device.
StateDict on_device(const StateDict& state) {
  StateDict result = ckpt::to_device(state, test_device(0));
  result.insert_or_assign("half", state.at("half").toTensor().to(test_device(1)));
  return result;
}

uint64_t storage_bytes(const StateDict& state) {
  std::set<const void*> seen;
  uint64_t bytes = 0;
  for (const auto& [key, value] : state) {
    if (!value.isTensor()) continue;
    const auto& storage = value.toTensor().storage();
    if (seen.insert(storage.unsafeGetStorageImpl()).second) bytes += storage.nbytes();
  }
  return bytes;
}

void check_equal_values(const StateDict& loaded, const StateDict& expected) {
  BOOST_REQUIRE_EQUAL(loaded.size(), expected.size());
  for (const auto& [key, value] : expected) {
    BOOST_TEST_CONTEXT(key) {
      if (value.isTensor()) {
        const at::Tensor got = loaded.at(key).toTensor().cpu();
        const at::Tensor want = value.toTensor().cpu();
        BOOST_TEST(got.sizes() == want.sizes());
        BOOST_TEST(got.strides() == want.strides());
        BOOST_TEST(torch::equal(got, want));
      } else {
        BOOST_TEST(ckpt::deep_equal(loaded.at(key), value));
      }
    }
  }
}

struct CopyLatency {
  explicit CopyLatency(std::chrono::milliseconds latency) {
    ckpt::test::set_test_device_copy_latency(latency);
  }
  ~CopyLatency() { ckpt::test::set_test_device_copy_latency(std::chrono::microseconds(0)); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(devices)

BOOST_AUTO_TEST_CASE(the_test_device_holds_tensors_copies_and_counts) {
  const at::Tensor host = torch::arange(6, torch::kFloat32);
  ckpt::test::reset_test_device_counters();
  const at::Tensor device = host.to(test_device(0));
  BOOST_TEST(device.device() == test_device(0));
  BOOST_TEST(test_device_counters().host_to_device_bytes == 24u);
  device.slice(0, 1, 3).fill_(-1);  // a view on the device, changed there
  const at::Tensor back = device.cpu();
  BOOST_TEST(test_device_counters().device_to_host_bytes == 24u);
  BOOST_TEST(torch::equal(back, torch::tensor({0.f, -1.f, -1.f, 3.f, 4.f, 5.f})));
  BOOST_TEST(torch::equal((device * 2).cpu(), back * 2));  // through the CPU fallback
  BOOST_CHECK_THROW(at::empty({2}, at::TensorOptions().device(test_device(5))), c10::Error);
}

BOOST_AUTO_TEST_CASE(a_save_copies_each_device_storage_to_the_host_once_and_records_its_device) {
  TempDir dir;
  const StateDict host = cpu_state();
  const StateDict device = on_device(host);
  ckpt::save_state_file(host, dir / "cpu.pt");
  ckpt::test::reset_test_device_counters();
  ckpt::save_state_file(device, dir / "device.pt");
  BOOST_TEST(test_device_counters().device_to_host_bytes == storage_bytes(device));
  BOOST_TEST(test_device_counters().host_to_device_bytes == 0u);
  // Loaded (onto the CPU, the default) to the same values, views and all.
  check_equal_values(ckpt::load_state_file(dir / "device.pt"), host);
  // Python: the files are byte for byte the same but for each storage's device tag, and
  // torch.load(map_location="cpu") reads both to the same values.
  const std::string out = ckpt::test::run_python(
      "interop.py", "compare_device_file " + quote((dir / "device.pt").string()) + " " +
                        quote((dir / "cpu.pt").string()) + " privateuseone:0 privateuseone:1");
  BOOST_TEST(out.find("same but for the device tags") != std::string::npos, out);
}

BOOST_AUTO_TEST_CASE(a_storage_larger_than_the_copy_buffer_goes_through_it_in_pieces) {
  TempDir dir;
  // 40 MB: three pieces of the 16 MiB buffer.
  const at::Tensor big = torch::arange(10 << 20, torch::kFloat32);
  ckpt::test::reset_test_device_counters();
  const StateDict device{{"big", big.to(test_device(0))}};
  ckpt::save_state_file(device, dir / "big.pt");
  BOOST_TEST(test_device_counters().device_to_host_bytes == 40u << 20);
  BOOST_TEST(torch::equal(ckpt::load_state_file(dir / "big.pt").at("big").toTensor(), big));
}

BOOST_AUTO_TEST_CASE(map_location_puts_every_tensor_on_the_device_and_views_keep_sharing) {
  TempDir dir;
  const StateDict host = cpu_state();
  ckpt::save_state_file(host, dir / "cpu.pt");
  for (int index : {0, 1}) {
    BOOST_TEST_CONTEXT("privateuseone:" << index) {
      ckpt::test::reset_test_device_counters();
      const StateDict loaded = ckpt::load_state_file(dir / "cpu.pt", test_device(index));
      for (const auto& [key, value] : loaded) {
        if (value.isTensor()) BOOST_TEST(value.toTensor().device() == test_device(index), key);
      }
      // Each storage crossed once, straight from the mapped file.
      BOOST_TEST(test_device_counters().host_to_device_bytes == storage_bytes(host));
      BOOST_TEST(loaded.at("view").toTensor().storage().is_alias_of(
          loaded.at("base").toTensor().storage()));
      check_equal_values(loaded, host);
    }
  }
  // The same through every other load path.
  const ckpt::CheckpointReader reader(dir / "cpu.pt");
  const at::Tensor weight =
      reader.load("weight", ckpt::Verification::records_read, test_device(1)).toTensor();
  BOOST_TEST(weight.device() == test_device(1));
  BOOST_TEST(torch::equal(weight.cpu(), host.at("weight").toTensor()));
  const ckpt::Checkpoint checkpoint{host, {}, {}, {}, {}, {}};
  ckpt::save_checkpoint_file(checkpoint, dir / "checkpoint.pt");
  const ckpt::Checkpoint loaded = ckpt::load_checkpoint_file(dir / "checkpoint.pt", test_device(0));
  BOOST_TEST(loaded.module_interface_state.at("weight").toTensor().device() == test_device(0));
}

BOOST_AUTO_TEST_CASE(a_device_that_does_not_exist_is_refused_by_name_before_anything_is_read) {
  TempDir dir;
  ckpt::save_state_file(cpu_state(), dir / "cpu.pt");
  const c10::Device missing(c10::DeviceType::PrivateUse1, 5);
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(dir / "cpu.pt", missing), ckpt::CheckpointError,
                        message_contains("privateuseone:5", "does not exist", "cpu.pt"));
  BOOST_CHECK_EXCEPTION(ckpt::existing_device("privateuseone:2", "--chkp.map_location"),
                        ckpt::CheckpointError,
                        message_contains("--chkp.map_location", "privateuseone:2"));
  BOOST_CHECK_EXCEPTION(ckpt::existing_device("gpu:0", "--chkp.map_location"),
                        ckpt::CheckpointError, message_contains("--chkp.map_location", "gpu:0"));
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = dir / "checkpoints";
  args.map_location = "privateuseone:3";
  BOOST_CHECK_EXCEPTION(ckpt::DefaultCheckpointer{args}, ckpt::CheckpointError,
                        message_contains("map_location", "privateuseone:3"));
  BOOST_TEST(!fs::exists(dir / "checkpoints"));  // refused before it made anything
}

BOOST_AUTO_TEST_CASE(default_checkpointer_saves_from_and_loads_onto_the_device) {
  TempDir dir;
  const StateDict host = cpu_state();
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = dir / "checkpoints";
  args.load_dir = args.save_dir;
  args.log_level = "error";
  args.map_location = "privateuseone:1";
  ckpt::DefaultCheckpointer checkpointer(args);
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state = on_device(host);
  checkpoint.trainer_state.insert_or_assign("last_epoch", int64_t{0});
  ckpt::test::reset_test_device_counters();
  checkpointer.save(checkpoint, 0);
  BOOST_TEST(test_device_counters().device_to_host_bytes ==
             storage_bytes(checkpoint.module_interface_state));
  const ckpt::Checkpoint loaded = checkpointer.load();
  BOOST_TEST(loaded.module_interface_state.at("weight").toTensor().device() == test_device(1));
  BOOST_TEST(loaded.module_interface_state.at("half").toTensor().device() == test_device(1));
  check_equal_values(loaded.module_interface_state, host);
}

BOOST_AUTO_TEST_CASE(an_async_save_stages_on_the_stream_and_holds_the_values_at_save) {
  for (const bool in_background : {false, true}) {
    BOOST_TEST_CONTEXT("stage_in_background " << in_background) {
      TempDir dir;
      const StateDict host = cpu_state();
      ckpt::DefaultCheckpointerArguments args;
      args.save_dir = dir / "checkpoints";
      args.log_level = "error";
      args.async = true;
      args.stage_in_background = in_background;
      ckpt::DefaultCheckpointer checkpointer(args);
      ckpt::Checkpoint checkpoint;
      checkpoint.module_interface_state = on_device(host);
      // Each asynchronous copy waits 30 ms on the stream: a writer that read the staging memory
      // before the copies' events completed would write zeros or garbage.
      CopyLatency latency(std::chrono::milliseconds(30));
      ckpt::test::reset_test_device_counters();
      checkpointer.save(checkpoint, 0);
      if (in_background) checkpointer.wait_staged();
      // The training step after: changes every saved tensor on the device.
      for (const auto& [key, value] : checkpoint.module_interface_state) {
        if (value.isTensor() && value.toTensor().is_floating_point()) value.toTensor().fill_(-9);
      }
      checkpointer.wait();
      const auto counters = test_device_counters();
      BOOST_TEST(counters.device_to_host_bytes ==
                 storage_bytes(checkpoint.module_interface_state));
      BOOST_TEST(counters.async_copies >= 2u);  // issued on the stream, not copied in place
      check_equal_values(ckpt::load_checkpoint_file(args.save_dir / "model_0.pt")
                             .module_interface_state,
                         host);
      // Recorded with the devices they were staged from, as a synchronous save records them.
      const std::string bytes = ckpt::test::read_text(args.save_dir / "model_0.pt");
      BOOST_TEST(bytes.find("privateuseone:0") != std::string::npos);
      BOOST_TEST(bytes.find("privateuseone:1") != std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_CASE(safetensors_export_from_the_device_reads_it_twice_and_equals_the_cpu_one) {
  TempDir dir;
  const StateDict host{{"weight", torch::arange(12, torch::kFloat32).reshape({3, 4})},
                       {"bias", torch::arange(3, torch::kFloat64)},
                       {"transposed", torch::arange(6, torch::kFloat32).reshape({2, 3}).t()}};
  StateDict device;
  for (const auto& [key, value] : host) {
    device.insert_or_assign(key, value.toTensor().to(test_device(0)));
  }
  ckpt::save_safetensors_file(host, dir / "cpu.safetensors");
  ckpt::test::reset_test_device_counters();
  ckpt::save_safetensors_file(device, dir / "device.safetensors");
  // The header carries the data's CRC-32 and comes first: once for it, once to write. (The
  // transposed tensor is made contiguous on the device first.)
  uint64_t bytes = 0;
  for (const auto& [key, value] : host) bytes += value.toTensor().nbytes();
  BOOST_TEST(test_device_counters().device_to_host_bytes == 2 * bytes);
  BOOST_TEST(ckpt::test::read_text(dir / "device.safetensors") ==
             ckpt::test::read_text(dir / "cpu.safetensors"));
}

BOOST_AUTO_TEST_CASE(in_place_loads_keep_each_live_tensor_on_its_device) {
  TempDir dir;
  torch::manual_seed(3);
  torch::nn::Linear model(4, 3);
  model->to(test_device(1));
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01));
  const at::Tensor x = torch::rand({2, 4}).to(test_device(1));
  adam.zero_grad();
  model->forward(x).sum().backward();
  adam.step();
  int64_t step = 1;
  ckpt::save(dir / "fabric.pt", {{"model", *model}, {"optimizer", adam}, {"step", step}});

  torch::nn::Linear fresh(4, 3);
  fresh->to(test_device(1));
  torch::optim::Adam fresh_adam(fresh->parameters(), torch::optim::AdamOptions(0.5));
  int64_t fresh_step = 0;
  ckpt::load(dir / "fabric.pt", {{"model", *fresh}, {"optimizer", fresh_adam}, {"step", fresh_step}});
  BOOST_TEST(fresh_step == 1);
  for (const auto& p : fresh->parameters()) BOOST_TEST(p.device() == test_device(1));
  BOOST_TEST(torch::equal(fresh->weight.cpu(), model->weight.cpu()));
  const auto& state = fresh_adam.state();
  BOOST_REQUIRE(!state.empty());
  for (const auto& [key, param_state] : state) {
    const auto& adam_state = static_cast<const torch::optim::AdamParamState&>(*param_state);
    BOOST_TEST(adam_state.exp_avg().device() == test_device(1));
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- the sample trainer on the test device (maintained with sample_trainer/) ----
#if defined(CKPT_SAMPLE_TRAINER)
#include <sample_trainer/digits_module.h>
#include <sample_trainer/single_process.h>
#include <sample_trainer/trainer.h>

namespace {

const sample_trainer::DigitsData& digits() {
  static const sample_trainer::DigitsData data =
      sample_trainer::load_digits(CKPT_SOURCE_DIR "/data/digits.csv.gz");
  return data;
}

// Trains up to `epochs` in `dir` on `device`, resuming from what is there; returns the weights.
StateDict train(const fs::path& dir, int64_t epochs, const std::string& device) {
  at::set_num_threads(1);
  at::manual_seed(1);
  auto module = std::make_shared<sample_trainer::DigitsModule>(digits());
  sample_trainer::TrainerArguments args;
  args.epochs = epochs;
  args.batch_size = 128;
  args.seed = 7;
  args.device = device;
  args.checkpointer_args.save_dir = dir;
  args.checkpointer_args.load_dir = dir;
  args.checkpointer_args.log_level = "error";
  sample_trainer::Trainer trainer(std::make_shared<sample_trainer::SingleProcess>(), module, args);
  for (const auto& p : module->model().parameters()) {
    BOOST_REQUIRE_MESSAGE(p.device() == c10::Device(device), p.device().str());
  }
  trainer.train();
  StateDict weights;
  for (const auto& [key, value] : ckpt::module_state(module->model())) {
    weights.insert_or_assign(key, value.toTensor().cpu());
  }
  return weights;
}

void check_same_weights(const StateDict& a, const StateDict& b) {
  BOOST_REQUIRE(a.keys() == b.keys());
  for (const auto& [key, value] : a) {
    BOOST_TEST(torch::equal(value.toTensor(), b.at(key).toTensor()), key);
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(trainer_on_device)

BOOST_AUTO_TEST_CASE(a_run_on_the_device_resumes_exactly_there_and_from_the_cpu) {
  TempDir dir;
  const std::string device = test_device(0).str();
  const StateDict straight = train(dir / "straight", 3, device);
  train(dir / "split", 2, device);
  check_same_weights(train(dir / "split", 3, device), straight);
  // The files say where their tensors were; a run on the CPU resumes from them, and the other way.
  BOOST_TEST(ckpt::test::read_text(dir / "split" / "model_1.pt").find("privateuseone:0") !=
             std::string::npos);
  const StateDict on_cpu = train(dir / "cpu", 3, "cpu");
  train(dir / "cpu_then_device", 2, "cpu");
  check_same_weights(train(dir / "cpu_then_device", 3, device), on_cpu);
  train(dir / "device_then_cpu", 2, device);
  check_same_weights(train(dir / "device_then_cpu", 3, "cpu"), on_cpu);
}

BOOST_AUTO_TEST_CASE(a_device_that_does_not_exist_is_refused_naming_the_flag) {
  sample_trainer::TrainerArguments args;
  args.device = "privateuseone:4";
  try {
    args.validate();
    BOOST_FAIL("no error");
  } catch (const std::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("invalid device 'privateuseone:4'") == 0u, e.what());
  }
}

BOOST_AUTO_TEST_SUITE_END()
#endif  // CKPT_SAMPLE_TRAINER
