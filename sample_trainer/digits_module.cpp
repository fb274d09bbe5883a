#include <sample_trainer/digits_module.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sample_trainer {
namespace {

constexpr int64_t kPixels = 64;
constexpr int64_t kClasses = 10;

// Parses one CSV line into 65 integers; returns an error description or "" on success.
std::string parse_line(const char* line, std::vector<int64_t>& values) {
  values.clear();
  const char* p = line;
  while (true) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(p, &end, 10);
    if (end == p || errno != 0)
      return "expected an integer at column " + std::to_string(values.size() + 1);
    values.push_back(v);
    p = end;
    while (*p == ' ' || *p == '\t') ++p;
    if (*p == ',') {
      ++p;
      continue;
    }
    if (*p == '\0' || *p == '\n' || *p == '\r') break;
    return "unexpected character '" + std::string(1, *p) + "' at column " +
           std::to_string(values.size());
  }
  if (static_cast<int64_t>(values.size()) != kPixels + 1) {
    return "expected " + std::to_string(kPixels + 1) + " values, got " +
           std::to_string(values.size());
  }
  for (int64_t i = 0; i < kPixels; ++i) {
    if (values[i] < 0 || values[i] > 16) {
      return "pixel " + std::to_string(i) + " is " + std::to_string(values[i]) + ", not in 0..16";
    }
  }
  if (values[kPixels] < 0 || values[kPixels] >= kClasses) {
    return "label " + std::to_string(values[kPixels]) + " is not in 0..9";
  }
  return "";
}

}  // namespace

std::filesystem::path default_digits_path() { return SAMPLE_TRAINER_DEFAULT_DATA; }

DigitsData load_digits(const std::filesystem::path& path) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  if (!file) {
    throw std::runtime_error("cannot open data file " + path.string() + ": " +
                             std::strerror(errno ? errno : ENOENT));
  }
  std::vector<float> pixels;
  std::vector<int64_t> labels;
  std::vector<int64_t> values;
  char line[4096];
  int64_t line_number = 0;
  while (gzgets(file.get(), line, sizeof line) != nullptr) {
    ++line_number;
    if (line[0] == '\n' || line[0] == '\r' || line[0] == '\0') continue;
    const std::string error = parse_line(line, values);
    if (!error.empty()) {
      throw std::runtime_error("malformed data file " + path.string() + " line " +
                               std::to_string(line_number) + ": " + error);
    }
    for (int64_t i = 0; i < kPixels; ++i) pixels.push_back(static_cast<float>(values[i]) / 16.0f);
    labels.push_back(values[kPixels]);
  }
  int error_number = 0;
  const char* message = gzerror(file.get(), &error_number);
  if (error_number != Z_OK && error_number != Z_STREAM_END) {
    throw std::runtime_error("cannot read data file " + path.string() + ": " + message);
  }
  if (labels.empty()) throw std::runtime_error("data file " + path.string() + " has no examples");
  const auto n = static_cast<int64_t>(labels.size());
  DigitsData data;
  data.images = torch::from_blob(pixels.data(), {n, kPixels}, torch::kFloat).clone();
  data.labels = torch::from_blob(labels.data(), {n}, torch::kLong).clone();
  return data;
}

DigitsSplit split_digits(int64_t size, uint64_t split_seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(split_seed);
  const at::Tensor order = at::randperm(size, generator, at::kLong);
  const int64_t val = size / 5;
  return {order.slice(0, val), order.slice(0, 0, val)};
}

torch::nn::Sequential make_digits_mlp(const DigitsModuleOptions& options) {
  namespace nn = torch::nn;
  return nn::Sequential(nn::Linear(kPixels, options.hidden1), nn::ReLU(),
                        nn::Dropout(options.dropout), nn::Linear(options.hidden1, options.hidden2),
                        nn::ReLU(), nn::Dropout(options.dropout),
                        nn::Linear(options.hidden2, kClasses));
}

DigitsModule::DigitsModule(DigitsData data, DigitsModuleOptions options)
    : data_(std::move(data)),
      options_(options),
      split_(split_digits(data_.labels.size(0), options.split_seed)),
      net_(make_digits_mlp(options)) {}

void DigitsModule::to(c10::Device device) {
  net_->to(device);
  data_.images = data_.images.to(device);
  data_.labels = data_.labels.to(device);
}

Batch DigitsModule::get_train_batch(const at::Tensor& indices) const {
  const at::Tensor rows = split_.train_indices.index_select(0, indices).to(data_.images.device());
  return {data_.images.index_select(0, rows), data_.labels.index_select(0, rows)};
}

Batch DigitsModule::get_val_batch(const at::Tensor& indices) const {
  const at::Tensor rows = split_.val_indices.index_select(0, indices).to(data_.images.device());
  return {data_.images.index_select(0, rows), data_.labels.index_select(0, rows)};
}

at::Tensor DigitsModule::train_step(const Batch& batch) {
  return torch::nn::functional::cross_entropy(net_->forward(batch.inputs), batch.targets);
}

ValOutput DigitsModule::val_step(const Batch& batch) {
  const at::Tensor logits = net_->forward(batch.inputs);
  ValOutput out;
  out.loss_sum = torch::nn::functional::cross_entropy(
                     logits, batch.targets,
                     torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                     .item<double>();
  out.correct = logits.argmax(1).eq(batch.targets).sum().item<int64_t>();
  out.examples = batch.targets.size(0);
  return out;
}

OptimizersSchedulers DigitsModule::get_optimizers_schedulers(const OptimizerPlan& plan) {
  auto adam =
      std::make_shared<torch::optim::Adam>(net_->parameters(), torch::optim::AdamOptions(plan.lr));
  // The schedule depends on the epoch length only, not on the run's total epochs, so a run cut in
  // two and resumed follows the same schedule as one that never stopped.
  const int64_t step_size = std::max<int64_t>(1, options_.lr_step_epochs * plan.steps_per_epoch);
  auto scheduler = std::make_shared<StepLR>(adam, step_size, options_.lr_gamma);
  return {{adam}, {scheduler}};
}

}  // namespace sample_trainer
