// ckpt_bench: ckpt's saves and loads against the physical reference (write + fsync, read) and
// against LibTorch's and Python's torch.save / torch.load, on the same state, in the same run.
//
//   build/bench/ckpt_bench                      # 256 MB and 1 GB, 6-20 paired runs each
//   build/bench/ckpt_bench --sizes 16 --reps 3 --files 1000,10000   # a quick run
//   build/bench/ckpt_bench --only-staging --staging-size 256 --trainer-reps 3   # issue 16's rows
//
// Every mode runs in its own child process (this executable re-invoked with --child), so that its
// peak resident memory (getrusage of the child) is its own. Every ratio is paired: a mode and its
// reference run next to each other in the same run, the order rotated from run to run; a table
// gives each ratio's median with its min-max and the median's 95% confidence interval, and an A/A
// row (a reference against itself) shows the noise floor. A group of rows runs until its A/A
// intervals are within +-10% of 1 (--reps at least, --max-reps at most).

#include <ckpt/checkpoint.h>
#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_reader.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/logger.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <spdlog/spdlog.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr double kMB = 1024.0 * 1024.0;

// The simulated compute between a save and wait_staged() in a child (--compute).
double& compute_seconds() {
  static double seconds = 1.0;
  return seconds;
}

[[noreturn]] void die(const std::string& message) {
  std::cerr << "ckpt_bench: error: " << message << std::endl;
  std::exit(2);
}

struct Options {
  std::vector<int64_t> sizes_mb{256, 1024};
  // Paired runs per group (saves, loads): at least `reps`, and more, up to `max_reps`, until every
  // A/A row's 95% interval lies within +-10% of 1 (issue 15: enough runs to see the noise floor).
  int reps = 6;
  int max_reps = 20;
  // Saves timed per save mode and run; the run's figure is their median, so that one of this
  // machine's write spikes (see bench/disk-noise.sh) does not become the run's.
  int save_repeats = 5;
  // Rounds of loads per run, every load mode once per round, each in a process of its own; the
  // run's figure is their median and its ratios the median of the rounds' ratios, so that one slow
  // process (page faults, a disk spike) does not become the run's.
  int load_rounds = 3;
  // Untimed loads of the same file, evicted again, before each timed cold load in its process: on
  // this VM a process's first cold load took about twice as long when the process before it was
  // another mode (Python, a plain read) than when it was the same one, because of what that
  // process left in the guest's memory, so without them the cold A/A rows measure the order of the
  // modes. Measured: the log-ratio spread of back-to-back cold ckpt loads fell from 0.50 to 0.11.
  // The price (docs/performance.md): a mode that fills a new buffer may reuse what its lead-in freed, which a
  // process's first load cannot (ckpt's read-into-memory load: 0.47 s warm, 0.064 s cold).
  int cold_lead_ins = 1;
  fs::path dir = CKPT_BENCH_DEFAULT_DIR;
  std::string python = CKPT_BENCH_PYTHON;
  std::vector<int64_t> file_counts{1000, 10000, 100000};
  bool cold = false;
  bool skip_python = false;
  // Blocked time of async saves with the copy staged in the background, paired with sync saves.
  int64_t staging_size_mb = 256;
  int staging_reps = 7;
  double compute_seconds = 1.0;
  // The sample trainer with a ~256 MB checkpoint every epoch: off / sync / async, and two ranks.
  int trainer_reps = 3;
  int64_t trainer_hidden = 4600;
  int trainer_epochs = 2;
  int64_t trainer_examples = 300;
  bool only_staging = false;
  // S3 (issue 14): ckpt against boto3 and the AWS CLI on the same gateway.
  std::string s3_url;
  int s3_reps = 5;
  int64_t s3_size_mb = 256;
  bool only_s3 = false;
};

std::vector<int64_t> parse_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 0) die("bad value '" + text + "' for " + flag);
    values.push_back(v);
  }
  return values;
}

void usage() {
  std::cout
      << "Usage: ckpt_bench [options]\n"
         "  --sizes MB,MB       state sizes (module + Adam state), default 256,1024\n"
         "  --reps N            paired runs per size and group (saves, loads), at least;\n"
         "                      default 6 (the fewest with a 95% interval of the median)\n"
         "  --max-reps N        more runs, up to N, until every A/A row's 95% interval of the\n"
         "                      median lies within +-10% of 1; default 20 (<= --reps: no more)\n"
         "  --save-repeats N    rounds of saves per run: the C++ modes once per round, in one\n"
         "                      process, each after an untimed plain write; a run's time is the\n"
         "                      median of its rounds, its ratio the median of the rounds'\n"
         "                      ratios; Python's saves N times in its own; default 5\n"
         "  --load-rounds N     rounds of loads per run: every load mode once per round, each in\n"
         "                      a process of its own, the order reversed every other round; a\n"
         "                      run's time is the median of its rounds, its ratio the median of\n"
         "                      the rounds' ratios; default 3\n"
         "  --cold-lead-ins N   untimed cold loads of the same file (evicted again after each)\n"
         "                      before a process's timed cold load, Python's too; default 1\n"
         "                      (0: the process's first load is the timed one)\n"
         "  --dir DIR           where files are written (a real disk, not tmpfs); default "
      << CKPT_BENCH_DEFAULT_DIR
      << "\n"
         "  --python PATH       interpreter that imports torch, default "
      << CKPT_BENCH_PYTHON
      << "\n"
         "  --files N,N         directory sizes for get_latest_file, default 1000,10000,100000 "
         "(empty: skip)\n"
         "  --no-python         skip the Python rows\n"
         "  --staging-size MB   state of the staging rows (async blocked time), default 256\n"
         "  --staging-reps N    paired runs of the staging rows, default 7 (0: skip)\n"
         "  --compute S         simulated compute between a save and wait_staged(), default 1.0\n"
         "  --trainer-reps N    paired runs of the sample trainer rows, default 3 (0: skip)\n"
         "  --hidden N          the sample trainer's hidden widths for those rows, default 4600\n"
         "  --epochs N          the sample trainer's epochs for those rows, default 2\n"
         "  --examples N        the first N digits only, so that an epoch takes seconds, not\n"
         "                      minutes, at that width; default 300 (0: all 1797)\n"
         "  --only-staging      run only the staging and sample trainer rows\n"
         "  --s3-url URL        s3://bucket/prefix for the S3 rows (the gateway and keys from\n"
         "                      AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...: . DIR/env of\n"
         "                      scripts/s3-server.sh); without it the S3 rows are skipped\n"
         "  --s3-size MB        state of the S3 rows, default 256\n"
         "  --s3-reps N         paired runs of the S3 rows, default 5\n"
         "  --only-s3           run only the S3 rows\n";
}

// ---------------------------------------------------------------- the state

// A module state and its Adam state (exp_avg and exp_avg_sq: about 3x the weights in all), laid
// out like a small transformer stack: an embedding, `layers` square linear layers with biases, a
// final norm. The sizes are chosen so that the whole state is about `total_mb`.
ckpt::Checkpoint make_checkpoint(int64_t total_mb) {
  torch::manual_seed(0);
  const int64_t hidden = 1024;
  const int64_t layer_bytes = 4 * (hidden * hidden + hidden);
  const int64_t weight_bytes = total_mb * (1 << 20) / 3;
  const int64_t layers = std::max<int64_t>(1, weight_bytes / layer_bytes - 1);
  const int64_t rest = std::max<int64_t>(weight_bytes - layers * layer_bytes - 8 * hidden, 0);
  const int64_t vocab = std::max<int64_t>(1, rest / (4 * hidden));

  std::vector<std::pair<std::string, torch::Tensor>> params;
  params.emplace_back("embedding.weight", torch::randn({vocab, hidden}));
  for (int64_t i = 0; i < layers; ++i) {
    const std::string name = "layers." + std::to_string(i) + ".";
    params.emplace_back(name + "weight", torch::randn({hidden, hidden}));
    params.emplace_back(name + "bias", torch::randn({hidden}));
  }
  params.emplace_back("norm.weight", torch::ones({hidden}));
  params.emplace_back("norm.bias", torch::zeros({hidden}));

  std::vector<torch::Tensor> leaves;
  for (auto& [name, tensor] : params) {
    tensor.set_requires_grad(true);
    leaves.push_back(tensor);
  }
  torch::optim::Adam adam(leaves, torch::optim::AdamOptions(1e-3));
  for (auto& tensor : leaves) tensor.mutable_grad() = torch::randn_like(tensor);
  adam.step();

  ckpt::Checkpoint checkpoint;
  for (auto& [name, tensor] : params) {
    checkpoint.module_interface_state.insert_or_assign(name, tensor.detach());
  }
  c10::impl::GenericList optimizers(c10::AnyType::get());
  optimizers.push_back(ckpt::optimizer_state(adam).to_ivalue());
  checkpoint.trainer_state.insert_or_assign("last_epoch", int64_t{3});
  checkpoint.trainer_state.insert_or_assign("optimizers", optimizers);
  checkpoint.trainer_backend_state.insert_or_assign("global_step_completed", int64_t{4000});
  checkpoint.trainer_backend_state.insert_or_assign("batches_completed", int64_t{1000});
  return checkpoint;
}

void collect_tensors(const c10::IValue& value, std::vector<torch::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) collect_tensors(item.value(), out);
  } else if (value.isList()) {
    for (const auto& item : value.toListRef()) collect_tensors(item, out);
  } else if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements()) collect_tensors(item, out);
  }
}

std::vector<torch::Tensor> tensors_of(const ckpt::Checkpoint& checkpoint) {
  std::vector<torch::Tensor> out;
  collect_tensors(checkpoint.module_interface_state.to_ivalue(), out);
  collect_tensors(checkpoint.trainer_state.to_ivalue(), out);
  collect_tensors(checkpoint.trainer_backend_state.to_ivalue(), out);
  return out;
}

uint64_t tensor_bytes(const std::vector<torch::Tensor>& tensors) {
  uint64_t bytes = 0;
  for (const auto& t : tensors) bytes += t.storage().nbytes();
  return bytes;
}

// ---------------------------------------------------------------- the child modes

// Lets the disk finish what the previous write left (writeback, freed blocks) before the next
// timed one starts.
void settle() {
  ::sync();
  ::usleep(300 * 1000);
}

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) die("fsync of " + path.string() + ": " + std::strerror(errno));
  ::close(fd);
}

void evict(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path.string());
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void print_result(const std::string& name, const std::vector<double>& times) {
  std::cout << "RESULT " << name;
  for (double t : times) std::cout << ' ' << t;
  std::cout << std::endl;
}

// The physical reference: the same tensor bytes written with write(2) from their own memory into
// one new file, then fsync.
void plain_write(const std::vector<torch::Tensor>& tensors, const fs::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("cannot create " + path.string() + ": " + std::strerror(errno));
  for (const auto& t : tensors) {
    const char* p = static_cast<const char*>(t.storage().data());
    std::size_t left = t.storage().nbytes();
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0) die("write to " + path.string() + ": " + std::strerror(errno));
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  if (::fsync(fd) != 0) die("fsync of " + path.string() + ": " + std::strerror(errno));
  ::close(fd);
}

// Puts `path` in the page cache the same way before every warm load: evicted, then read in order
// through a small buffer. The page cache keeps more than which bytes are there: pages read by
// read() sit in small folios, pages ckpt's mapped load reads in 2 MB ones, and a mapped load over
// the latter is several times faster (the first touch of each 4 KB page traps to the hypervisor
// on this VM). Without it a warm load's time depends on which mode read the file last.
void recache(const fs::path& path) {
  evict(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path.string());
  std::vector<char> buffer(4 << 20);
  ssize_t n = 0;
  while ((n = ::read(fd, buffer.data(), buffer.size())) > 0) {
  }
  if (n < 0) die("read of " + path.string() + " failed");
  ::close(fd);
}

uint64_t plain_read(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path.string());
  struct stat st {};
  ::fstat(fd, &st);
  std::unique_ptr<char, void (*)(void*)> buffer(
      static_cast<char*>(std::aligned_alloc(64, (st.st_size + 64) / 64 * 64)), &std::free);
  uint64_t done = 0;
  while (done < static_cast<uint64_t>(st.st_size)) {
    const ssize_t n = ::read(fd, buffer.get() + done, st.st_size - done);
    if (n <= 0) die("read of " + path.string() + " failed");
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return done;
}

ckpt::DefaultCheckpointerArguments checkpointer_args(const fs::path& dir, bool async) {
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = dir;
  args.model_state_save_dir = std::filesystem::path();  // no weights file
  args.log_level = "warning";
  args.async = async;
  return args;
}

// Where the S3 rows write (--s3-url), passed to children in CKPT_BENCH_S3_URL.
std::string s3_url() {
  const char* url = std::getenv("CKPT_BENCH_S3_URL");
  if (url == nullptr || *url == '\0') die("the S3 rows need --s3-url s3://bucket/prefix");
  return url;
}

// The number after `field:` in the /proc file `file`, e.g. ("status", "VmRSS") in kB, or
// ("io", "read_bytes"): what this process caused to be read from the disk (page cache misses,
// mapped pages included), unlike rchar. 0 if absent.
int64_t proc_field(const char* file, const char* field) {
  std::ifstream in(std::string("/proc/self/") + file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(std::string(field) + ":", 0) == 0)
      return std::stoll(line.substr(line.find(':') + 1));
  }
  return 0;
}

// The local filesystem with every file read through read(2), never mapped: the load ckpt did
// before it mapped files, for the mmap row's reference.
ckpt::Storage& unmapped_local() {
  struct Unmapped final : ckpt::StorageWrapper {
    using StorageWrapper::StorageWrapper;
    std::unique_ptr<ckpt::RandomAccessFile> open(const std::filesystem::path& path) override {
      struct File final : ckpt::RandomAccessFile {
        std::unique_ptr<ckpt::RandomAccessFile> file;
        uint64_t size() const override { return file->size(); }
        void read(uint64_t offset, std::size_t size, void* out) const override {
          file->read(offset, size, out);
        }
      };
      auto file = std::make_unique<File>();
      file->file = target().open(path);
      return file;
    }
  };
  static Unmapped storage(ckpt::Storage::local());
  return storage;
}

int run_child(const std::string& mode, int64_t size_mb, int reps, const fs::path& dir, bool cold,
              int lead_ins, const std::vector<std::string>& group_order) {
  std::vector<double> times;
  auto timed = [&](auto&& body) {
    const auto start = Clock::now();
    body();
    times.push_back(seconds_since(start));
  };
  const fs::path ckpt_file = dir / "ckpt" / "model_0.pt";
  const fs::path torch_file = dir / "torch_save.pt";

  if (mode == "ckpt_load" || mode == "ckpt_load_nomap" || mode == "ckpt_open" ||
      mode == "ckpt_weights" || mode == "torch_load" || mode == "read") {
    const fs::path file = mode == "torch_load" ? torch_file : ckpt_file;
    std::vector<double> disk_bytes, asked_bytes;
    // One load of `file` by `mode`; the bytes a partial one asked the storage for, or -1.
    auto load_once = [&]() -> double {
      if (mode == "ckpt_load") {
        ckpt::load_checkpoint_file(file);  // verifies every checksum first
      } else if (mode == "ckpt_load_nomap") {
        // The same load with the file read into one buffer instead of mapped.
        ckpt::load_checkpoint_file(file, unmapped_local());
      } else if (mode == "ckpt_open") {
        const ckpt::CheckpointReader reader(file);
        reader.outline();
        return static_cast<double>(reader.bytes_read());
      } else if (mode == "ckpt_weights") {
        // The weights out of the module + Adam checkpoint: only their records, each checked.
        const ckpt::CheckpointReader reader(file);
        reader.load_state("module_interface_state");
        return static_cast<double>(reader.bytes_read());
      } else if (mode == "torch_load") {
        std::vector<torch::Tensor> tensors;
        torch::load(tensors, file.string());
      } else {
        plain_read(file);
      }
      return -1;
    };
    for (int i = 0; i < lead_ins; ++i) {  // see Options::cold_lead_ins
      evict(file);
      load_once();
    }
    for (int i = 0; i < reps; ++i) {
      if (cold) evict(file);
      const int64_t disk_before = proc_field("io", "read_bytes");
      double asked = -1;
      timed([&] { asked = load_once(); });
      if (asked >= 0) asked_bytes.push_back(asked);
      disk_bytes.push_back(static_cast<double>(proc_field("io", "read_bytes") - disk_before));
    }
    print_result(mode, times);
    print_result(mode + "_disk_bytes", disk_bytes);
    if (!asked_bytes.empty()) print_result(mode + "_asked_bytes", asked_bytes);
    print_result(mode + "_file_bytes", {static_cast<double>(fs::file_size(file))});
    return 0;
  }

  if (mode == "s3_load") {
    const std::string url = s3_url() + "/model_0.pt";
    timed([&] { ckpt::load_checkpoint_file(url); });  // verifies every checksum first
    print_result(mode, times);
    return 0;
  }

  const ckpt::Checkpoint checkpoint = make_checkpoint(size_mb);
  if (mode == "s3_save") {
    // The save's own memory: peak RSS during the save (reset first) over the RSS before it.
    const int64_t before_kb = proc_field("status", "VmRSS");
    std::ofstream("/proc/self/clear_refs") << "5";
    timed([&] { ckpt::save_checkpoint_file(checkpoint, s3_url() + "/model_0.pt"); });
    print_result(mode, times);
    std::printf("RESULT s3_save_extra_mb %.1f\n",
                (proc_field("status", "VmHWM") - before_kb) / 1024.0);
    return 0;
  }
  const std::vector<torch::Tensor> tensors = tensors_of(checkpoint);
  // One timed save of a new file by `name` (plain_write, torch_save or ckpt_save), after settle(),
  // the file removed right after unless `keep`: so that every save starts with the page cache as
  // the last one left it, not with a gigabyte more of it taken (on this VM a page the guest has
  // not used lately costs far more to fill; a save that kept its file made the next one slow).
  std::optional<ckpt::DefaultCheckpointer> checkpointer;
  int64_t ckpt_index = 0;
  auto save_once = [&](const std::string& name, bool keep) {
    fs::path file;
    if (name == "plain_write") {
      file = dir / "plain.bin";
      settle();
      timed([&] { plain_write(tensors, file); });
    } else if (name == "torch_save") {
      file = keep ? torch_file : dir / "torch_save_timed.pt";  // torch_save.pt: the loads'
      fs::remove(file);  // every row writes a new file, none replaces one
      settle();
      timed([&] {
        torch::save(tensors, file.string());
        fsync_path(file);
      });
    } else if (name == "ckpt_save") {
      if (!checkpointer) checkpointer.emplace(checkpointer_args(dir / "ckpt", false));
      const int64_t index = keep ? 0 : ++ckpt_index;  // model_0.pt: the one the loads read
      file = dir / "ckpt" / ("model_" + std::to_string(index) + ".pt");
      fs::remove(file);
      settle();
      timed([&] { checkpointer->save(checkpoint, index); });
    } else {
      die("unknown save mode " + name);
    }
    if (!keep) fs::remove(file);
  };
  if (mode == "plain_write" || mode == "torch_save" || mode == "ckpt_save") {
    // On its own (for its peak memory): the last save keeps its file, which the loads read.
    for (int i = 0; i < reps; ++i) save_once(mode, i == reps - 1 && mode != "plain_write");
  } else if (mode == "save_group") {
    // The C++ save modes of one run in one process: one state, `reps` rounds, every mode once per
    // round, the order reversed every other round (A B C, C B A, A B C), so that the modes of a
    // run are timed seconds apart and no mode always runs first. None keeps its file.
    std::map<std::string, std::vector<double>> by_mode;
    // Every timed save comes right after an untimed plain write of the same bytes (the lead-in),
    // so that none inherits what the one before it left: on this VM the write after a torch::save
    // takes about 4x as long as after any other save, and the first write of a process about 5x.
    for (int round = 0; round < reps; ++round) {
      std::vector<std::string> order = group_order;
      if (round % 2 == 1) std::reverse(order.begin(), order.end());
      for (const auto& member : order) {
        save_once("plain_write", false);
        save_once(member.substr(0, member.find('#')), false);  // "#2": the A/A twin
        by_mode[member].push_back(times.back());
      }
    }
    for (const auto& [member, seconds] : by_mode) print_result(member, seconds);
    return 0;
  } else if (mode == "ckpt_async") {
    // One more save than asked: the first allocates the staging memory, later ones reuse it.
    std::vector<double> durable;
    std::vector<double> first;
    ckpt::DefaultCheckpointer checkpointer(checkpointer_args(dir / "async", true));
    for (int i = 0; i <= reps; ++i) {
      const auto start = Clock::now();
      checkpointer.save(checkpoint, i);
      const double blocked = seconds_since(start);
      checkpointer.wait();
      const double until_durable = seconds_since(start);
      if (i == 0) {
        first = {blocked, until_durable};
      } else {
        times.push_back(blocked);
        durable.push_back(until_durable);
      }
      fs::remove(dir / "async" / ("model_" + std::to_string(i) + ".pt"));
    }
    print_result("ckpt_async_blocked", times);
    print_result("ckpt_async_durable", durable);
    print_result("ckpt_async_first", first);
    return 0;
  } else if (mode == "staged_idle" || mode == "staged_compute") {
    // Async with the copy staged in the background. One warm-up save allocates the staging
    // memory; the measured one reuses it, as every save after a run's first does. Blocked time is
    // what the trainer waits: save() plus wait_staged(), with or without compute in between.
    auto args = checkpointer_args(dir / "staged", true);
    args.stage_in_background = true;
    ckpt::DefaultCheckpointer checkpointer(args);
    checkpointer.save(checkpoint, 0);
    checkpointer.wait();
    const auto a = torch::randn({512, 512});
    double blocked = 0;
    auto start = Clock::now();
    checkpointer.save(checkpoint, 1);
    blocked += seconds_since(start);
    if (mode == "staged_compute") {
      const auto compute_start = Clock::now();
      while (seconds_since(compute_start) < compute_seconds()) torch::mm(a, a);  // the passes
    }
    start = Clock::now();
    checkpointer.wait_staged();
    blocked += seconds_since(start);
    checkpointer.wait();
    times.push_back(blocked);
    fs::remove_all(dir / "staged");
  } else if (mode == "state_bytes") {
    times.push_back(static_cast<double>(tensor_bytes(tensors)));
    times.push_back(static_cast<double>(tensors.size()));
  } else {
    die("unknown mode " + mode);
  }
  print_result(mode, times);
  return 0;
}

// ---------------------------------------------------------------- the parent

struct ChildResult {
  std::map<std::string, std::vector<double>> results;
  double peak_rss_mb = 0;
};

std::string self_exe() { return fs::read_symlink("/proc/self/exe").string(); }

// Runs argv with its stdout captured; its peak RSS from wait4.
ChildResult spawn(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) die("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::perror("execv");
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  std::string output;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) output.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  std::string command;
  for (const auto& a : argv) command += a + " ";
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    die("child failed (status " + std::to_string(status) + "): " + command + "\n" + output);
  }
  ChildResult result;
  result.peak_rss_mb = usage.ru_maxrss / 1024.0;  // kilobytes on Linux
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string tag, name;
    words >> tag >> name;
    if (tag != "RESULT") continue;
    double v;
    while (words >> v) result.results[name].push_back(v);
  }
  if (result.results.empty()) die("no result from: " + command + "\n" + output);
  return result;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Row {
  std::string name;
  double seconds;
  double peak_rss_mb;
};

void bench_latest(const Options& options) {
  if (options.file_counts.empty()) return;
  std::printf("\n### get_latest_file over one directory, median of %d runs\n\n", options.reps);
  std::printf("| %-10s | %10s | %14s | %10s |\n", "files", "time", "per file", "vs 1st");
  std::printf("|------------|------------|----------------|------------|\n");
  double first_per_file = 0;
  for (const int64_t count : options.file_counts) {
    const fs::path dir = options.dir / ("latest_" + std::to_string(count));
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (int64_t i = 0; i < count; ++i) {
      const fs::path file = dir / ("model_" + std::to_string(i) + ".pt");
      const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) die("cannot create " + file.string());
      ::close(fd);
    }
    std::vector<double> times;
    for (int r = 0; r < options.reps; ++r) {
      const auto start = Clock::now();
      const fs::path latest = ckpt::get_latest_file(dir);
      times.push_back(seconds_since(start));
      if (latest.filename() != "model_" + std::to_string(count - 1) + ".pt") {
        die("get_latest_file returned " + latest.string());
      }
    }
    const double seconds = median(times);
    const double per_file = seconds / static_cast<double>(count);
    if (first_per_file == 0) first_per_file = per_file;
    std::printf("| %10lld | %8.4f s | %11.3f us | %9.2fx |\n", static_cast<long long>(count),
                seconds, per_file * 1e6, per_file / first_per_file);
    std::fflush(stdout);
    fs::remove_all(dir);
  }
  std::printf(
      "\n(vs 1st: time per file relative to the smallest directory; linear growth keeps "
      "it near 1.)\n");
}

}  // namespace

// ---------------------------------------------------------------- paired rows

// One ratio per run (a mode's value over its reference's, measured next to each other in the same
// run), summarised as the median with the smallest and largest.
struct Paired {
  std::vector<double> values, ratios;
};

std::string summary(const std::vector<double>& ratios) {
  if (ratios.empty()) return "-";
  const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
  char text[96];
  std::snprintf(text, sizeof text, "%.3fx [%.3f-%.3f]", median(ratios), *lo, *hi);
  return text;
}

// The order of `modes` in run `run`: reversed in every other run, so that no mode always runs
// right after the same other one (a write slows the one after it while the disk catches up), and
// rotated every second run, so that no mode always runs first. Every rotation comes both ways
// within 2 x modes runs; rotating every run instead would, for an even number of modes, tie each
// rotation to one direction (with four, the A of an A/A pair would always run before its twin).
std::vector<std::string> rotated(const std::vector<std::string>& modes, int run) {
  std::vector<std::string> order;
  const std::size_t shift = static_cast<std::size_t>(run / 2);
  for (std::size_t i = 0; i < modes.size(); ++i) {
    order.push_back(modes[(i + shift) % modes.size()]);
  }
  if (run % 2 == 1) std::reverse(order.begin(), order.end());
  return order;
}

// `order` with every A/A twin ("X#2") and its reference ("X") swapped. An A/A pair stands next
// to each other in the list, so in a rotated order the reference always runs after one neighbour
// (or the twin) and the twin after the other (or the reference); swapping them every other
// rotation gives both the same neighbours equally often (a warm ckpt load here can take longer
// after a Python process than after another ckpt load).
std::vector<std::string> twins_swapped(const std::vector<std::string>& order) {
  std::vector<std::string> swapped = order;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto hash = order[i].find('#');
    const auto reference = std::find(order.begin(), order.end(), order[i].substr(0, hash));
    if (hash == std::string::npos || reference == order.end()) continue;
    swapped[static_cast<std::size_t>(reference - order.begin())] = order[i];
    swapped[i] = *reference;
  }
  return swapped;
}

// `interval`, when given, is the 95% CI of the median `value`, printed after it.
void check_target(const char* what, double value, double target, bool at_least,
                  const std::string& interval = "") {
  const bool met = at_least ? value >= target : value <= target;
  const std::string ci = interval.empty() ? "" : " (95% CI " + interval + ")";
  std::printf("- %-66s %7.3f%s (target %s %.3f): %s\n", what, value, ci.c_str(),
              at_least ? ">=" : "<=", target, met ? "met" : "NOT MET");
}

// The distribution-free 95% confidence interval of the median of `values`: the order statistics
// x(j) and x(n+1-j) for the largest j with 2 P(Binomial(n, 1/2) < j) <= 0.05. It assumes nothing
// about the shape of the noise (this disk's is far from normal: rare several-fold spikes), and
// needs at least 6 values.
std::optional<std::pair<double, double>> median_interval(std::vector<double> values) {
  const int n = static_cast<int>(values.size());
  std::sort(values.begin(), values.end());
  double term = std::pow(0.5, n);  // P(B = k), from k = 0
  double below = 0;                // P(B <= k)
  int j = 0;
  for (int k = 0; k < n / 2; ++k) {
    below += term;
    if (2 * below > 0.05) break;
    j = k + 1;
    term = term * (n - k) / (k + 1);
  }
  if (j == 0) return std::nullopt;
  return std::make_pair(values[j - 1], values[n - j]);
}

std::string interval_text(const std::vector<double>& ratios) {
  const auto interval = median_interval(ratios);
  if (!interval) return "-";
  char text[48];
  std::snprintf(text, sizeof text, "%.3f-%.3f", interval->first, interval->second);
  return text;
}

// Whether an A/A row shows a noise floor within +-10%: its median's 95% interval in [0.9, 1.1].
bool within_noise_target(const std::vector<double>& ratios) {
  const auto interval = median_interval(ratios);
  return interval && interval->first >= 0.9 && interval->second <= 1.1;
}

// Issue 15: saves and loads of one state against their references, every ratio taken within one
// run (a mode and its reference run next to each other, the order rotated from run to run), with
// an A/A row per group (the reference against itself) that shows the noise floor. Each group (the
// saves, then the loads of the files the untimed saves wrote) runs until its A/A rows' 95%
// intervals are within +-10% (--reps at least, --max-reps at most). Loads run warm (the file in the
// page cache) and cold (evicted first, after --cold-lead-ins untimed cold loads in the same
// process), one per process as at a resume, and report the bytes they read.
void bench_size(const Options& options, int64_t size_mb) {
  const fs::path dir = options.dir / ("state_" + std::to_string(size_mb));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string exe = self_exe();
  const std::string script = CKPT_BENCH_SCRIPT;
  const std::string save_repeats = std::to_string(options.save_repeats);
  // One child process per mode and run: its peak RSS is its own, and no run warms the next.
  auto run_mode = [&](const std::string& mode, bool cold) -> ChildResult {
    const std::string name = mode.substr(0, mode.find('#'));  // "#2": the A/A twin
    if (name == "py_save") {
      return spawn({options.python, script, "save", (dir / "ckpt" / "model_0.pt").string(),
                    (dir / "py_save.pt").string(), save_repeats});
    }
    if (name == "py_load") {
      std::vector<std::string> argv{options.python, script, "load", (dir / "py_save.pt").string(),
                                    "1"};
      if (cold) {
        argv.push_back("cold");
        argv.push_back(std::to_string(options.cold_lead_ins));
      }
      return spawn(argv);
    }
    return spawn({exe, "--child", name, "--size", std::to_string(size_mb), "--reps", "1", "--dir",
                  dir.string(), cold ? "--cold" : "--warm", "--cold-lead-ins",
                  std::to_string(options.cold_lead_ins)});
  };
  // The file a load mode reads.
  auto loaded_file = [&](const std::string& mode) {
    const std::string name = mode.substr(0, mode.find('#'));
    if (name == "py_load") return dir / "py_save.pt";
    if (name == "torch_load") return dir / "torch_save.pt";
    return dir / "ckpt" / "model_0.pt";
  };
  const auto shape = run_mode("state_bytes", false);
  const auto& sb = shape.results.at("state_bytes");
  std::fprintf(stderr, "state %lld MB: %.1f MB in %.0f tensors\n", static_cast<long long>(size_mb),
               sb[0] / kMB, sb[1]);

  // values[key][run]: seconds (key = mode, or "cold:" + mode), and the bytes it read.
  std::map<std::string, std::vector<double>> seconds, disk, asked;
  // rounds[key][run]: the seconds of `key` in each round of the run (saves and loads).
  std::map<std::string, std::vector<std::vector<double>>> rounds;
  std::map<std::string, double> rss, file_bytes;
  // The ratio of `reference` over `mode`, run by run: > 1 means `mode` is faster.
  auto ratios = [&](const std::string& reference, const std::string& mode) {
    std::vector<double> r;
    if (!seconds.count(reference) || !seconds.count(mode)) return r;
    // Runs 0..n-1 of both (the Python saves run in the first --reps runs only).
    const std::size_t n = std::min(seconds.at(reference).size(), seconds.at(mode).size());
    for (std::size_t i = 0; i < n; ++i) {
      if (rounds.count(reference) && rounds.count(mode)) {
        // Two modes of one group: the median of the run's ratios round by round, each taken
        // between the two modes seconds apart, so that a slow spell of the machine lands on both.
        const auto& a = rounds.at(reference)[i];
        const auto& b = rounds.at(mode)[i];
        std::vector<double> by_round;
        for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k)
          by_round.push_back(a[k] / b[k]);
        r.push_back(median(by_round));
      } else {
        r.push_back(seconds.at(reference)[i] / seconds.at(mode)[i]);
      }
    }
    return r;
  };
  // Runs `one_run` until every A/A pair of the group is within the noise target (at least
  // --reps, at most --max-reps times); returns the number of runs.
  using AaPairs = std::vector<std::pair<std::string, std::string>>;
  auto run_group = [&](const char* group, auto&& one_run, const AaPairs& aa_pairs) {
    int run = 0;
    while (run < std::max(options.reps, options.max_reps)) {
      std::fprintf(stderr, "  %s run %d:", group, run + 1);
      one_run(run);
      std::fprintf(stderr, "\n");
      ++run;
      if (run < options.reps) continue;
      bool settled = true;
      for (const auto& [reference, twin] : aa_pairs) {
        settled = settled && within_noise_target(ratios(reference, twin));
      }
      if (settled) break;
    }
    return run;
  };

  // The C++ saves of a run share one process (save_group: one state, interleaved rounds), so their
  // peak memory comes from one untimed save of each in a process of its own; those also write the
  // files the loads read (ckpt/model_0.pt, torch_save.pt) and Python's save reads.
  const std::vector<std::string> saves{"plain_write", "plain_write#2", "ckpt_save", "torch_save"};
  for (const std::string mode : {"plain_write", "ckpt_save", "torch_save"}) {
    rss[mode] = run_mode(mode, false).peak_rss_mb;
  }
  rss["plain_write#2"] = rss["plain_write"];
  const int save_runs = run_group(
      "saves",
      [&](int run) {
        std::string order;
        for (const auto& mode : rotated(saves, run)) order += (order.empty() ? "" : ",") + mode;
        std::fprintf(stderr, " %s", order.c_str());
        const ChildResult r =
            spawn({exe, "--child", "save_group", "--order", order, "--size",
                   std::to_string(size_mb), "--reps", save_repeats, "--dir", dir.string()});
        for (const auto& mode : saves) {
          seconds[mode].push_back(median(r.results.at(mode)));
          rounds[mode].push_back(r.results.at(mode));
          const char* separator = "=";  // every save's own time in the log: " mode=t1/t2/..."
          std::fprintf(stderr, " %s", mode.c_str());
          for (const double t : r.results.at(mode)) {
            std::fprintf(stderr, "%s%.4f", separator, t);
            separator = "/";
          }
        }
        // Python's save is no A/A pair, so it need not wait for the noise floor: the first runs.
        if (!options.skip_python && run < options.reps) {
          std::fprintf(stderr, " py_save");
          const ChildResult py = run_mode("py_save", false);
          seconds["py_save"].push_back(median(py.results.at("py_save")));
          rss["py_save"] = std::max(rss["py_save"], py.peak_rss_mb);
        }
      },
      {{"plain_write", "plain_write#2"}});

  // The untimed saves wrote ckpt/model_0.pt and torch_save.pt, py_save py_save.pt: the loads'.
  std::vector<std::string> loads{"read",      "ckpt_load",    "ckpt_load#2", "ckpt_load_nomap",
                                 "ckpt_open", "ckpt_weights", "torch_load"};
  AaPairs load_aa{{"ckpt_load", "ckpt_load#2"}, {"cold:ckpt_load", "cold:ckpt_load#2"}};
  if (!options.skip_python) {
    loads.push_back("py_load");
    loads.push_back("py_load#2");
    load_aa.push_back({"py_load", "py_load#2"});
    load_aa.push_back({"cold:py_load", "cold:py_load#2"});
  }
  // A run: --load-rounds rounds, every mode once per round warm and once cold, each load in a
  // process of its own (as at a resume), the order reversed every other round.
  const int load_runs = run_group(
      "loads",
      [&](int run) {
        std::map<std::string, std::vector<double>> run_seconds, run_disk, run_asked;
        for (int round = 0; round < options.load_rounds; ++round) {
          std::vector<std::string> order = rotated(loads, run);
          if ((run / 2) % 2 == 1) order = twins_swapped(order);
          if (round % 2 == 1) std::reverse(order.begin(), order.end());
          if (round > 0) std::fprintf(stderr, " |");
          for (const bool cold : {false, true}) {
            for (const auto& mode : order) {
              if (cold) settle();
              if (!cold) recache(loaded_file(mode));
              const ChildResult r = run_mode(mode, cold);
              const std::string name = mode.substr(0, mode.find('#'));
              const std::string key = (cold ? "cold:" : "") + mode;
              run_seconds[key].push_back(r.results.at(name).at(0));
              // Every load's own time in the log, to see where the noise comes from.
              std::fprintf(stderr, " %s=%.4f", key.c_str(), run_seconds[key].back());
              rss[key] = std::max(rss[key], r.peak_rss_mb);
              if (r.results.count(name + "_disk_bytes")) {
                run_disk[key].push_back(r.results.at(name + "_disk_bytes").at(0));
                file_bytes[name] = r.results.at(name + "_file_bytes").at(0);
              }
              if (r.results.count(name + "_asked_bytes")) {
                run_asked[key].push_back(r.results.at(name + "_asked_bytes").at(0));
              }
            }
          }
        }
        for (const auto& [key, times] : run_seconds) {
          seconds[key].push_back(median(times));
          rounds[key].push_back(times);
        }
        for (const auto& [key, bytes] : run_disk) disk[key].push_back(median(bytes));
        for (const auto& [key, bytes] : run_asked) asked[key].push_back(median(bytes));
      },
      load_aa);

  const double mb = sb[0] / kMB;
  std::printf(
      "\n### %lld MB state: %.1f MB in %.0f tensors (module + Adam); saves: %d paired runs (each "
      "the median of %d interleaved saves; Python's: the first %d), loads: %d paired runs (each "
      "the median of %d rounds)\n\n",
      static_cast<long long>(size_mb), mb, sb[1], save_runs, options.save_repeats,
      std::min(save_runs, options.reps), load_runs, options.load_rounds);
  std::printf("| %-50s | %9s | %8s | %-22s | %-13s | %-18s | %9s | %9s |\n", "mode", "median",
              "MB/s", "ratio", "95% CI", "of", "disk read", "peak RSS");
  std::printf(
      "|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(52, '-').c_str(), std::string(11, '-').c_str(),
      std::string(10, '-').c_str(), std::string(24, '-').c_str(), std::string(15, '-').c_str(),
      std::string(20, '-').c_str(), std::string(11, '-').c_str(), std::string(11, '-').c_str());
  // A row's ratio is `over`'s time / `under`'s, run by run (one of them the row's own mode).
  auto row = [&](const std::string& label, const std::string& key, const std::string& over,
                 const std::string& under, const std::string& ratio_label) {
    if (!seconds.count(key)) return;
    const double t = median(seconds.at(key));
    char read_text[32] = "";
    if (disk.count(key)) {
      std::snprintf(read_text, sizeof read_text, "%.1f MB", median(disk.at(key)) / kMB);
    }
    const auto r = ratios(over, under);
    std::printf("| %-50s | %7.3f s | %8.0f | %-22s | %-13s | %-18s | %9s | %6.0f MB |\n",
                label.c_str(), t, mb / t, over.empty() ? "-" : summary(r).c_str(),
                over.empty() ? "" : interval_text(r).c_str(), ratio_label.c_str(), read_text,
                rss.at(key));
  };
  row("plain write + fsync (reference)", "plain_write", "", "", "");
  row("plain write + fsync again (A/A)", "plain_write#2", "plain_write", "plain_write#2",
      "plain write / this");
  row("ckpt save (DefaultCheckpointer, durable)", "ckpt_save", "plain_write", "ckpt_save",
      "plain write / this");
  row("torch::save + fsync (LibTorch)", "torch_save", "torch_save", "ckpt_save",
      "this / ckpt save");
  row("Python torch.save + fsync", "py_save", "py_save", "ckpt_save", "this / ckpt save");
  for (const bool cold : {false, true}) {
    const std::string c = cold ? "cold:" : "";
    const std::string w = cold ? ", cold" : ", warm";
    row("Python torch.load (reference)" + w, c + "py_load", "", "", "");
    row("Python torch.load again (A/A)" + w, c + "py_load#2", c + "py_load", c + "py_load#2",
        "py load / this");
    row("ckpt load, verified, mmap" + w, c + "ckpt_load", c + "py_load", c + "ckpt_load",
        "py load / this");
    row("ckpt load, verified, mmap again (A/A)" + w, c + "ckpt_load#2", c + "ckpt_load",
        c + "ckpt_load#2", "ckpt load / this");
    row("ckpt load, verified, read into memory" + w, c + "ckpt_load_nomap", c + "py_load",
        c + "ckpt_load_nomap", "py load / this");
    row("torch::load (LibTorch)" + w, c + "torch_load", c + "py_load", c + "torch_load",
        "py load / this");
    row("plain read" + w, c + "read", c + "py_load", c + "read", "py load / this");
    row("ckpt lazy open (directory + data.pkl)" + w, c + "ckpt_open", c + "ckpt_open",
        c + "ckpt_load", "this / ckpt load");
    row("ckpt weights only (partial, records checked)" + w, c + "ckpt_weights", c + "ckpt_weights",
        c + "ckpt_load", "this / ckpt load");
  }
  const double file_mb = file_bytes.count("ckpt_weights") ? file_bytes.at("ckpt_weights") : 0;
  std::printf(
      "\n(ratio: one time over the other, as the next column says, taken within each run: "
      "median [min-max] over the runs; 95%% CI: the distribution-free 95%% confidence interval "
      "of that median (order statistics). disk read: /proc/self/io read_bytes of the load, 0 when "
      "the file is in the page cache.)\n");
  if (asked.count("cold:ckpt_weights") && file_mb > 0) {
    std::printf(
        "ckpt weights only read %.1f%% of the %.1f MB file (%.1f MB: the records asked "
        "for, the directory and data.pkl); lazy open read %.3f MB\n",
        100.0 * median(asked.at("cold:ckpt_weights")) / file_mb, file_mb / kMB,
        median(asked.at("cold:ckpt_weights")) / kMB, median(asked.at("cold:ckpt_open")) / kMB);
  }
  std::printf("\nNoise floor (A/A rows, 95%% CI of the median within [0.9, 1.1]):\n");
  auto noise_line = [&](const char* what, const std::string& reference, const std::string& twin,
                        int runs) {
    const auto r = ratios(reference, twin);
    if (r.empty()) return;
    std::printf("- %-66s %s after %d runs: %s\n", what, interval_text(r).c_str(), runs,
                within_noise_target(r) ? "within +-10%" : "NOT within +-10%");
  };
  noise_line("plain write + fsync again", "plain_write", "plain_write#2", save_runs);
  noise_line("ckpt load again, warm", "ckpt_load", "ckpt_load#2", load_runs);
  noise_line("ckpt load again, cold", "cold:ckpt_load", "cold:ckpt_load#2", load_runs);
  noise_line("Python torch.load again, warm", "py_load", "py_load#2", load_runs);
  noise_line("Python torch.load again, cold", "cold:py_load", "cold:py_load#2", load_runs);
  std::printf("\nTargets (paired medians, with their 95%% CI):\n");
  auto target = [&](const char* what, const std::string& reference, const std::string& mode,
                    double goal, bool at_least) {
    const auto r = ratios(reference, mode);
    check_target(what, r.empty() ? 0.0 : median(r), goal, at_least, interval_text(r));
  };
  target("ckpt save throughput / plain write+fsync", "plain_write", "ckpt_save", 0.95, true);
  target("torch::save+fsync time / ckpt save time", "torch_save", "ckpt_save", 1.3, true);
  if (!options.skip_python) {
    target("Python torch.load / ckpt verified load (mmap), warm", "py_load", "ckpt_load", 2.0,
           true);
    target("Python torch.load / ckpt verified load (mmap), cold", "cold:py_load", "cold:ckpt_load",
           1.0, true);
  }
  target("ckpt weights-only time / full verified load, cold", "cold:ckpt_weights", "cold:ckpt_load",
         0.5, false);
  if (asked.count("cold:ckpt_weights") && file_mb > 0) {
    check_target("ckpt weights-only bytes read / file bytes",
                 median(asked.at("cold:ckpt_weights")) / file_mb, 0.40, false);
  }
  std::fflush(stdout);
  fs::remove_all(dir);
}

// Issue 16: the time an async save blocks the trainer, copy staged in the background or not, with
// and without compute to overlap it, each paired with a synchronous durable save of the same state
// in the same run; "sync again" is the A/A row that shows the noise floor.
void bench_staging(const Options& options) {
  const int64_t size_mb = options.staging_size_mb;
  const fs::path dir = options.dir / ("staging_" + std::to_string(size_mb));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string exe = self_exe();
  char compute[32];
  std::snprintf(compute, sizeof compute, "%g", options.compute_seconds);
  auto child = [&](const std::string& mode) {
    const auto r = spawn({exe, "--child", mode, "--size", std::to_string(size_mb), "--reps", "1",
                          "--dir", dir.string(), "--compute", compute});
    const std::string key = mode == "ckpt_async" ? "ckpt_async_blocked" : mode;
    return r.results.at(key).at(0);
  };
  const std::vector<std::string> modes{"sync", "sync again", "ckpt_async", "staged_idle",
                                       "staged_compute"};
  std::map<std::string, Paired> rows;
  for (int run = 0; run < options.staging_reps; ++run) {
    std::fprintf(stderr, "staging run %d/%d:", run + 1, options.staging_reps);
    std::map<std::string, double> v;
    for (const auto& mode : rotated(modes, run)) {
      std::fprintf(stderr, " %s", mode.c_str());
      v[mode] = child(mode.rfind("sync", 0) == 0 ? "ckpt_save" : mode);
    }
    std::fprintf(stderr, "\n");
    for (const auto& mode : modes) {
      rows[mode].values.push_back(v[mode]);
      rows[mode].ratios.push_back(v[mode] / v["sync"]);
    }
    rows["idle vs copy in save"].ratios.push_back(v["staged_idle"] / v["ckpt_async"]);
  }
  std::printf(
      "\n### Blocked time of a save, %lld MB state (module + Adam), %d paired runs, "
      "rotated order\n\n",
      static_cast<long long>(size_mb), options.staging_reps);
  std::printf("| %-58s | %9s | %-26s |\n", "mode (time the trainer waits per save)", "median",
              "/ sync save, same run");
  std::printf("|%s|%s|%s|\n", std::string(60, '-').c_str(), std::string(11, '-').c_str(),
              std::string(28, '-').c_str());
  const std::pair<const char*, std::string> labels[] = {
      {"sync", "sync durable save (reference)"},
      {"sync again", "sync durable save again (A/A: the noise floor)"},
      {"ckpt_async", "async, copy in save(): save()"},
      {"staged_idle", "async, staged in background, no compute: save()+wait_staged()"},
      {"staged_compute", "async, staged in background, " + std::string(compute) +
                             " s compute: save()+wait_staged()"}};
  for (const auto& [key, label] : labels) {
    std::printf("| %-58s | %7.4f s | %-26s |\n", label.c_str(), median(rows[key].values),
                summary(rows[key].ratios).c_str());
  }
  std::printf("\nTargets (medians of the paired ratios):\n");
  check_target("staged, compute between saves: blocked / sync durable save",
               median(rows["staged_compute"].ratios), 0.02, false);
  check_target("staged, no compute: blocked / copy-in-save async blocked (no worse)",
               median(rows["idle vs copy in save"].ratios), 1.10, false);
  std::printf("  (that last ratio per run: %s)\n",
              summary(rows["idle vs copy in save"].ratios).c_str());
  std::fflush(stdout);
  fs::remove_all(dir);
}

// What the sample trainer logs at the end (rank 0's with two ranks): seconds of train(), seconds
// blocked in checkpointing, and of those the final wait for the last save's durability.
struct TrainerRun {
  double total = 0, blocked = 0, final_wait = 0;
};

TrainerRun run_trainer(const fs::path& dir, const std::vector<std::string>& args) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string command =
      "cd '" + dir.string() + "' && '" + std::string(CKPT_BENCH_SAMPLE_TRAINER) + "'";
  for (const auto& a : args) command += " '" + a + "'";
  command += " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) die("cannot run " + command);
  std::string output;
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  const int status = ::pclose(pipe);
  if (status != 0) die("sample trainer failed: " + command + "\n" + output);
  std::istringstream lines(output);
  std::string line;
  const std::string marker = "checkpointing blocked training for ";
  while (std::getline(lines, line)) {
    const auto at = line.find(marker);
    if (at == std::string::npos) continue;
    if (line.find("rank ") != std::string::npos && line.find("rank 0]") == std::string::npos) {
      continue;
    }
    TrainerRun run;
    if (std::sscanf(line.c_str() + at + marker.size(), "%lfs of %lfs (%*f%%), %lfs", &run.blocked,
                    &run.total, &run.final_wait) == 3) {
      fs::remove_all(dir);
      return run;
    }
  }
  die("no '" + marker + "' line from: " + command + "\n" + output);
}

// Issue 16: the sample trainer with a checkpoint of ~256 MB (--hidden 4600: 21 M parameters with
// Adam's two moments) every epoch. Total time with checkpointing off, sync and async (staged in
// the background), and two ranks' blocked time per save, sync vs async; each run rotates the
// order, and every ratio is taken within one run.
void bench_trainer(const Options& options) {
  const std::string hidden = std::to_string(options.trainer_hidden);
  const std::string epochs = std::to_string(options.trainer_epochs);
  // At width 4600 one thread trains about 17 examples a second here: a subset of the digits keeps
  // an epoch to seconds, and a checkpoint every epoch then weighs more, not less, on the total.
  std::string data = CKPT_BENCH_DIGITS;
  if (options.trainer_examples > 0) {
    fs::create_directories(options.dir);
    data = (options.dir / ("digits_" + std::to_string(options.trainer_examples) + ".csv")).string();
    const std::string command = "zcat '" + std::string(CKPT_BENCH_DIGITS) + "' | head -n " +
                                std::to_string(options.trainer_examples) + " > '" + data + "'";
    if (std::system(command.c_str()) != 0) die("cannot write " + data);
  }
  // clang-format off
  const std::vector<std::string> common{
      "--data", data, "--trainer.epochs", epochs, "--model.hidden1", hidden,
      "--model.hidden2", hidden, "--chkp.save_dir", "ck", "--chkp.model_state_save_dir", ""};
  // clang-format on
  const std::vector<std::string> async{"--chkp.async", "true", "--chkp.stage_in_background",
                                       "true"};
  auto with = [&](std::vector<std::string> a, const std::vector<std::string>& more) {
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  const std::map<std::string, std::vector<std::string>> commands{
      {"off", with(common, {"--chkp.checkpoint", "false"})},
      {"off again", with(common, {"--chkp.checkpoint", "false"})},
      {"sync", common},
      {"async", with(common, async)},
      {"2 ranks sync", with(common, {"--dist.nproc", "2"})},
      {"2 ranks async", with(with(common, async), {"--dist.nproc", "2"})}};
  const std::vector<std::string> modes{"off",   "off again",    "sync",
                                       "async", "2 ranks sync", "2 ranks async"};
  std::map<std::string, Paired> total, blocked, final_wait;
  std::vector<double> dp_ratios;
  for (int run = 0; run < options.trainer_reps; ++run) {
    std::fprintf(stderr, "sample trainer run %d/%d:", run + 1, options.trainer_reps);
    std::map<std::string, TrainerRun> v;
    for (const auto& mode : rotated(modes, run)) {
      std::fprintf(stderr, " [%s]", mode.c_str());
      v[mode] = run_trainer(options.dir / "trainer", commands.at(mode));
    }
    std::fprintf(stderr, "\n");
    // Blocked per save: in save() and wait_staged(), without the one final wait at exit.
    const auto per_save = [&](const std::string& mode) {
      return (v[mode].blocked - v[mode].final_wait) / options.trainer_epochs;
    };
    for (const auto& mode : modes) {
      total[mode].values.push_back(v[mode].total);
      total[mode].ratios.push_back(v[mode].total / v["off"].total);
      blocked[mode].values.push_back(per_save(mode));
      final_wait[mode].values.push_back(v[mode].final_wait);
    }
    dp_ratios.push_back(per_save("2 ranks async") / per_save("2 ranks sync"));
  }
  std::printf(
      "\n### The sample trainer, --model.hidden1/2 %s (a checkpoint every epoch), %s "
      "epochs of %s digits, %d paired runs, rotated order\n\n",
      hidden.c_str(), epochs.c_str(),
      options.trainer_examples > 0 ? std::to_string(options.trainer_examples).c_str() : "all",
      options.trainer_reps);
  std::printf("| %-34s | %9s | %-26s | %-16s | %-10s |\n", "mode", "train()", "/ off, same run",
              "blocked per save", "final wait");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(11, '-').c_str(),
              std::string(28, '-').c_str(), std::string(18, '-').c_str(),
              std::string(12, '-').c_str());
  for (const auto& mode : modes) {
    std::printf("| %-34s | %7.2f s | %-26s | %14.4f s | %8.3f s |\n",
                (mode == "off again" ? "off again (A/A: the noise floor)" : mode).c_str(),
                median(total[mode].values),
                mode.rfind("2 ranks", 0) == 0 ? "-" : summary(total[mode].ratios).c_str(),
                median(blocked[mode].values), median(final_wait[mode].values));
  }
  std::printf(
      "\n(blocked per save: time in save() and wait_staged() per epoch's save; final wait: "
      "the trainer's wait() at the end for the last save to be durable.)\n");
  std::printf("\nTargets (medians of the paired ratios):\n");
  check_target("async total time / checkpointing off", median(total["async"].ratios), 1.05, false);
  check_target("two ranks: async blocked per save / sync blocked per save", median(dp_ratios), 0.10,
               false);
  std::printf("  (that last ratio per run: %s)\n", summary(dp_ratios).c_str());
  std::fflush(stdout);
}

// Issue 14: a save and a verified load of the same state on the same gateway, ckpt against
// boto3's upload_file/download_file (s3transfer's defaults) and `aws s3 cp` of the same bytes, in
// paired runs in rotated order; "ckpt save again" is the A/A row that shows the noise floor.
// Times are of the transfer alone for ckpt and boto3 (in-process), of the whole command for the
// AWS CLI (its start-up included, as a user waits for it).
void bench_s3(const Options& options) {
  const std::string exe = self_exe();
  const std::string url = options.s3_url;
  const fs::path dir = options.dir / "s3";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path local = dir / "model_0.pt";
  const std::string script = fs::path(CKPT_BENCH_SCRIPT).parent_path() / "s3_bench.py";
  const std::string size = std::to_string(options.s3_size_mb);
  const char* endpoint = std::getenv("AWS_ENDPOINT_URL");
  const std::string aws =
      "/usr/bin/aws" + (endpoint != nullptr ? std::string(" --endpoint-url ") + endpoint : "");
  std::map<std::string, double> extra_mb;
  auto run = [&](const std::string& mode) -> std::pair<double, double> {  // seconds, peak RSS MB
    if (mode == "ckpt save" || mode == "ckpt save again") {
      const auto r =
          spawn({exe, "--child", "s3_save", "--size", size, "--reps", "1", "--dir", dir.string()});
      extra_mb[mode] = r.results.at("s3_save_extra_mb").at(0);
      return {r.results.at("s3_save").at(0), r.peak_rss_mb};
    }
    if (mode == "ckpt load") {
      const auto r = spawn({exe, "--child", "s3_load", "--reps", "1", "--dir", dir.string()});
      return {r.results.at("s3_load").at(0), r.peak_rss_mb};
    }
    if (mode == "boto3 upload_file" || mode == "boto3 download_file") {
      const bool up = mode == "boto3 upload_file";
      const auto r =
          up ? spawn({options.python, script, "upload", local.string(), url + "/boto3.pt"})
             : spawn({options.python, script, "download", url + "/model_0.pt",
                      (dir / "boto3.pt").string()});
      return {r.results.at(up ? "boto3_upload" : "boto3_download").at(0), r.peak_rss_mb};
    }
    const bool up = mode == "aws s3 cp (up)";
    const std::string command = aws + " s3 cp --quiet " +
                                (up ? local.string() + " " + url + "/aws.pt"
                                    : url + "/model_0.pt " + (dir / "aws.pt").string());
    const auto start = Clock::now();
    if (std::system(command.c_str()) != 0) die("failed: " + command);
    return {seconds_since(start), 0};
  };
  // The bytes boto3 and the CLI upload: the file ckpt writes, downloaded once.
  run("ckpt save");
  run("boto3 download_file");
  fs::rename(dir / "boto3.pt", local);
  const std::vector<std::string> saves{"ckpt save", "ckpt save again", "boto3 upload_file",
                                       "aws s3 cp (up)"};
  const std::vector<std::string> loads{"ckpt load", "boto3 download_file", "aws s3 cp (down)"};
  std::map<std::string, Paired> rows;
  std::map<std::string, double> rss;
  std::map<std::string, std::vector<double>> extra;
  for (int r = 0; r < options.s3_reps; ++r) {
    std::fprintf(stderr, "s3 run %d/%d:", r + 1, options.s3_reps);
    std::map<std::string, double> v;
    for (const auto* group : {&saves, &loads}) {
      for (const auto& mode : rotated(*group, r)) {
        std::fprintf(stderr, " [%s]", mode.c_str());
        const auto [seconds, peak] = run(mode);
        v[mode] = seconds;
        rss[mode] = std::max(rss[mode], peak);
      }
    }
    std::fprintf(stderr, "\n");
    for (const auto& mode : saves) {
      rows[mode].values.push_back(v[mode]);
      rows[mode].ratios.push_back(v[mode] / v["ckpt save"]);
    }
    for (const auto& mode : loads) {
      rows[mode].values.push_back(v[mode]);
      rows[mode].ratios.push_back(v[mode] / v["ckpt load"]);
    }
    extra["ckpt save"].push_back(extra_mb["ckpt save"]);
  }
  const double mb = static_cast<double>(fs::file_size(local)) / kMB;
  std::printf("\n### S3: %.1f MB checkpoint (%lld MB state), %s, %d paired runs, rotated order\n\n",
              mb, static_cast<long long>(options.s3_size_mb),
              endpoint != nullptr ? endpoint : "AWS", options.s3_reps);
  std::printf("| %-26s | %9s | %8s | %-27s | %9s |\n", "mode", "median", "MB/s",
              "time / ckpt's, same run", "peak RSS");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(28, '-').c_str(), std::string(11, '-').c_str(),
              std::string(10, '-').c_str(), std::string(29, '-').c_str(),
              std::string(11, '-').c_str());
  for (const auto* group : {&saves, &loads}) {
    for (const auto& mode : *group) {
      const std::string label = mode == "ckpt save again" ? "ckpt save again (A/A)" : mode;
      const std::string peak =
          rss[mode] > 0 ? std::to_string(static_cast<int>(rss[mode])) + " MB" : "-";
      std::printf("| %-26s | %7.3f s | %8.0f | %-27s | %9s |\n", label.c_str(),
                  median(rows[mode].values), mb / median(rows[mode].values),
                  summary(rows[mode].ratios).c_str(), peak.c_str());
    }
  }
  std::printf(
      "\n(ckpt's peak RSS holds the %lld MB state it saves or loads; a save's own memory, "
      "its peak over the RSS before it: median %.0f MB, bounded by s3_concurrency + 1 "
      "parts of s3_part_size_mb.)\n\nTargets (medians of the paired ratios):\n",
      static_cast<long long>(options.s3_size_mb), median(extra["ckpt save"]));
  check_target("boto3 upload_file time / ckpt save time", median(rows["boto3 upload_file"].ratios),
               1.0, true);
  check_target("boto3 download_file time / ckpt verified load time",
               median(rows["boto3 download_file"].ratios), 1.0, true);
  std::fflush(stdout);
  fs::remove_all(dir);
}

int main(int argc, char** argv) {
  Options options;
  std::string child_mode;
  int64_t child_size = 0;
  std::vector<std::string> child_order;  // save_group's modes, in the run's order
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    } else if (arg == "--sizes") {
      options.sizes_mb = parse_list(value(), arg);
    } else if (arg == "--reps") {
      options.reps = static_cast<int>(parse_list(value(), arg).at(0));
      if (options.reps < 1) die("--reps must be >= 1");
    } else if (arg == "--max-reps") {
      options.max_reps = static_cast<int>(parse_list(value(), arg).at(0));
    } else if (arg == "--save-repeats") {
      options.save_repeats = static_cast<int>(parse_list(value(), arg).at(0));
      if (options.save_repeats < 1) die("--save-repeats must be >= 1");
    } else if (arg == "--load-rounds") {
      options.load_rounds = static_cast<int>(parse_list(value(), arg).at(0));
      if (options.load_rounds < 1) die("--load-rounds must be >= 1");
    } else if (arg == "--cold-lead-ins") {
      options.cold_lead_ins = static_cast<int>(parse_list(value(), arg).at(0));
      if (options.cold_lead_ins < 0) die("--cold-lead-ins must be >= 0");
    } else if (arg == "--dir") {
      options.dir = value();
    } else if (arg == "--python") {
      options.python = value();
    } else if (arg == "--files") {
      const std::string v = value();
      options.file_counts = v.empty() ? std::vector<int64_t>{} : parse_list(v, arg);
    } else if (arg == "--cold") {
      options.cold = true;
    } else if (arg == "--warm") {
      options.cold = false;
    } else if (arg == "--no-python") {
      options.skip_python = true;
    } else if (arg == "--staging-size") {
      options.staging_size_mb = parse_list(value(), arg).at(0);
    } else if (arg == "--staging-reps") {
      options.staging_reps = static_cast<int>(parse_list(value(), arg).at(0));
    } else if (arg == "--compute") {
      options.compute_seconds = std::stod(value());
      compute_seconds() = options.compute_seconds;
    } else if (arg == "--trainer-reps") {
      options.trainer_reps = static_cast<int>(parse_list(value(), arg).at(0));
    } else if (arg == "--hidden") {
      options.trainer_hidden = parse_list(value(), arg).at(0);
    } else if (arg == "--epochs") {
      options.trainer_epochs = static_cast<int>(parse_list(value(), arg).at(0));
      if (options.trainer_epochs < 1) die("--epochs must be >= 1");
    } else if (arg == "--examples") {
      options.trainer_examples = parse_list(value(), arg).at(0);
    } else if (arg == "--only-staging") {
      options.only_staging = true;
    } else if (arg == "--s3-url") {
      options.s3_url = value();
      ::setenv("CKPT_BENCH_S3_URL", options.s3_url.c_str(), 1);
    } else if (arg == "--s3-size") {
      options.s3_size_mb = parse_list(value(), arg).at(0);
    } else if (arg == "--s3-reps") {
      options.s3_reps = static_cast<int>(parse_list(value(), arg).at(0));
    } else if (arg == "--only-s3") {
      options.only_s3 = true;
    } else if (arg == "--child") {
      child_mode = value();
    } else if (arg == "--order") {
      std::stringstream in(value());
      for (std::string item; std::getline(in, item, ',');) child_order.push_back(item);
    } else if (arg == "--size") {
      child_size = parse_list(value(), arg).at(0);
    } else {
      die("unknown argument " + arg + " (--help lists them)");
    }
  }
  try {
    if (!child_mode.empty()) {
      return run_child(child_mode, child_size, options.reps, options.dir, options.cold,
                       options.cold ? options.cold_lead_ins : 0, child_order);
    }
    if (!options.skip_python &&
        std::system(("'" + options.python + "' -c 'import torch' 2>/dev/null").c_str()) != 0) {
      die("'" + options.python +
          "' cannot import torch: pass --python with an interpreter that does (Debian's "
          "/usr/bin/python3 with python3-torch), or --no-python");
    }
    fs::create_directories(options.dir);
    std::printf("ckpt_bench: files in %s, %ld CPUs\n", options.dir.c_str(),
                ::sysconf(_SC_NPROCESSORS_ONLN));
    if (options.only_s3 && options.s3_url.empty()) die("--only-s3 needs --s3-url");
    if (!options.only_staging && !options.only_s3) {
      for (const int64_t size : options.sizes_mb) bench_size(options, size);
      bench_latest(options);
    }
    if (!options.only_s3) {
      if (options.staging_reps > 0) bench_staging(options);
      if (options.trainer_reps > 0) bench_trainer(options);
    }
    if (!options.s3_url.empty() && options.s3_reps > 0) bench_s3(options);
    return 0;
  } catch (const std::exception& e) {
    die(e.what());
  }
}
