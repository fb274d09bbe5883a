#pragma once

// A device for the tests, registered through LibTorch's PrivateUse1 dispatch key ("open
// registration", as PyTorch's own test/cpp_extensions/open_registration_extension.cpp does), so
// that every device path of ckpt runs on machines without a GPU, against every LibTorch version.
//
// What it has, as a CUDA device has:
//   - its own allocator (host memory underneath, which ckpt never touches directly: it reaches
//     the bytes only through copies, as it must for GPU memory);
//   - two devices, privateuseone:0 and privateuseone:1, and a device guard;
//   - one stream per process that runs the device's work in order on a thread of its own, and
//     events recorded on it. A copy to the host with non_blocking=true returns at once and runs
//     later on the stream (after the configured latency); everything else waits for its turn, so
//     work is ordered as on a CUDA stream;
//   - the ATen kernels for allocation, copies, fill_ and views; every other operator runs on the
//     CPU through LibTorch's CPU fallback (slow, but enough to train the sample trainer's model);
//   - counters of the bytes copied each way.
// What it cannot prove: anything about a real GPU's driver, pinned memory, DMA engines or
// memory sizes (scripts/gpu-check.sh runs the device suites on one).
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>

namespace ckpt::test {

inline constexpr int kTestDeviceCount = 2;

/// privateuseone:index.
c10::Device test_device(int index = 0);

struct TestDeviceCounters {
  uint64_t host_to_device_bytes = 0;
  uint64_t device_to_host_bytes = 0;
  uint64_t device_to_device_bytes = 0;
  uint64_t async_copies = 0;  // device-to-host copies that ran on the stream after returning
};
TestDeviceCounters test_device_counters();
void reset_test_device_counters();

/// How long each asynchronous copy waits on the stream before it copies: long enough, and a
/// reader that does not wait for the copy's event reads bytes the copy has not written yet.
void set_test_device_copy_latency(std::chrono::microseconds latency);

}  // namespace ckpt::test
