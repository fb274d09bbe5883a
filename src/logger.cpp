#include <ckpt/logger.h>

#include <ckpt/checkpoint_error.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <mutex>

namespace ckpt {

std::shared_ptr<spdlog::logger> logger() {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto existing = spdlog::get(kLoggerName)) return existing;
  auto default_logger = spdlog::default_logger();
  auto created = std::make_shared<spdlog::logger>(kLoggerName, default_logger->sinks().begin(),
                                                  default_logger->sinks().end());
  created->set_level(spdlog::level::info);
  spdlog::register_logger(created);
  return created;
}

void set_log_level(const std::string& level) {
  std::string name = level;
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (name == "warning") name = "warn";
  if (name == "error") name = "err";
  auto parsed = spdlog::level::from_str(name);
  // from_str maps unknown names to off; accept "off" only when asked for.
  if (parsed == spdlog::level::off && name != "off") {
    throw CheckpointError("invalid log_level '" + level +
                          "' (expected trace, debug, info, warning, error, critical or off)");
  }
  logger()->set_level(parsed);
}

}  // namespace ckpt
