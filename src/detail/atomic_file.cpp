#include "detail/atomic_file.h"

#include <ckpt/checkpoint_error.h>

namespace ckpt::detail {
namespace {

constexpr std::size_t kBufferSize = 1 << 20;

std::filesystem::path directory_of(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

}  // namespace

std::string temp_target_name(const std::string& filename) {
  const auto marker = filename.rfind(kTempMarker);
  if (filename.size() < 2 || filename[0] != '.' || marker == std::string::npos ||
      filename.size() - marker != std::string(kTempMarker).size() + 6) {
    return {};
  }
  return filename.substr(1, marker - 1);
}

AtomicFile::AtomicFile(Storage& storage, std::filesystem::path destination)
    : storage_(storage), destination_(std::move(destination)) {
  guarded([&] {
    file_ = storage_.create_unique(directory_of(destination_),
                                   "." + destination_.filename().string() + kTempMarker,
                                   &temp_path_);
  });
  buffer_.reserve(kBufferSize);
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  file_.reset();
  if (!temp_path_.empty()) {
    try {
      storage_.remove(temp_path_);
    } catch (...) {
      // Best effort: the temporary is recognisably named and removed at the next start.
    }
    temp_path_.clear();
  }
}

template <class F>
void AtomicFile::guarded(F&& step) {
  try {
    step();
  } catch (const CheckpointError& e) {
    discard();
    throw CheckpointError("cannot save " + destination_.string() + ": " + e.what(), destination_,
                          e.error_number());
  }
}

void AtomicFile::flush_buffer() {
  if (buffer_.empty()) return;
  guarded([&] { file_->append(buffer_.data(), buffer_.size()); });
  buffer_.clear();
}

void AtomicFile::write(const void* data, std::size_t size) {
  if (!file_) throw CheckpointError("cannot save " + destination_.string() + ": write after failure", destination_);
  const char* bytes = static_cast<const char*>(data);
  bytes_ += size;
  if (buffer_.size() + size <= kBufferSize) {
    buffer_.append(bytes, size);
    return;
  }
  flush_buffer();
  if (size < kBufferSize) {
    buffer_.append(bytes, size);
  } else {
    guarded([&] { file_->append(bytes, size); });  // large tensor data straight from its memory
  }
}

void AtomicFile::commit() {
  flush_buffer();
  guarded([&] {
    file_->sync();
    file_->close();
    storage_.rename(temp_path_, destination_);
  });
  committed_ = true;
  file_.reset();
  // The new file is complete under its name; only its durability is pending.
  try {
    storage_.sync_directory(directory_of(destination_));
  } catch (const CheckpointError& e) {
    throw CheckpointError("cannot save " + destination_.string() + ": " + e.what(), destination_,
                          e.error_number());
  }
}

}  // namespace ckpt::detail
