// libFuzzer target for ckpt's loader: zip parsing, format checks and the unpickler, without
// checksum verification (which would reject almost every mutation before the parsers run).
// Any exception other than CheckpointError, any crash, hang or sanitizer report is a bug.
#include <ckpt/checkpoint_error.h>

#include "detail/zip.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto buffer = std::make_shared<ckpt::detail::FileBuffer>();
  buffer->size = size;
  buffer->data = std::unique_ptr<char, void (*)(void*)>(
      static_cast<char*>(std::aligned_alloc(64, (size + 64) / 64 * 64)), &std::free);
  if (size > 0) std::memcpy(buffer->data.get(), data, size);
  try {
    ckpt::detail::load_ivalue_buffer(buffer, "fuzz-input", /*verify=*/false);
  } catch (const ckpt::CheckpointError&) {
  }
  return 0;
}
