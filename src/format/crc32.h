#pragma once

#include <cstddef>
#include <cstdint>

namespace ckpt::detail {

/// CRC-32 (IEEE, as zip uses it), continuing from `crc` (0 to start). ISA-L's folded
/// PCLMUL implementation.
uint32_t crc32(uint32_t crc, const void* data, std::size_t size);

}  // namespace ckpt::detail
