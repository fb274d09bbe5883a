// Every kind of file ckpt writes loads under Python torch 2.x's default `torch.load(path)`, which
// is `weights_only=True` from torch 2.6 on: its unpickler (torch/_weights_only_unpickler.py)
// accepts only the opcodes it imports from `pickle` and only the globals of
// `_get_allowed_globals()`. The scan below proves it without any Python on the machine; the
// round trip through `python()` proves it with whichever torch that interpreter has.
#ifdef CKPT_SAMPLE_TRAINER

#include "test_sample_trainer_helpers.h"

#include <ckpt/default_checkpointer.h>
#include <ckpt/live_state.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using sample_trainer::test::RunResult;
using sample_trainer::test::TempDir;

namespace {

// The opcodes torch 2.11's weights-only unpickler handles (its `from pickle import (...)`) that
// exist in pickle protocol 2, the protocol torch.save writes (DEFAULT_PROTOCOL = 2 in
// torch/serialization.py). EMPTY_SET, which it also imports, is protocol 4 and so not allowed here.
const std::set<unsigned char> kAllowedOpcodes = {
    'a',  /* APPEND */      'e',  /* APPENDS */    'G',  /* BINFLOAT */
    'h',  /* BINGET */      'J',  /* BININT */     'K',  /* BININT1 */
    'M',  /* BININT2 */     'Q',  /* BINPERSID */  'q',  /* BINPUT */
    'X',  /* BINUNICODE */  'b',  /* BUILD */      '}',  /* EMPTY_DICT */
    ']',  /* EMPTY_LIST */  ')',  /* EMPTY_TUPLE */ 'c', /* GLOBAL */
    0x8a, /* LONG1 */       'j',  /* LONG_BINGET */ 'r', /* LONG_BINPUT */
    '(',  /* MARK */        0x89, /* NEWFALSE */   0x81, /* NEWOBJ */
    0x88, /* NEWTRUE */     'N',  /* NONE */       0x80, /* PROTO */
    'R',  /* REDUCE */      's',  /* SETITEM */    'u',  /* SETITEMS */
    'U',  /* SHORT_BINSTRING */ '.', /* STOP */    't',  /* TUPLE */
    0x85, /* TUPLE1 */      0x86, /* TUPLE2 */     0x87, /* TUPLE3 */
};

// Globals from torch 2.11's `_get_allowed_globals()` (torch/_weights_only_unpickler.py) that a
// state dict of dense CPU tensors and plain values can need: the fixed entries, the legacy storage
// classes of `torch._storage_classes` (CPU ones), and the rebuild functions of
// `_tensor_rebuild_functions()`.
const std::set<std::string> kAllowedGlobals = {
    "collections.OrderedDict",
    "collections.Counter",
    "torch.nn.parameter.Parameter",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.DoubleStorage",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.ComplexFloatStorage",
    "torch.ComplexDoubleStorage",
};

struct Scan {
  std::vector<std::string> bad_opcodes;  // "0x95 at 12"
  std::vector<std::string> bad_globals;  // "builtins.eval"
  std::set<std::string> globals;
  int protocol = -1;
};

uint64_t le(const std::string& s, std::size_t at, int bytes) {
  BOOST_REQUIRE_LE(at + bytes, s.size());
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<unsigned char>(s[at + i])} << (8 * i);
  return v;
}

// Walks a pickle opcode by opcode (each opcode's argument length per Lib/pickletools.py) and
// records every opcode and global outside the allowlists. An opcode it does not know ends the walk,
// reported as not allowed.
Scan scan_pickle(const std::string& p) {
  Scan scan;
  std::size_t i = 0;
  while (i < p.size()) {
    const auto op = static_cast<unsigned char>(p[i]);
    const std::size_t at = i++;
    if (!kAllowedOpcodes.count(op)) {
      char text[32];
      std::snprintf(text, sizeof text, "0x%02x at %zu", op, at);
      scan.bad_opcodes.push_back(text);
      return scan;
    }
    switch (op) {
      case 0x80: scan.protocol = static_cast<unsigned char>(p.at(i)); i += 1; break;
      case 'K': case 'h': case 'q': i += 1; break;
      case 'M': i += 2; break;
      case 'J': case 'j': case 'r': i += 4; break;
      case 'G': i += 8; break;
      case 0x8a: i += 1 + static_cast<unsigned char>(p.at(i)); break;
      case 'U': i += 1 + static_cast<unsigned char>(p.at(i)); break;
      case 'X': i += 4 + le(p, i, 4); break;
      case 'c': {
        const std::size_t module_end = p.find('\n', i);
        const std::size_t name_end = p.find('\n', module_end + 1);
        BOOST_REQUIRE(module_end != std::string::npos && name_end != std::string::npos);
        const std::string global =
            p.substr(i, module_end - i) + "." + p.substr(module_end + 1, name_end - module_end - 1);
        scan.globals.insert(global);
        if (!kAllowedGlobals.count(global)) scan.bad_globals.push_back(global);
        i = name_end + 1;
        break;
      }
      case '.': return scan;
      default: break;  // no argument
    }
  }
  scan.bad_opcodes.push_back("no STOP");
  return scan;
}

// The bytes of the zip entry whose name ends in `suffix`, found through the central directory
// (ckpt writes data descriptors, so local headers carry no sizes). Read independently of ckpt's
// own zip code, so a writer bug cannot hide behind the same reader.
std::string zip_entry(const fs::path& file, const std::string& suffix) {
  std::ifstream in(file, std::ios::binary);
  const std::string z((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t end = z.rfind(std::string("PK\x05\x06", 4));
  BOOST_REQUIRE_MESSAGE(end != std::string::npos, file << ": no end of central directory");
  uint64_t entries = le(z, end + 10, 2);
  uint64_t offset = le(z, end + 16, 4);
  if (offset == 0xffffffffu || entries == 0xffff) {  // zip64: the locator sits before the end
    const uint64_t end64 = le(z, end - 20 + 8, 8);
    entries = le(z, end64 + 32, 8);
    offset = le(z, end64 + 48, 8);
  }
  for (uint64_t n = 0; n < entries; ++n) {
    BOOST_REQUIRE_EQUAL(le(z, offset, 4), 0x02014b50u);
    uint64_t size = le(z, offset + 20, 4);
    const uint64_t name_length = le(z, offset + 28, 2);
    const uint64_t extra_length = le(z, offset + 30, 2);
    const uint64_t comment_length = le(z, offset + 32, 2);
    uint64_t local = le(z, offset + 42, 4);
    const std::string name = z.substr(offset + 46, name_length);
    // zip64 extra field: the 0xffffffff fields follow in order (sizes, then the offset).
    for (uint64_t e = offset + 46 + name_length; e + 4 <= offset + 46 + name_length + extra_length;) {
      const uint64_t id = le(z, e, 2), length = le(z, e + 2, 2);
      if (id == 1) {
        uint64_t at = e + 4;
        if (le(z, offset + 24, 4) == 0xffffffffu) { at += 8; }  // uncompressed
        if (size == 0xffffffffu) { size = le(z, at, 8); at += 8; }
        if (local == 0xffffffffu) local = le(z, at, 8);
      }
      e += 4 + length;
    }
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const uint64_t data = local + 30 + le(z, local + 26, 2) + le(z, local + 28, 2);
      return z.substr(data, size);
    }
    offset += 46 + name_length + extra_length + comment_length;
  }
  BOOST_FAIL(file << ": no entry ending in " << suffix);
  return {};
}

void require_weights_only_safe(const fs::path& file) {
  const Scan scan = scan_pickle(zip_entry(file, "/data.pkl"));
  BOOST_TEST_MESSAGE(file.filename().string() << ": protocol " << scan.protocol << ", "
                                              << scan.globals.size() << " globals");
  BOOST_TEST(scan.protocol == 2, file << ": pickle protocol " << scan.protocol);
  BOOST_TEST(scan.bad_opcodes.empty(), file << ": opcodes outside the weights-only set: "
                                            << (scan.bad_opcodes.empty() ? "" : scan.bad_opcodes[0]));
  for (const auto& global : scan.bad_globals) {
    BOOST_ERROR(file << ": global " << global << " is not on torch's weights-only allowlist");
  }
}

// A checkpoint with every part ckpt writes, and every value kind a state can hold.
ckpt::Checkpoint every_part() {
  torch::manual_seed(3);
  torch::nn::Sequential model(torch::nn::Linear(4, 3), torch::nn::ReLU(), torch::nn::Linear(3, 2));
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01));
  adam.zero_grad();
  model->forward(torch::ones({2, 4})).sum().backward();
  adam.step();
  ckpt::Checkpoint c;
  c.module_interface_state = ckpt::module_state(*model);
  c10::impl::GenericList optimizers(c10::AnyType::get());
  optimizers.push_back(ckpt::optimizer_state(adam).to_ivalue());
  c.trainer_state = ckpt::StateDict{{"last_epoch", int64_t{4}}, {"optimizers", optimizers}};
  c10::impl::GenericList numbers(c10::AnyType::get());
  numbers.push_back(int64_t{-1});
  numbers.push_back(int64_t{1} << 40);
  numbers.push_back(2.5);
  c.trainer_backend_state = ckpt::StateDict{{"global_step_completed", int64_t{70000}},
                                            {"rng_state", torch::arange(8, torch::kUInt8)},
                                            {"numbers", numbers}};
  ckpt::StateDict dtypes;
  for (const auto type : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16,
                          torch::kInt64, torch::kInt32, torch::kInt16, torch::kInt8, torch::kUInt8,
                          torch::kBool, torch::kComplexFloat, torch::kComplexDouble}) {
    dtypes.insert_or_assign(std::string(c10::toString(type)), torch::ones({2, 3}, type));
  }
  const auto base = torch::arange(12, torch::kFloat32);
  dtypes.insert_or_assign("view", base.view({3, 4}).narrow(1, 1, 2));  // shares base's storage
  dtypes.insert_or_assign("base", base);
  dtypes.insert_or_assign("scalar", torch::tensor(7.0));
  c.registered_state = ckpt::StateDict{{"dtypes", dtypes.to_ivalue()},
                                       {"pair", c10::ivalue::Tuple::create({int64_t{1}, true})},
                                       {"none", c10::IValue()},
                                       {"name", std::string("run")}};
  c.hyperparameters = ckpt::StateDict{{"trainer.lr", 0.003}, {"chkp.async", false}};
  return c;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(weights_only)

BOOST_AUTO_TEST_CASE(the_scan_refuses_what_torch_refuses) {
  // Protocol 4 (FRAME), a global off the list, and an unknown opcode are each caught.
  const Scan framed = scan_pickle(std::string("\x80\x04\x95", 3));
  BOOST_TEST(framed.bad_opcodes.size() == 1u);
  const Scan eval = scan_pickle(std::string("\x80\x02" "cbuiltins\neval\n" ")R.", 20));
  BOOST_TEST(eval.bad_globals == std::vector<std::string>{"builtins.eval"});
  BOOST_TEST(eval.bad_opcodes.empty());
  const Scan set = scan_pickle(std::string("\x80\x02\x8f.", 4));  // EMPTY_SET: protocol 4
  BOOST_TEST(set.bad_opcodes.size() == 1u);
}

BOOST_AUTO_TEST_CASE(every_kind_of_file_is_protocol_2_with_allowed_globals_only) {
  TempDir dir;
  // The sample trainer's files: epoch and step checkpoints with every part the trainer writes
  // (optimizer and scheduler states, metrics, hyperparameters), best-pool files, the latest
  // pointer's target and the exported weights.
  const fs::path run = dir / "run";
  fs::create_directories(dir / "work");
  const RunResult r = sample_trainer::test::run_in(
      dir / "work", dir / "logs",
      ckpt::test::quote(CKPT_SAMPLE_TRAINER) + " --trainer.epochs 3 --trainer.batch_size 256" +
          " --chkp.save_dir " + ckpt::test::quote(run.string()) + " --chkp.model_state_save_dir " +
          ckpt::test::quote(run.string()) +
          " --chkp.every_n_train_steps 4 --chkp.save_top_k 2 --chkp.monitor val_loss");
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  // In process: a DefaultCheckpointer checkpoint with all six parts, a weights file, and a
  // Fabric-style file.
  const fs::path lib = dir / "lib";
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = lib;
  args.model_state_save_dir = lib;
  ckpt::DefaultCheckpointer checkpointer(args);
  const ckpt::Checkpoint full = every_part();
  checkpointer.save(full, 0);
  checkpointer.save_model(full.module_interface_state, 0);
  torch::nn::Linear model(3, 2);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  int64_t step = 5;
  ckpt::save(lib / "fabric.pt", {{"model", model}, {"optimizer", sgd}, {"step", step}});

  std::set<std::string> kinds;
  std::vector<fs::path> files;
  for (const fs::path& d : {run, lib}) {
    for (const auto& entry : fs::directory_iterator(d)) {
      if (entry.path().extension() != ".pt") continue;
      files.push_back(entry.path());
      const std::string name = entry.path().filename().string();
      if (name.rfind("model_best_", 0) == 0) kinds.insert("best");
      else if (name.rfind("model_model_", 0) == 0) kinds.insert("weights");
      else if (name.find("_step_") != std::string::npos) kinds.insert("step");
      else kinds.insert(name == "fabric.pt" ? "fabric" : "checkpoint");
    }
  }
  BOOST_TEST_MESSAGE("files: " << files.size());
  for (const auto& kind : {"best", "weights", "fabric", "checkpoint", "step"}) {
    BOOST_TEST(kinds.count(kind) == 1u, "no " << kind << " file was written");
  }
  BOOST_TEST(files.size() >= 8u);
  for (const auto& file : files) require_weights_only_safe(file);

  // Python reads every one with plain torch.load (weights_only=True by default from torch 2.6;
  // asked for explicitly there), saves what it got, and ckpt reads that back equal.
  std::string script =
      "import sys, torch\n"
      "v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2])\n"
      "for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):\n"
      "    d = torch.load(src, weights_only=True) if v >= (2, 6) else torch.load(src)\n"
      "    torch.save(d, dst)\n"
      "print('torch', torch.__version__, 'weights_only' if v >= (2, 6) else 'full unpickler')\n";
  std::string command =
      ckpt::test::quote(ckpt::test::python()) + " -c " + ckpt::test::quote(script);
  for (std::size_t i = 0; i < files.size(); ++i) {
    command += " " + ckpt::test::quote(files[i].string()) + " " +
               ckpt::test::quote((dir / ("py_" + std::to_string(i) + ".pt")).string());
  }
  const auto py = ckpt::test::run_command(command);
  BOOST_REQUIRE_MESSAGE(py.exit_code == 0, py.output);
  BOOST_TEST_MESSAGE(py.output);
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto back = ckpt::load_state_file(dir / ("py_" + std::to_string(i) + ".pt"));
    BOOST_TEST(ckpt::deep_equal(back.to_ivalue(), ckpt::load_state_file(files[i]).to_ivalue()),
               files[i] << " changed through Python's torch.load and torch.save");
  }
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
