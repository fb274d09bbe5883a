// The `ckpt` tool on real checkpoints written by the sample trainer, intact and damaged: every
// subcommand's output, exit codes (0 ok, 1 failure, 2 bad arguments) and one-line errors that
// name the file or flag.
#if defined(CKPT_SAMPLE_TRAINER) && defined(CKPT_TOOL)

#include "test_sample_trainer_helpers.h"
#include "test_util.h"

#include <ckpt/checkpoint_reader.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/live_state.h>
#include <ckpt/module_state.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <regex>
#include <string>
#include <vector>

using sample_trainer::test::files_in;
using sample_trainer::test::lines_of;
using sample_trainer::test::quote;
using sample_trainer::test::read_text;
using sample_trainer::test::RunResult;
using sample_trainer::test::TempDir;
using sample_trainer::test::write_text;
namespace fs = std::filesystem;

namespace {

const std::string kTrainer = CKPT_SAMPLE_TRAINER;
const std::string kTool = CKPT_TOOL;

RunResult run(const TempDir& dir, const std::string& program,
              const std::vector<std::string>& args) {
  std::string command = quote(program);
  for (const auto& arg : args) command += " " + quote(arg);
  return sample_trainer::test::run_in(dir.path(), dir / "logs", command);
}

RunResult tool(const TempDir& dir, const std::vector<std::string>& args) {
  return run(dir, kTool, args);
}

// Trains `epochs` epochs (batch 128: fast) into `save`, checkpoints and the model file there.
void train(const TempDir& dir, const fs::path& save, int epochs,
           std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {
      "--trainer.epochs", std::to_string(epochs), "--trainer.batch_size",        "128",
      "--chkp.save_dir",  save.string(),          "--chkp.model_state_save_dir", save.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  const RunResult r = run(dir, kTrainer, args);
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.out << r.err);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void check_exit(const RunResult& r, int code) {
  BOOST_CHECK_MESSAGE(r.exit_code == code, "exit " << r.exit_code << ", expected " << code
                                                   << "\nstdout:\n"
                                                   << r.out << "\nstderr:\n"
                                                   << r.err);
}

// The files directly in `save`, without the `<prefix>_latest` pointer that the checkpointer of
// issue 5 writes (not a checkpoint: the tool neither lists nor prunes it).
std::vector<std::string> checkpoint_files(const fs::path& save) {
  std::vector<std::string> names = files_in(save);
  const std::string pointer = "_latest";
  names.erase(std::remove_if(names.begin(), names.end(),
                             [&](const std::string& name) {
                               return name.size() > pointer.size() &&
                                      name.compare(name.size() - pointer.size(), pointer.size(),
                                                   pointer) == 0;
                             }),
              names.end());
  return names;
}

// A usage or runtime error: exactly one stderr line, `ckpt: error: ...` with every part.
template <class... Parts>
void check_error(const RunResult& r, int code, Parts... parts) {
  check_exit(r, code);
  const auto lines = lines_of(r.err);
  BOOST_CHECK_MESSAGE(lines.size() == 1, "stderr: " << r.err);
  BOOST_CHECK_MESSAGE(r.err.rfind("ckpt: error: ", 0) == 0, "stderr: " << r.err);
  for (const std::string& part : {std::string(parts)...}) {
    BOOST_CHECK_MESSAGE(contains(r.err, part), "stderr lacks '" << part << "': " << r.err);
  }
}

// Flips one byte in the middle of a file (a tensor's bytes, for these checkpoints).
void corrupt(const fs::path& path) {
  std::string bytes = read_text(path);
  bytes[bytes.size() / 2] ^= 0x5a;
  write_text(path, bytes);
}

void truncate_file(const fs::path& path) { fs::resize_file(path, fs::file_size(path) / 3); }

// The line of `ckpt list` output for `name`.
std::string list_line(const std::string& out, const std::string& name) {
  for (const auto& line : lines_of(out)) {
    if (line.size() >= name.size() &&
        line.compare(line.size() - name.size(), name.size(), name) == 0) {
      return line;
    }
  }
  return "";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tool_list)

BOOST_AUTO_TEST_CASE(lists_newest_first_and_marks_what_load_picks) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 3);
  RunResult r = tool(dir, {"list", save.string()});
  check_exit(r, 0);
  // Checkpoints newest first, then the model file; * on model_2.pt, what load() resumes.
  const std::vector<std::string> expected_order = {"model_2.pt", "model_1.pt", "model_0.pt",
                                                   "model_model_2.pt"};
  std::size_t position = 0;
  for (const auto& name : expected_order) {
    const auto found = r.out.find(" " + name + "\n");
    BOOST_CHECK_MESSAGE(found != std::string::npos && found > position, name << "\n" << r.out);
    position = found;
  }
  BOOST_CHECK(std::regex_search(
      list_line(r.out, "model_2.pt"),
      std::regex(R"(^  \* checkpoint +2 +36 +2 +\d+\.\d+ KiB +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +ok )"
                 R"(+model_2\.pt$)")));
  // Each checkpoint's metrics on the line after it.
  BOOST_CHECK_MESSAGE(
      std::regex_search(r.out, std::regex(R"(model_2\.pt\n        metrics: train_loss=\S+ )"
                                          R"(val_loss=\S+ val_acc=\S+\n)")),
      r.out);
  BOOST_CHECK(std::regex_search(list_line(r.out, "model_model_2.pt"),
                                std::regex(R"(^    model +2 +- +- +\d)")));
  BOOST_CHECK(std::regex_search(list_line(r.out, "model_model_2.pt"),
                                std::regex(R"(^    model +2 .* ok +model_model_2\.pt$)")));
  BOOST_CHECK(contains(r.out, "4 files, 0 bad. load() resumes from the file marked *."));

  // The newest is damaged: flagged with why, and the mark moves to what load() now picks.
  corrupt(save / "model_2.pt");
  r = tool(dir, {"list", save.string()});
  check_exit(r, 0);
  BOOST_CHECK(std::regex_search(list_line(r.out, "model_2.pt"),
                                std::regex(R"(^    checkpoint .* BAD +model_2\.pt$)")));
  BOOST_CHECK(std::regex_search(list_line(r.out, "model_1.pt"),
                                std::regex(R"(^  \* checkpoint .* ok +model_1\.pt$)")));
  BOOST_CHECK_MESSAGE(
      std::regex_search(r.out, std::regex("model_2.pt\n        why: .*model_2\\.pt")), r.out);
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = save;
  args.load_dir = save;
  args.log_level = "off";
  BOOST_CHECK_EQUAL(ckpt::DefaultCheckpointer(args).check(), save / "model_1.pt");
}

BOOST_AUTO_TEST_CASE(safetensors_models_other_prefixes_and_bad_directories) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 2,
        {"--chkp.model_format", "safetensors", "--chkp.file_prefix", "net", "--chkp.file_ext",
         "ckpt"});
  BOOST_REQUIRE(checkpoint_files(save) ==
                (std::vector<std::string>{"net_0.ckpt", "net_1.ckpt", "net_model_1.safetensors"}));
  RunResult r = tool(dir, {"list", save.string(), "--prefix", "net", "--ext", "ckpt"});
  check_exit(r, 0);
  BOOST_CHECK(std::regex_search(list_line(r.out, "net_model_1.safetensors"),
                                std::regex(R"(^    model +1 .* ok +net_model_1\.safetensors$)")));
  BOOST_CHECK(std::regex_search(list_line(r.out, "net_1.ckpt"), std::regex(R"(^  \* checkpoint)")));
  r = tool(dir, {"list", save.string()});  // default prefix: nothing of ours
  check_exit(r, 0);
  BOOST_CHECK(contains(r.out, "  none"));

  // ... but the weights file, a .safetensors, is not skipped: it is among the other files.
  BOOST_CHECK_MESSAGE(contains(r.out, "other files (not named by --prefix model --ext pt):\n"),
                      r.out);
  BOOST_CHECK(std::regex_search(list_line(r.out, "net_model_1.safetensors"),
                                std::regex(R"(^    other +- .* ok +net_model_1\.safetensors$)")));

  check_error(tool(dir, {"list", (dir / "nope").string()}), 2, (dir / "nope").string(),
              "does not exist");
  check_error(tool(dir, {"list", (save / "net_0.ckpt").string()}), 2,
              (save / "net_0.ckpt").string(), "is not a directory");
}

BOOST_AUTO_TEST_CASE(step_best_weights_and_other_files_each_with_what_they_record) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 2,
        {"--chkp.every_n_train_steps", "5", "--chkp.save_top_k", "1", "--chkp.monitor",
         "val_loss"});
  ckpt::save_state_file(ckpt::StateDict{{"w", torch::ones({2})}}, save / "notes.pt");
  fs::create_directories(save / "sub");
  ckpt::save_safetensors_file(ckpt::StateDict{{"w", torch::ones({2})}},
                              save / "sub" / "exported.safetensors");
  RunResult r = tool(dir, {"list", save.string()});
  check_exit(r, 0);
  // Step checkpoints: index (the epoch they are in), global step; the newest is model_1.pt.
  BOOST_CHECK_MESSAGE(std::regex_search(list_line(r.out, "model_0_step_10.pt"),
                                        std::regex(R"(^    step +0 +10 +-?\d+ +\d.* ok )"
                                                   R"(+model_0_step_10\.pt$)")),
                      r.out);
  BOOST_CHECK(std::regex_search(list_line(r.out, "model_1_step_20.pt"),
                                std::regex(R"(^    step +1 +20 )")));
  BOOST_CHECK(std::regex_search(list_line(r.out, "model_1.pt"),
                                std::regex(R"(^  \* checkpoint +1 +24 +1 )")));
  // The best file with its monitored score, and the metrics it was saved with.
  std::smatch best;
  BOOST_REQUIRE_MESSAGE(std::regex_search(r.out, best,
                                          std::regex(R"(\n    best +(\d) +\d+ +\d .* ok +)"
                                                     R"(model_best_\d\.pt\n        best: )"
                                                     R"(val_loss=(\S+) \(min\)\n)"
                                                     R"(        metrics: train_loss=\S+ )"
                                                     R"(val_loss=(\S+) val_acc=\S+\n)")),
                        r.out);
  BOOST_CHECK_EQUAL(best[2], best[3]);
  BOOST_CHECK(std::regex_search(list_line(r.out, "model_model_1.pt"),
                                std::regex(R"(^    model +1 +- +- )")));
  // Files ckpt did not name appear too, below, each verified.
  const auto others = r.out.find("other files (not named by --prefix model --ext pt):\n");
  BOOST_REQUIRE_MESSAGE(others != std::string::npos, r.out);
  BOOST_CHECK(r.out.find(" notes.pt\n") > others);
  BOOST_CHECK(r.out.find(" sub/exported.safetensors\n") > others);
  BOOST_CHECK(std::regex_search(list_line(r.out, "notes.pt"),
                                std::regex(R"(^    other +- +- +- .* ok +notes\.pt$)")));
  BOOST_CHECK(r.out.find("model_latest") == std::string::npos);  // not a checkpoint
  BOOST_CHECK_MESSAGE(contains(r.out, " bad. load() resumes from the file marked *."), r.out);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tool_inspect)

BOOST_AUTO_TEST_CASE(tree_totals_and_json_match_the_file) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 2);
  const fs::path file = save / "model_1.pt";
  RunResult r = tool(dir, {"inspect", file.string()});
  check_exit(r, 0);
  for (const char* line :
       {"module_interface_state: dict (6)\n", "  0.weight: float32 [128, 64] 32.0 KiB\n",
        "  6.bias: float32 [10] 40 B\n", "trainer_state: dict (3)\n", "  last_epoch: 1\n",
        "        lr: 0.003\n", "        betas: tuple (2)\n", "  global_step_completed: 24\n",
        "  rng_state: uint8 [5056] 4.94 KiB\n", "        amsgrad: False\n",
        "        foreach: None\n",
        // A 0-dim tensor shows its value (Adam's step).
        "          step: float32 [] 4 B = 24.0\n"}) {
    BOOST_CHECK_MESSAGE(contains(r.out, line), "lacks '" << line << "':\n" << r.out);
  }
  // 6 weights + 6 x (step, exp_avg, exp_avg_sq) + rng_state.
  BOOST_CHECK_MESSAGE(
      std::regex_search(r.out, std::regex(R"(\ntotal: 25 tensors, \d+ elements, )")), r.out);

  // --json: every tensor's dtype, shape and bytes, against the file read by the library.
  r = tool(dir, {"inspect", file.string(), "--json"});
  check_exit(r, 0);
  const auto json = nlohmann::json::parse(r.out);
  BOOST_CHECK_EQUAL(json["format"], "torch_zip");
  BOOST_CHECK_EQUAL(json["file_bytes"].get<uint64_t>(), fs::file_size(file));
  const ckpt::Checkpoint checkpoint = ckpt::load_checkpoint_file(file);
  const auto& module = json["value"]["entries"]["module_interface_state"]["entries"];
  BOOST_REQUIRE_EQUAL(module.size(), checkpoint.module_interface_state.size());
  uint64_t module_bytes = 0;
  for (const auto& [key, value] : checkpoint.module_interface_state) {
    const at::Tensor& tensor = value.toTensor();
    BOOST_TEST_CONTEXT("key " << key) {
      BOOST_CHECK_EQUAL(module[key]["type"], "tensor");
      BOOST_CHECK_EQUAL(module[key]["dtype"], "float32");
      BOOST_CHECK(module[key]["shape"].get<std::vector<int64_t>>() == tensor.sizes().vec());
      BOOST_CHECK_EQUAL(module[key]["bytes"].get<uint64_t>(), tensor.nbytes());
    }
    module_bytes += tensor.nbytes();
  }
  BOOST_CHECK_EQUAL(json["totals"]["tensors"], 25);
  BOOST_CHECK_EQUAL(
      json["value"]["entries"]["trainer_state"]["entries"]["last_epoch"]["value"].get<int64_t>(),
      1);

  // --key narrows to one subtree, in text and JSON.
  r = tool(dir, {"inspect", file.string(), "--key", "module_interface_state", "--json"});
  check_exit(r, 0);
  BOOST_CHECK_EQUAL(nlohmann::json::parse(r.out)["totals"]["tensor_bytes"].get<uint64_t>(),
                    module_bytes);
  r = tool(dir, {"inspect", file.string(), "--key", "trainer_state/schedulers/0/_last_lr"});
  check_exit(r, 0);
  BOOST_CHECK_MESSAGE(
      contains(r.out, "trainer_state/schedulers/0/_last_lr: list (1)\n  [0]: 0.003\n"), r.out);
}

// Every dtype by Python's name, complex ones included, in a file Python wrote.
BOOST_AUTO_TEST_CASE(dtypes_have_pythons_names) {
  TempDir dir;
  const fs::path file = dir / "dtypes.pt";
  ckpt::test::run_python("interop.py", "write_dtypes " + quote(file.string()));
  const RunResult r = tool(dir, {"inspect", file.string()});
  check_exit(r, 0);
  for (const char* line :
       {"c64: complex64 [2] 16 B\n", "c128: complex128 [1] 16 B\n", "f16: float16 [3] 6 B\n"}) {
    BOOST_CHECK_MESSAGE(contains(r.out, line), "lacks '" << line << "':\n" << r.out);
  }
  BOOST_CHECK_MESSAGE(!contains(r.out, "Complex"), r.out);
}

BOOST_AUTO_TEST_CASE(safetensors_and_errors) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 1, {"--chkp.model_format", "safetensors"});
  RunResult r = tool(dir, {"inspect", (save / "model_model_0.safetensors").string()});
  check_exit(r, 0);
  BOOST_CHECK(contains(r.out, "(safetensors, "));
  BOOST_CHECK(contains(r.out, "\n3.weight: float32 [64, 128] 32.0 KiB\n"));
  BOOST_CHECK(contains(r.out, "\ntotal: 6 tensors, "));

  const fs::path file = save / "model_0.pt";
  check_error(tool(dir, {"inspect", file.string(), "--key", "trainer_state/optimizerz"}), 2,
              "--key trainer_state/optimizerz", "no 'optimizerz'", file.string(),
              "keys last_epoch, optimizers, schedulers");
  check_error(tool(dir, {"inspect", file.string(), "--key", "trainer_state/optimizers/7"}), 2,
              "no '7'", "a list of 1");
  corrupt(file);
  check_error(tool(dir, {"inspect", file.string()}), 1, file.string());
  check_error(tool(dir, {"inspect", (dir / "missing.pt").string()}), 2,
              (dir / "missing.pt").string(), "does not exist");
  check_error(tool(dir, {"inspect"}), 2, "missing FILE");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tool_verify)

BOOST_AUTO_TEST_CASE(names_each_bad_file_and_why) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 4);
  fs::create_directories(save / "old");
  ckpt::save_safetensors_file(ckpt::load_state_file(save / "model_model_3.pt"),
                              save / "old" / "w.safetensors");
  write_text(save / "notes.txt", "not a checkpoint, not checked");

  RunResult r = tool(dir, {"verify", save.string()});
  check_exit(r, 0);
  BOOST_CHECK_MESSAGE(contains(r.out, "6 files checked: 6 ok, 0 bad"), r.out);
  BOOST_CHECK(contains(r.out, "ok   " + (save / "old" / "w.safetensors").string() + "\n"));
  BOOST_CHECK(!contains(r.out, "notes.txt"));
  check_exit(tool(dir, {"verify", (save / "model_3.pt").string()}), 0);

  corrupt(save / "model_3.pt");
  truncate_file(save / "model_1.pt");
  corrupt(save / "old" / "w.safetensors");
  write_text(save / "model_9.pt", "");
  r = tool(dir, {"verify", save.string()});
  check_exit(r, 1);
  BOOST_CHECK_MESSAGE(contains(r.out, "7 files checked: 3 ok, 4 bad"), r.out);
  for (const fs::path bad : {save / "model_3.pt", save / "model_1.pt",
                             save / "old" / "w.safetensors", save / "model_9.pt"}) {
    // One line per bad file: "BAD  <file>: <why>".
    BOOST_CHECK_MESSAGE(contains(r.out, "\nBAD  " + bad.string() + ": "), bad << "\n" << r.out);
  }
  // The damaged tensor by its key (the one a CheckpointReader fails to load), then its record.
  std::string damaged_key;
  {
    const ckpt::CheckpointReader reader(save / "model_3.pt");
    std::function<void(const c10::IValue&, const std::string&)> walk =
        [&](const c10::IValue& value, const std::string& key) {
          if (!damaged_key.empty()) return;
          if (value.isTensor()) {
            try {
              reader.load(key);
            } catch (const ckpt::CheckpointError&) {
              damaged_key = key;
            }
          } else if (value.isGenericDict()) {
            for (const auto& item : value.toGenericDict()) {
              const c10::IValue& k = item.key();
              walk(item.value(), (key.empty() ? "" : key + "/") +
                                     (k.isString() ? k.toStringRef() : std::to_string(k.toInt())));
            }
          } else if (value.isList()) {
            const auto& items = value.toListRef();
            for (std::size_t i = 0; i < items.size(); ++i) {
              walk(items[i], (key.empty() ? "" : key + "/") + std::to_string(i));
            }
          }
        };
    walk(reader.outline(), "");
  }
  BOOST_REQUIRE(!damaged_key.empty());
  BOOST_CHECK_MESSAGE(contains(r.out, "BAD  " + (save / "model_3.pt").string() +
                                          ": tensor at key " + damaged_key +
                                          ": checksum mismatch in record 'data/"),
                      damaged_key << "\n" << r.out);
  BOOST_CHECK(contains(r.out, "BAD  " + (save / "old" / "w.safetensors").string() +
                                  ": checksum mismatch: the tensor bytes have CRC-32 "));
  BOOST_CHECK(contains(r.out, (save / "model_9.pt").string() + " is empty"));
  BOOST_CHECK(contains(r.out, "ok   " + (save / "model_2.pt").string() + "\n"));

  r = tool(dir, {"verify", (save / "model_2.pt").string(), (save / "model_3.pt").string()});
  check_exit(r, 1);
  BOOST_CHECK(contains(r.out, "2 files checked: 1 ok, 1 bad"));

  fs::create_directories(dir / "empty");
  r = tool(dir, {"verify", (dir / "empty").string()});
  check_exit(r, 1);
  BOOST_CHECK(contains(r.out, "BAD  " + (dir / "empty").string() + ": no *.pt or *.safetensors"));
  check_error(tool(dir, {"verify", (dir / "nope").string()}), 2, (dir / "nope").string(),
              "does not exist");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tool_diff)

BOOST_AUTO_TEST_CASE(only_in_a_only_in_b_and_changed) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 2);
  const fs::path a = save / "model_0.pt";
  const fs::path b = save / "model_1.pt";
  RunResult r = tool(dir, {"diff", a.string(), b.string()});
  check_exit(r, 1);
  // The max absolute difference the tool prints is the one LibTorch computes.
  const ckpt::Checkpoint ca = ckpt::load_checkpoint_file(a);
  const ckpt::Checkpoint cb = ckpt::load_checkpoint_file(b);
  for (const auto& [key, value] : ca.module_interface_state) {
    const double expected = (value.toTensor().to(torch::kDouble) -
                             cb.module_interface_state.at(key).toTensor().to(torch::kDouble))
                                .abs()
                                .max()
                                .item<double>();
    std::smatch match;
    const std::string prefix = "changed:   module_interface_state/" + key + ": max abs diff ";
    BOOST_TEST_CONTEXT("key " << key) {
      BOOST_REQUIRE(std::regex_search(
          r.out, match,
          std::regex(std::regex_replace(prefix, std::regex(R"([.\[\]])"), R"(\$&)") + R"((\S+))")));
      BOOST_CHECK_CLOSE(std::stod(match[1]), expected, 1e-3);
    }
  }
  BOOST_CHECK(contains(r.out, "changed:   trainer_state/last_epoch: 0 -> 1\n"));
  // An optimizer's step is a 0-dim tensor: its values, not a "max abs diff".
  BOOST_CHECK_MESSAGE(
      contains(r.out, "changed:   trainer_state/optimizers/0/state/0/step: 12.0 -> 24.0\n"), r.out);
  BOOST_CHECK(
      contains(r.out, "changed:   trainer_backend_state/global_step_completed: 12 -> 24\n"));
  BOOST_CHECK(contains(r.out, "0 only in A, 0 only in B, "));

  // --key narrows both files to one subtree.
  r = tool(dir, {"diff", a.string(), b.string(), "--key", "module_interface_state"});
  check_exit(r, 1);
  BOOST_CHECK_MESSAGE(contains(r.out, "0 only in A, 0 only in B, 6 changed, 0 equal\n"), r.out);
  BOOST_CHECK(!contains(r.out, "last_epoch"));
  check_error(tool(dir, {"diff", b.string(), (save / "model_model_1.pt").string(), "--key",
                         "module_interface_state"}),
              2, "no 'module_interface_state'", (save / "model_model_1.pt").string());
  check_exit(tool(dir, {"diff", b.string(), b.string()}), 0);

  // Keys, shapes and dtypes.
  ckpt::StateDict left{
      {"w", torch::zeros({2, 3})}, {"b", torch::zeros({3})}, {"gone", torch::ones({1})}};
  ckpt::StateDict right{
      {"w", torch::zeros({3, 2})}, {"b", torch::zeros({3}, torch::kDouble)}, {"new", int64_t{1}}};
  ckpt::save_state_file(left, dir / "left.pt");
  ckpt::save_safetensors_file(
      ckpt::StateDict{{"w", torch::zeros({3, 2})}, {"b", torch::zeros({3}, torch::kDouble)}},
      dir / "right.safetensors");
  ckpt::save_state_file(right, dir / "right.pt");
  r = tool(dir, {"diff", (dir / "left.pt").string(), (dir / "right.pt").string()});
  check_exit(r, 1);
  BOOST_CHECK_EQUAL(r.out,
                    "only in A: gone\n"
                    "only in B: new\n"
                    "changed:   w: shape [2, 3] -> [3, 2]\n"
                    "changed:   b: dtype float32 -> float64\n"
                    "1 only in A, 1 only in B, 2 changed, 0 equal\n");
  r = tool(dir, {"diff", (dir / "right.safetensors").string(), (dir / "right.pt").string()});
  check_exit(r, 1);
  BOOST_CHECK_EQUAL(r.out, "only in B: new\n0 only in A, 1 only in B, 0 changed, 2 equal\n");
  check_error(tool(dir, {"diff", (dir / "left.pt").string()}), 2, "diff takes two files");
  corrupt(b);
  check_error(tool(dir, {"diff", a.string(), b.string()}), 1, b.string());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tool_export)

BOOST_AUTO_TEST_CASE(weights_only_as_pt_and_safetensors) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 2);
  const fs::path file = save / "model_1.pt";
  const ckpt::StateDict weights = ckpt::load_checkpoint_file(file).module_interface_state;

  RunResult r = tool(dir, {"export", file.string(), "-o", (dir / "w.safetensors").string()});
  check_exit(r, 0);
  BOOST_CHECK(contains(r.out, "exported 6 tensors"));
  BOOST_CHECK(contains(r.out, "at --key module_interface_state"));
  const ckpt::StateDict exported = ckpt::load_safetensors_file(dir / "w.safetensors");
  BOOST_CHECK(exported == weights);
  ckpt::save_state_file(weights, dir / "reference.pt");
  const std::string out = ckpt::test::run_python(
      "safetensors_spec.py", "check " + quote((dir / "w.safetensors").string()) + " " +
                                 quote((dir / "reference.pt").string()));
  BOOST_CHECK_MESSAGE(contains(out, "ok 6 tensors"), out);

  r = tool(dir, {"export", file.string(), "-o", (dir / "w.bin").string(), "--format", "pt"});
  check_exit(r, 0);
  BOOST_CHECK(ckpt::load_state_file(dir / "w.bin") == weights);
  // A model file is a dict of tensors already; safetensors back to pt.
  check_exit(
      tool(dir, {"export", (dir / "w.safetensors").string(), "-o", (dir / "back.pt").string()}), 0);
  BOOST_CHECK(ckpt::load_state_file(dir / "back.pt") == weights);
  check_exit(tool(dir, {"export", file.string(), "--key", "trainer_state/optimizers/0/state/0",
                        "-o", (dir / "moments.safetensors").string()}),
             0);
  BOOST_CHECK_EQUAL(ckpt::load_safetensors_file(dir / "moments.safetensors").keys(),
                    (std::vector<std::string>{"step", "exp_avg", "exp_avg_sq"}));

  const auto before = files_in(dir.path());
  check_error(
      tool(dir, {"export", file.string(), "-o", (dir / "x.st").string(), "--format", "onnx"}), 2,
      "--format 'onnx'");
  check_error(tool(dir, {"export", file.string()}), 2, "missing -o");
  check_error(
      tool(dir, {"export", file.string(), "--key", "trainer_state", "-o", (dir / "x.pt").string()}),
      1, file.string(), "'last_epoch'", "not a tensor");
  check_error(tool(dir, {"export", file.string(), "-o", (dir / "no" / "x.pt").string()}), 2,
              (dir / "no" / "x.pt").string());
  // Export reads only the weights' records, each checked: damage to one of them fails, damage
  // elsewhere (the optimizer's moments, here in the file's second half) is not read at all.
  const std::string intact = read_text(file);
  const at::Tensor first = weights.begin()->second.toTensor();
  const std::size_t weight_at =
      intact.find(std::string(static_cast<const char*>(first.data_ptr()), 64));
  BOOST_REQUIRE(weight_at != std::string::npos);
  std::string damaged = intact;
  damaged[weight_at + 3] ^= 0x5a;
  write_text(file, damaged);
  check_error(tool(dir, {"export", file.string(), "-o", (dir / "x.pt").string()}), 1, file.string(),
              "checksum mismatch in record");
  BOOST_CHECK(files_in(dir.path()) == before);  // nothing written by a failed export
  write_text(file, intact);
  corrupt(file);
  r = tool(dir, {"export", file.string(), "-o", (dir / "x.pt").string()});
  check_exit(r, 0);
  BOOST_CHECK(ckpt::load_state_file(dir / "x.pt") == weights);
}

BOOST_AUTO_TEST_CASE(a_fabric_style_file_exports_its_module_state) {
  TempDir dir;
  torch::nn::Linear model(4, 3);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01));
  int64_t step = 15;
  ckpt::save(dir / "fabric.pt", {{"model", model}, {"optimizer", adam}, {"step", step}});
  RunResult r = tool(dir, {"export", (dir / "fabric.pt").string(), "-o",
                           (dir / "w.safetensors").string()});
  check_exit(r, 0);
  BOOST_CHECK_MESSAGE(contains(r.out, "exported 2 tensors"), r.out);
  BOOST_CHECK(contains(r.out, "at --key model to"));
  BOOST_CHECK(ckpt::load_safetensors_file(dir / "w.safetensors") == ckpt::module_state(*model));

  // Two dicts of tensors: which is the module state is the user's choice, by key.
  torch::nn::Linear ema(4, 3);
  ckpt::save(dir / "two.pt", {{"model", model}, {"ema", ema}, {"step", step}});
  check_error(tool(dir, {"export", (dir / "two.pt").string(), "-o", (dir / "x.pt").string()}), 2,
              (dir / "two.pt").string(), "several dicts of tensors (model, ema)", "--key");
  check_exit(tool(dir, {"export", (dir / "two.pt").string(), "--key", "ema", "-o",
                        (dir / "ema.pt").string()}),
             0);
  BOOST_CHECK(ckpt::load_state_file(dir / "ema.pt") == ckpt::module_state(*ema));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tool_prune)

BOOST_AUTO_TEST_CASE(keeps_the_newest_that_verify_and_touches_nothing_else) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 5);
  write_text(save / "notes.txt", "mine");
  write_text(save / "model_3.pt.bak", "mine");
  fs::create_directories(save / "sub");
  fs::copy_file(save / "model_0.pt", save / "sub" / "model_9.pt");
  corrupt(save / "model_4.pt");  // the newest is torn: load() resumes from model_3.pt

  const auto before = sample_trainer::test::snapshot(save);
  RunResult r = tool(dir, {"prune", save.string(), "--keep-last", "2", "--dry-run"});
  check_exit(r, 0);
  BOOST_CHECK(sample_trainer::test::snapshot(save) == before);
  // A file that does not verify is neither counted nor deleted.
  BOOST_CHECK(contains(r.out, "skip    " + (save / "model_4.pt").string() + " (does not verify: "));
  BOOST_CHECK(contains(r.out, "keep    " + (save / "model_3.pt").string() + "\n"));
  BOOST_CHECK(contains(r.out, "keep    " + (save / "model_2.pt").string() + "\n"));
  BOOST_CHECK(contains(r.out, "would delete " + (save / "model_1.pt").string() + "\n"));
  BOOST_CHECK(contains(r.out, "dry run: would delete 2, kept 2"));

  r = tool(dir, {"prune", save.string(), "--keep-last", "2"});
  check_exit(r, 0);
  BOOST_CHECK(contains(r.out, "deleted 2, kept 2"));
  BOOST_CHECK(checkpoint_files(save) ==
              (std::vector<std::string>{"model_2.pt", "model_3.pt", "model_3.pt.bak", "model_4.pt",
                                        "model_model_4.pt", "notes.txt"}));
  BOOST_CHECK(fs::exists(save / "sub" / "model_9.pt"));
  fs::remove_all(save / "sub");  // load() searches recursively: it would pick sub/model_9.pt
  // What is left still resumes, from the newest that verifies.
  const RunResult resumed =
      run(dir, kTrainer,
          {"--trainer.epochs", "5", "--trainer.batch_size", "128", "--chkp.load_dir", save.string(),
           "--chkp.save_dir", (dir / "resumed").string()});
  BOOST_CHECK_MESSAGE(contains(resumed.out, "resuming after epoch 3: epochs 4..4"), resumed.out);

  check_exit(tool(dir, {"prune", save.string(), "--keep-last", "5"}), 0);
  BOOST_CHECK_EQUAL(checkpoint_files(save).size(), 6u);
}

BOOST_AUTO_TEST_CASE(refuses_to_delete_when_nothing_verifies_or_arguments_are_bad) {
  TempDir dir;
  const fs::path save = dir / "run";
  train(dir, save, 2, {"--chkp.file_prefix", "net"});
  corrupt(save / "net_0.pt");
  corrupt(save / "net_1.pt");
  const auto before = sample_trainer::test::snapshot(save);
  check_error(tool(dir, {"prune", save.string(), "--keep-last", "1", "--prefix", "net"}), 1,
              save.string(), "no checkpoint", "verifies: nothing deleted");
  check_error(tool(dir, {"prune", save.string(), "--keep-last", "0"}), 2, "--keep-last 0");
  check_error(tool(dir, {"prune", save.string()}), 2, "missing --keep-last");
  check_error(tool(dir, {"prune", save.string(), "--keep-last", "x"}), 2, "--keep-last");
  check_error(tool(dir, {"prune", (dir / "nope").string(), "--keep-last", "1"}), 2,
              (dir / "nope").string());
  BOOST_CHECK(sample_trainer::test::snapshot(save) == before);
  const RunResult r = tool(dir, {"prune", save.string(), "--keep-last", "1"});  // prefix model
  check_exit(r, 0);
  BOOST_CHECK(contains(r.out, "nothing to prune"));
  BOOST_CHECK(sample_trainer::test::snapshot(save) == before);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tool_cli)

BOOST_AUTO_TEST_CASE(help_usage_errors_and_exit_codes) {
  TempDir dir;
  RunResult r = tool(dir, {"--help"});
  check_exit(r, 0);
  for (const char* command : {"list", "inspect", "verify", "diff", "export", "prune"}) {
    BOOST_CHECK_MESSAGE(contains(r.out, std::string("\n  ") + command + " "), command);
    const RunResult help = tool(dir, {command, "--help"});
    check_exit(help, 0);
    BOOST_CHECK_MESSAGE(help.out.rfind(std::string("Usage: ckpt ") + command, 0) == 0, help.out);
    BOOST_CHECK(contains(help.out, "--help"));
    BOOST_CHECK(help.err.empty());
  }
  r = tool(dir, {});
  check_exit(r, 2);
  BOOST_CHECK(contains(r.out, "Usage: ckpt COMMAND"));
  check_error(tool(dir, {"frobnicate"}), 2, "unknown command 'frobnicate'");
  check_error(tool(dir, {"list", ".", "--bogus"}), 2, "--bogus");
  check_error(tool(dir, {"list", ".", "extra"}), 2, "too many positional");
  check_error(tool(dir, {"diff", "a", "b", "--atol=-1"}), 2, "--atol must be >= 0");
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER && CKPT_TOOL
