#pragma once

// Devices: ckpt saves tensors from any device LibTorch has (the CPU, CUDA, or one registered
// through PrivateUse1) and loads them onto the CPU or any of them ("map_location").
#include <ckpt/checkpoint.h>
#include <ckpt/state_dict.h>

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <string>

namespace ckpt {

/// `text` ("cpu", "cuda", "cuda:1", ...) as a device that exists in this process: LibTorch has
/// its type (for CUDA, the program loaded LibTorch's CUDA libraries) and its index is below the
/// number of such devices. An index left out means 0. Throws CheckpointError starting with
/// `what` (a flag, e.g. "--chkp.map_location") and naming the device otherwise.
c10::Device existing_device(const std::string& text, const std::string& what = "device");

/// `value` with every tensor on `device`, as torch.load's map_location: each storage is copied
/// there once, so views and shared storages keep sharing; offsets, sizes, strides and
/// requires_grad are kept. Tensors already there are kept as they are. Throws CheckpointError
/// naming the device if it does not exist or a copy fails.
c10::IValue to_device(const c10::IValue& value, c10::Device device);
StateDict to_device(const StateDict& state, c10::Device device);
/// All six parts together, so storages shared between parts stay shared.
Checkpoint to_device(const Checkpoint& checkpoint, c10::Device device);

}  // namespace ckpt
