#pragma once

// Copies between host memory and a device's (CUDA, or any device registered with LibTorch): the
// file code reads and writes host bytes only, and these move them across, a piece at a time on
// the way out (no second full host copy of a device-resident state) and once per storage on the
// way in (views keep sharing).
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <c10/core/Storage.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ckpt::detail {

/// The most host memory a synchronous save holds to copy device storages out: one piece.
inline constexpr std::size_t kDevicePieceBytes = 16 << 20;

/// Hands the bytes of `storage` to `sink`: a host storage's memory as it is, a device storage's
/// copied into `buffer` one piece at a time (the buffer is grown once, to at most
/// kDevicePieceBytes, and reused for every piece and every storage it is passed with).
void for_each_host_piece(const c10::Storage& storage, std::vector<char>& buffer,
                         const std::function<void(const void*, std::size_t)>& sink);
/// The same for the bytes of a contiguous tensor (its part of its storage).
void for_each_host_piece(const at::Tensor& contiguous, std::vector<char>& buffer,
                         const std::function<void(const void*, std::size_t)>& sink);

/// A 1-D byte tensor over [offset, offset + size) of `storage`, on the storage's device: what
/// copies to and from the device go through. No kernel runs to make it.
at::Tensor byte_view(const c10::Storage& storage, uint64_t offset, uint64_t size);

/// `value` with every tensor moved to `device`: each storage copied there once, every tensor on
/// it rebuilt with its offset, sizes, strides and requires_grad, so views keep sharing. Tensors
/// already on `device` are kept as they are (so a load's host tensors stay when it is the CPU).
c10::IValue to_device(const c10::IValue& value, c10::Device device);

/// The location torch.save records for a storage, "cpu", "cuda:0", ...: for a host copy made by
/// the background stager, the device its bytes came from.
std::string storage_location(const c10::Storage& storage);

/// A DataPtr to host memory `data`, not owned, that remembers `origin`, the device its bytes were
/// copied from, for storage_location().
c10::DataPtr host_copy_data_ptr(void* data, c10::Device origin);

/// Throws CheckpointError unless `device` exists in this process: LibTorch has its device type
/// (the CUDA libraries are loaded, the device is registered) and its index is below the count.
/// The message starts with `what` (a flag, a function) and names the device.
void check_device_exists(c10::Device device, const std::string& what);

/// `text` ("cpu", "cuda", "cuda:1", "privateuseone:0", ...) as a device that exists (an index
/// left out is 0); throws CheckpointError naming `what` and the text otherwise.
c10::Device parse_device(const std::string& text, const std::string& what);

}  // namespace ckpt::detail
