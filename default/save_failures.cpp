#include "save_failures.h"

#include <ckpt/logger.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

namespace ckpt::detail {
namespace {

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", seconds);
  return text;
}

}  // namespace

SaveFailures::SaveFailures(bool keep_going, int64_t max_in_a_row, double max_unsaved_seconds)
    : keep_going_(keep_going),
      max_in_a_row_(max_in_a_row),
      max_unsaved_seconds_(max_unsaved_seconds) {}

void SaveFailures::landed(const std::filesystem::path& path, bool resumable) {
  std::lock_guard<std::mutex> lock(mutex_);
  health_.failures_in_a_row = 0;
  if (!resumable) return;
  const auto now = Clock::now();
  health_.longest_unsaved_seconds =
      std::max(health_.longest_unsaved_seconds,
               std::chrono::duration<double>(now - durable_since_).count());
  durable_since_ = now;
  health_.last_durable = path;
}

std::string SaveFailures::last_durable_text() const {
  return health_.last_durable ? health_.last_durable->string()
                              : std::string("none yet in this run");
}

void SaveFailures::failed(const std::string& what, const CheckpointError& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++health_.failed_saves;
  ++health_.failures_in_a_row;
  health_.last_failure = error.what();
  const double unsaved = std::chrono::duration<double>(Clock::now() - durable_since_).count();
  const std::string last = "the last durable checkpoint is " + last_durable_text();
  if (!keep_going_) {
    throw CheckpointError(std::string(error.what()) + " (on_save_failure stop; " + last + ")",
                          error.path(), error.error_number());
  }
  if (health_.failures_in_a_row >= max_in_a_row_) {
    throw CheckpointError(
        "stopping training: " + std::to_string(health_.failures_in_a_row) +
            " saves failed in a row (max_save_failures " + std::to_string(max_in_a_row_) + "); " +
            last + "; the latest failure: " + what + ": " + error.what(),
        error.path(), error.error_number());
  }
  if (max_unsaved_seconds_ > 0 && unsaved >= max_unsaved_seconds_) {
    throw CheckpointError("stopping training: no checkpoint has been durable for " +
                              seconds_text(unsaved) + " (max_unsaved_seconds " +
                              seconds_text(max_unsaved_seconds_) + "); " + last +
                              "; the latest failure: " + what + ": " + error.what(),
                          error.path(), error.error_number());
  }
  logger()->error(
      "{} failed ({} of max_save_failures {} in a row; {} without a durable checkpoint); "
      "training goes on and the next save tries again; {}: {}",
      what, health_.failures_in_a_row, max_in_a_row_, seconds_text(unsaved), last, error.what());
}

bool SaveFailures::failing() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return health_.failures_in_a_row > 0;
}

SaveHealth SaveFailures::health() const {
  std::lock_guard<std::mutex> lock(mutex_);
  SaveHealth health = health_;
  health.longest_unsaved_seconds =
      std::max(health.longest_unsaved_seconds,
               std::chrono::duration<double>(Clock::now() - durable_since_).count());
  return health;
}

}  // namespace ckpt::detail
