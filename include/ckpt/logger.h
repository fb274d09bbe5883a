#pragma once

#include <memory>
#include <string>

namespace spdlog {
class logger;
}  // namespace spdlog

namespace ckpt {

/// The name of the spdlog logger ckpt logs through.
inline constexpr const char* kLoggerName = "ckpt";

/// ckpt's logger: the spdlog logger registered as "ckpt" if the application registered one (to
/// choose its sinks and level), otherwise one created on first use that writes to the sinks of
/// spdlog's default logger. ckpt never configures sinks itself.
std::shared_ptr<spdlog::logger> logger();

/// Sets the level of ckpt's logger from a name: trace, debug, info, warning (or warn), error,
/// critical, off; case-insensitive. Throws CheckpointError naming the value otherwise.
void set_log_level(const std::string& level);

}  // namespace ckpt
