// libFuzzer target for ckpt's loader: zip parsing, format checks and the unpickler, without
// checksum verification (which would reject almost every mutation before the parsers run), on
// both paths a file takes: whole in memory (load_ivalue_file) and lazily, range by range
// (CheckpointReader: the outline, then each top-level key's subtree with only its records).
// Any exception other than CheckpointError, any crash, hang or sanitizer report is a bug.
#include <ckpt/checkpoint_error.h>

#include "format/archive.h"
#include "format/byte_source.h"
#include "format/zip.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace {

// The input as a file that can only be read range by range, as an object store's is.
class RangedInput final : public ckpt::RandomAccessFile {
 public:
  RangedInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, std::size_t size, void* out) const override {
    if (offset > size_ || size > size_ - offset) {
      throw ckpt::CheckpointError("fuzz-input: read past the end");
    }
    if (size > 0) std::memcpy(out, data_ + offset, size);
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

void load_lazily(const uint8_t* data, size_t size) {
  using ckpt::detail::Archive;
  std::shared_ptr<const ckpt::detail::ByteSource> source =
      ckpt::detail::lazy_file_source(std::make_unique<RangedInput>(data, size), "fuzz-input");
  const Archive archive(source, Archive::Check::none);
  const c10::IValue outline = archive.outline("");
  if (!outline.isGenericDict()) return;
  int keys = 0;
  for (const auto& item : outline.toGenericDict()) {
    if (!item.key().isString() || ++keys > 8) continue;
    archive.load(item.key().toStringRef(), /*check_records=*/false);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto buffer = std::make_shared<ckpt::detail::FileBuffer>();
  buffer->size = size;
  buffer->data = std::shared_ptr<char>(
      static_cast<char*>(std::aligned_alloc(64, (size + 64) / 64 * 64)), &std::free);
  if (size > 0) std::memcpy(buffer->data.get(), data, size);
  try {
    ckpt::detail::load_ivalue_buffer(buffer, "fuzz-input", /*verify=*/false);
  } catch (const ckpt::CheckpointError&) {
  }
  try {
    load_lazily(data, size);
  } catch (const ckpt::CheckpointError&) {
  }
  return 0;
}
