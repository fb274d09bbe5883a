#include "storage/atomic_file.h"

#include "storage/temporary_name.h"

#include <ckpt/checkpoint_error.h>

namespace ckpt::detail {
namespace {

constexpr std::size_t kBufferSize = 1 << 20;

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
    : destination_(std::move(destination)) {
  guarded([&] { file_ = storage.create(destination_); });
  buffer_.reserve(kBufferSize);
}

template <class F>
void AtomicFile::guarded(F&& step) {
  try {
    step();
  } catch (const CheckpointError& e) {
    file_.reset();  // discards the write
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
  if (!file_) {
    throw CheckpointError("cannot save " + destination_.string() + ": write after failure",
                          destination_);
  }
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
  if (!file_) {
    throw CheckpointError("cannot save " + destination_.string() + ": commit after failure",
                          destination_);
  }
  flush_buffer();
  guarded([&] { file_->commit(); });
  file_.reset();
}

}  // namespace ckpt::detail
