#pragma once

#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

namespace ckpt::detail {

/// The memory of one multipart part: `capacity` bytes mapped straight from the kernel and
/// unmapped when done. Parts are filled on one thread and freed on another; through malloc, each
/// thread's arena would keep the freed parts and the process would grow save after save. Pages
/// are only touched as bytes arrive, so a small file costs only what it holds.
class PartBuffer {
 public:
  PartBuffer() = default;
  explicit PartBuffer(std::size_t capacity) : capacity_(capacity) {
    void* memory =
        ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<char*>(memory);
  }
  PartBuffer(PartBuffer&& other) noexcept { *this = std::move(other); }
  PartBuffer& operator=(PartBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
    return *this;
  }
  PartBuffer(const PartBuffer&) = delete;
  PartBuffer& operator=(const PartBuffer&) = delete;
  ~PartBuffer() {
    if (data_ != nullptr) ::munmap(data_, capacity_);
  }

  const char* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t room() const { return capacity_ - size_; }
  /// Appends `n` <= room() bytes.
  void append(const char* bytes, std::size_t n) {
    std::memcpy(data_ + size_, bytes, n);
    size_ += n;
  }

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace ckpt::detail
