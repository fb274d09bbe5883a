#include "latest_pointer.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include <ckpt/serialization.h>
#include <spdlog/spdlog.h>

namespace ckpt::detail {
namespace {

// A pointer is one short line; anything longer is not ours.
constexpr std::size_t kMaxPointerBytes = 256;

}  // namespace

void LatestPointer::update(const std::filesystem::path& dir) {
  std::optional<CheckpointName> newest;
  for (const auto& file : storage_.list(dir, /*recursive=*/false)) {
    const auto place = names_.parse_resumable(file.path.filename().string());
    if (place && (!newest || *newest < *place)) newest = place;
  }
  if (newest) save_text_file(names_.resumable(*newest) + "\n", dir / names_.pointer(), storage_);
}

std::optional<std::filesystem::path> LatestPointer::pointed(const std::filesystem::path& dir,
                                                            const std::filesystem::path& newest) {
  const auto pointer = dir / names_.pointer();
  const auto info = storage_.stat(pointer);
  if (!info) return std::nullopt;
  std::string text;
  bool valid = !info->is_directory;
  if (valid) {
    try {
      text = read_small_file(storage_, pointer, kMaxPointerBytes);
    } catch (const CheckpointError&) {
      valid = false;  // too long or unreadable: not a pointer of ours
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  const auto name = names_.parse_resumable(text);
  if (!valid || !name || text.find('/') != std::string::npos) {
    logger()->warn(
        "latest pointer {} is not valid (expected one line naming a {}_<N>.{} file): "
        "ignoring it, scanning {}",
        pointer.string(), names_.prefix(), names_.ext(), dir.string());
    return std::nullopt;
  }
  const auto pointed = dir / text;
  const auto target = storage_.stat(pointed);
  if (!target || target->is_directory) {
    logger()->warn("latest pointer {} names {}, which does not exist: ignoring it, scanning {}",
                   pointer.string(), pointed.string(), dir.string());
    return std::nullopt;
  }
  const auto newest_name = names_.parse_resumable(newest.filename().string());
  if (newest_name && *name < *newest_name) {
    logger()->warn("latest pointer {} is stale: it names {} but {} is newer; using the newer",
                   pointer.string(), pointed.string(), newest.string());
    return std::nullopt;
  }
  logger()->debug("latest pointer {} names {}", pointer.string(), pointed.string());
  return pointed;
}

}  // namespace ckpt::detail
