// sample_trainer: trains an MLP on the 8x8 digits, checkpointing every epoch through ckpt's
// DefaultCheckpointer, resuming from --chkp.load_dir, and exporting the final weights.
//
// Exit codes: 0 done, 2 bad arguments (nothing written or deleted), 1 failure, 3 stopped by
// SIGTERM/SIGINT after saving the position (with --chkp.save_on_signal, the default).

#include <sample_trainer/digits_module.h>
#include <sample_trainer/distributed.h>
#include <sample_trainer/distributed_data_parallel.h>
#include <sample_trainer/single_process.h>
#include <sample_trainer/trainer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/device.h>
#include <ckpt/distributed_checkpointer.h>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/program_options.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace sample_trainer;

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitStopped = 3;  // stopped by SIGTERM/SIGINT after saving the position

// A bad argument found by main itself; the message names the flag or path.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One line on stderr in one write(2), so that the lines of ranks sharing a stderr never mix.
void print_line(const std::string& line) {
  const std::string text = line + "\n";
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(STDERR_FILENO, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    written += static_cast<size_t>(n);
  }
}

int fail(int code, std::string message) {
  // One line, whatever the exception carried.
  const auto newline = message.find('\n');
  if (newline != std::string::npos) message.resize(newline);
  print_line("sample_trainer: error: " + message);
  return code;
}

std::string what_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

// Validation messages read "invalid <field> ...": name the flag the field came from.
std::string with_flag(const std::string& message, const std::string& prefix,
                      const po::options_description& desc) {
  const std::string lead = "invalid ";
  if (message.compare(0, lead.size(), lead) != 0) return message;
  const auto end = message.find(' ', lead.size());
  const std::string flag = prefix + "." + message.substr(lead.size(), end - lead.size());
  if (desc.find_nothrow(flag, /*approx=*/false) == nullptr) return message;
  return message + " (--" + flag + ")";
}

// Everything about the arguments that can be checked without side effects, so that a bad argument
// fails before the checkpointer deletes or writes anything.
void validate_arguments(const TrainerArguments& args, const po::options_description& desc) {
  try {
    args.validate();
  } catch (const std::invalid_argument& e) {
    throw UsageError(with_flag(e.what(), "trainer", desc));
  }
  const ckpt::DefaultCheckpointerArguments& chkp = args.checkpointer_args;
  try {
    chkp.validate();
  } catch (const ckpt::CheckpointError& e) {
    throw UsageError(with_flag(e.what(), "chkp", desc));
  }
  if (chkp.save_top_k > 0) {
    const auto& names = Trainer::metric_names();
    if (std::find(names.begin(), names.end(), chkp.monitor) == names.end()) {
      std::string list;
      for (const auto& name : names) list += (list.empty() ? "" : ", ") + name;
      throw UsageError("invalid monitor '" + chkp.monitor + "': the sample trainer reports " +
                       list + " (--chkp.monitor)");
    }
  }
  // validate() has refused a load_filename without load_dir or naming no file.
  std::error_code ec;
  if (chkp.load_dir && fs::exists(*chkp.load_dir, ec) && !fs::is_directory(*chkp.load_dir, ec)) {
    throw UsageError("load_dir " + chkp.load_dir->string() +
                     " is not a directory (--chkp.load_dir)");
  }
}

void configure_logging() {
  auto sink = std::make_shared<spdlog::sinks::stdout_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("sample_trainer", sink);
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%l] %v");
  // ckpt's logger copies the default logger's sinks when first used, so this must come first.
  spdlog::set_default_logger(logger);
}

// Redraws one line on stderr after every batch; cleared at the end of the epoch so that the epoch's
// log line starts on a clean line.
ProgressCallback progress_bar() {
  return [](int64_t batch, int64_t batches, double loss) {
    constexpr int kWidth = 30;
    if (batch >= batches) {
      std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
      return;
    }
    const int filled = static_cast<int>(kWidth * batch / batches);
    std::string bar(filled, '=');
    if (filled < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "\r[%s] %lld/%lld loss=%.4f", bar.c_str(), static_cast<long long>(batch),
                 static_cast<long long>(batches), loss);
    std::fflush(stderr);
  };
}

// What a rank needs beyond the single-process program: its process group, the data-parallel
// backend, and a checkpointer that lets rank 0 alone touch the files.
struct Distributed {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::shared_ptr<DistributedDataParallel> backend;
  std::shared_ptr<ckpt::DistributedCheckpointer> checkpointer;
};

Distributed join(const DistArguments& dist, const TrainerArguments& args) {
  Distributed d;
  d.group = init_process_group(dist);
  d.backend = std::make_shared<DistributedDataParallel>(d.group);
  ckpt::DistributedCheckpointerOptions options;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(dist.timeout * 1000));
  options.timeout_name = "--dist.timeout";
  d.checkpointer = std::make_shared<ckpt::DistributedCheckpointer>(
      d.group,
      [&args] { return std::make_shared<ckpt::DefaultCheckpointer>(args.checkpointer_args); },
      options);
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  configure_logging();

  TrainerArguments args;
  DistArguments dist;
  std::string data_path;
  DigitsModuleOptions model_options;
  po::options_description general("General options");
  general.add_options()("help,h", "show this help and exit")(
      "config", po::value<std::string>(),
      "INI file with the options below: top-level `data = ...`, sections [model], [trainer], "
      "[chkp] and [dist]; "
      "the command line overrides it");
  po::options_description file_options;
  po::options_description data("Data");
  data.add_options()(
      "data", po::value<std::string>(&data_path)->default_value(default_digits_path().string()),
      "digits CSV, gzip or plain: 64 pixels 0..16 then the label, per line");
  po::options_description model("Model (an MLP: 64 -> hidden1 -> hidden2 -> 10)");
  model.add_options()(
      "model.hidden1",
      po::value<int64_t>(&model_options.hidden1)->default_value(model_options.hidden1),
      "width of the first hidden layer (e.g. 4600 with hidden2 4600: a ~250 MB checkpoint)")(
      "model.hidden2",
      po::value<int64_t>(&model_options.hidden2)->default_value(model_options.hidden2),
      "width of the second hidden layer");
  file_options.add(data)
      .add(model)
      .add(trainer_options(args))
      .add(ckpt::default_checkpointer_options(args.checkpointer_args))
      .add(dist_options(dist));
  po::options_description command_line;
  command_line.add(general).add(file_options);

  DigitsData digits;
  try {
    po::variables_map vm;
    // Command line first: po::store keeps the first value it sees, so it beats the config file.
    // An empty positional description makes a stray word an error instead of being ignored.
    const po::positional_options_description no_positional;
    po::store(
        po::command_line_parser(argc, argv).options(command_line).positional(no_positional).run(),
        vm);
    if (vm.count("help")) {
      std::cout
          << "Usage: sample_trainer [options]\n\n"
             "Trains an MLP on the 8x8 digits, saving a checkpoint every epoch and the final\n"
             "weights; resumes from --chkp.load_dir. Precedence: defaults < --config file <\n"
             "command line.\n"
          << command_line << std::endl;
      return 0;
    }
    if (vm.count("config")) {
      const std::string config = vm["config"].as<std::string>();
      std::ifstream in(config);
      if (!in) throw UsageError("cannot read --config file " + config);
      try {
        po::store(po::parse_config_file(in, file_options), vm);
      } catch (const po::error& e) {
        throw UsageError(std::string(e.what()) + " in --config file " + config);
      }
    }
    po::notify(vm);
    validate_arguments(args, file_options);
    for (const auto& [flag, width] : {std::pair{"--model.hidden1", model_options.hidden1},
                                      std::pair{"--model.hidden2", model_options.hidden2}}) {
      if (width < 1) {
        throw UsageError("invalid width " + std::to_string(width) + ": must be >= 1 (" + flag +
                         ")");
      }
    }
    try {
      dist.resolve_environment();
      dist.validate();
    } catch (const std::invalid_argument& e) {
      throw UsageError(with_flag(e.what(), "dist", file_options));
    }
    if (dist.distributed() && ckpt::existing_device(args.device) != c10::Device(c10::kCPU)) {
      // Gloo could reduce CUDA tensors, but that path is not built or tested here.
      throw UsageError("invalid device '" + args.device + "': the data-parallel backend " +
                       "averages gradients over Gloo on the CPU; use cpu with --dist " +
                       "(--trainer.device)");
    }
    try {
      digits = load_digits(data_path);
    } catch (const std::exception& e) {
      throw UsageError(std::string(e.what()) + " (--data)");
    }
  } catch (const po::error& e) {
    return fail(kExitUsage, e.what());
  } catch (const UsageError& e) {
    return fail(kExitUsage, e.what());
  } catch (const std::exception& e) {
    return fail(kExitUsage, what_of(e));
  }

  if (dist.nproc > 0) {
    // The ranks report their own errors; the launcher gives them the timeout to do so.
    return launch(dist, without_nproc(argc, argv), dist.timeout + 5);
  }
  if (dist.distributed()) {
    spdlog::default_logger()->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n rank " +
                                          std::to_string(*dist.rank) + "] [%l] %v");
  }

  Distributed distributed;
  try {
    // Bitwise reproducible across processes: one intra-op thread, everything seeded.
    at::set_num_threads(1);
    at::manual_seed(static_cast<uint64_t>(args.seed));
    const int64_t examples = digits.labels.size(0);
    auto module = std::make_shared<DigitsModule>(std::move(digits), model_options);
    spdlog::info(
        "data {}: {} examples, {} train / {} validation; epochs={} batch_size={} lr={} "
        "seed={}",
        data_path, examples, module->train_size(), module->val_size(), args.epochs, args.batch_size,
        args.lr, args.seed);
    std::shared_ptr<TrainerBackend> backend = std::make_shared<SingleProcess>();
    std::shared_ptr<ckpt::AbstractCheckpointer> checkpointer;  // the Trainer's default
    if (dist.distributed()) {
      distributed = join(dist, args);
      backend = distributed.backend;
      checkpointer = distributed.checkpointer;
    }
    Trainer trainer(backend, module, args, checkpointer);
    const bool draw = isatty(STDERR_FILENO) && dist.rank.value_or(0) == 0;
    const ProgressCallback progress = draw ? progress_bar() : ProgressCallback{};
    std::function<bool()> stop_requested = args.checkpointer_args.save_on_signal
                                               ? install_stop_signal_handlers()
                                               : std::function<bool()>{};
    if (distributed.backend) {
      // A signal may reach only some ranks, or reach them at different steps: all stop together.
      stop_requested = [local = stop_requested, ddp = distributed.backend] {
        return ddp->any_rank(local && local());
      };
    }
    const TrainResult result = trainer.train(progress, stop_requested);
    if (result.stopped) {
      print_line("sample_trainer: stopped by " + std::string(strsignal(stop_signal())) +
                 " after step " + std::to_string(result.global_step) +
                 "; resume with --chkp.load_dir " + args.checkpointer_args.save_dir.string());
      return kExitStopped;
    }
    return 0;
  } catch (const std::exception& e) {
    std::string message = what_of(e);
    if (dist.distributed() && message.rfind("rank ", 0) != 0) {
      message = "rank " + std::to_string(*dist.rank) + ": " + message;
    }
    const int code = fail(kExitFailure, message);
    if (distributed.group) {
      // The process group's threads may still wait on peers that are gone; don't join them.
      spdlog::default_logger()->flush();
      std::fflush(nullptr);
      std::_Exit(code);
    }
    return code;
  }
}
