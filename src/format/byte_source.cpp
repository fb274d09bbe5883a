#include "format/byte_source.h"

#include <ckpt/checkpoint_error.h>

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <mutex>
#include <string>

namespace ckpt::detail {
namespace {

constexpr std::size_t kAlignment = 64;
constexpr std::size_t kHugePage = 2 << 20;
constexpr uint64_t kPage = 4096;
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older glibc headers lack the name
#endif

// Reads the pages of [start, start + length) in now, as one request, rather than a page fault at
// a time (each of which reads only a small window ahead). WILLNEED first: it reads exactly this
// range ahead, in large requests, whatever readahead a page fault would do; the populate then
// waits for it and maps the pages. Kernels before 5.14 lack MADV_POPULATE_READ: then readahead is
// only started.
void read_in(char* start, std::size_t length) {
  if (length == 0) return;
  ::madvise(start, length, MADV_WILLNEED);
  ::madvise(start, length, MADV_POPULATE_READ);
}

// Reads [data, data + size) of a file mapping in now: what a reader about to check or copy all of
// it wants. The whole 2 MB pages inside the range are asked for as huge pages: where the kernel
// and file system allow it (transparent huge pages for the page cache, e.g. ext4 on Linux 6.x),
// the populate then reads them as 2 MB folios mapped whole, and the first touch of every 4 KB
// page, which costs a trap to the hypervisor on a shadow-paged VM, goes away. Measured on this
// project's VM (cold, 89 MB of weights): populate and CRC about 47 ms as 4 KB pages and 22 ms as
// 2 MB ones, the CRC alone about 23 ms and 3.5 ms. Not WILLNEED there: its readahead allocates 4 KB
// pages, which would keep the range small-paged. The edges keep the exact 4 KB read, so a small
// view (a zip directory) reads no more than before. Elsewhere the advice is refused and changes
// nothing.
//
// `exact`: read the range and nothing after it. The huge pages are then read one fault at a time
// (MADV_RANDOM: no readahead), since sequential readahead ran on past the range: the weights of a
// 16 MB checkpoint read the whole file, 16.8 MB for 5.6 MB asked. Without it (a whole-file load,
// which reads every byte anyway) readahead stays: 48 ms against 56 ms for 256 MB here.
void populate(char* data, uint64_t size, bool exact) {
  if (size == 0) return;
  const auto address = [](const char* p) { return reinterpret_cast<uintptr_t>(p); };
  char* start = data - address(data) % kPage;
  char* end = data + size;
  char* huge_begin = start + (kHugePage - address(start) % kHugePage) % kHugePage;
  char* huge_end = end - address(end) % kHugePage;
  if (huge_end <= huge_begin) {
    read_in(start, static_cast<std::size_t>(end - start));
    return;
  }
  const std::size_t huge_length = static_cast<std::size_t>(huge_end - huge_begin);
  ::madvise(huge_begin, huge_length, MADV_HUGEPAGE);  // advice: may be refused
  if (exact) ::madvise(huge_begin, huge_length, MADV_RANDOM);
  read_in(start, static_cast<std::size_t>(huge_begin - start));
  ::madvise(huge_begin, huge_length, MADV_POPULATE_READ);
  read_in(huge_end, static_cast<std::size_t>(end - huge_end));
}

// Uninitialised memory for `size` bytes whose first byte sits `lead` bytes past a 64-byte
// boundary (so bytes read from file offset `o` with lead = o % 64 keep the file's alignment).
std::shared_ptr<char> aligned_bytes(std::size_t size, std::size_t lead, const std::string& name) {
  const std::size_t total = lead + size;
  // Large buffers in transparent huge pages where the system allows it: a fresh buffer costs a
  // page fault per page, which dominates the time a large load takes.
  const std::size_t alignment = total >= kHugePage ? kHugePage : kAlignment;
  const std::size_t capacity = (total + alignment) / alignment * alignment;
  char* base = static_cast<char*>(std::aligned_alloc(alignment, capacity));
  if (base == nullptr) {
    throw CheckpointError(
        "cannot read " + name + ": out of memory for " + std::to_string(size) + " bytes", name,
        ENOMEM);
  }
  if (alignment == kHugePage) ::madvise(base, capacity, MADV_HUGEPAGE);  // advice: may fail
  std::shared_ptr<char> owner(base, &std::free);
  return std::shared_ptr<char>(owner, base + lead);
}

class MemorySource final : public ByteSource {
 public:
  MemorySource(std::shared_ptr<char> data, uint64_t size, std::string name, bool mapped)
      : ByteSource(size, std::move(name)), data_(std::move(data)), mapped_(mapped) {}
  bool in_memory() const noexcept override { return true; }

 protected:
  Bytes do_view(uint64_t offset, uint64_t size) const override {
    // A view of a mapping is about to be read whole (the directory's parse, a record's CRC):
    // read exactly it, not what a page fault's readahead around it would.
    if (mapped_) populate(data_.get() + offset, size, /*exact=*/true);
    return {std::shared_ptr<char>(data_, data_.get() + offset), static_cast<std::size_t>(size)};
  }

 private:
  std::shared_ptr<char> data_;
  bool mapped_;
};

// Reads each view from the file; keeps the longest view that reaches the end of the file, since
// a zip reader asks for the directory there first and for parts of it after.
class RangedSource final : public ByteSource {
 public:
  RangedSource(std::unique_ptr<RandomAccessFile> file, std::string name)
      : ByteSource(file->size(), std::move(name)), file_(std::move(file)) {}
  bool in_memory() const noexcept override { return false; }

 protected:
  Bytes do_view(uint64_t offset, uint64_t size) const override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (tail_.data && offset >= tail_offset_) {
        return {std::shared_ptr<char>(tail_.data, tail_.data.get() + (offset - tail_offset_)),
                static_cast<std::size_t>(size)};
      }
    }
    Bytes bytes{aligned_bytes(static_cast<std::size_t>(size), offset % kAlignment, name()),
                static_cast<std::size_t>(size)};
    if (size > 0) file_->read(offset, static_cast<std::size_t>(size), bytes.data.get());
    if (offset + size == this->size()) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!tail_.data || offset < tail_offset_) {
        tail_ = bytes;
        tail_offset_ = offset;
      }
    }
    return bytes;
  }

 private:
  std::unique_ptr<RandomAccessFile> file_;
  mutable std::mutex mutex_;
  mutable Bytes tail_;
  mutable uint64_t tail_offset_ = 0;
};

}  // namespace

std::shared_ptr<FileBuffer> read_file_buffer(const RandomAccessFile& file,
                                             const std::string& name) {
  auto buffer = std::make_shared<FileBuffer>();
  buffer->size = static_cast<std::size_t>(file.size());
  buffer->data = aligned_bytes(buffer->size, 0, name);
  file.read(0, buffer->size, buffer->data.get());
  return buffer;
}

Bytes ByteSource::view(uint64_t offset, uint64_t size) const {
  if (offset > size_ || size > size_ - offset) {
    throw CheckpointError(name_ + ": bytes " + std::to_string(offset) + " to " +
                              std::to_string(offset + size) + " lie past the end of the " +
                              std::to_string(size_) + "-byte file (truncated or damaged)",
                          name_);
  }
  if (size > 0) {
    // Merge [offset, offset + size) into the ranges seen, counting only the bytes it adds.
    std::lock_guard<std::mutex> lock(viewed_mutex_);
    uint64_t begin = offset;
    uint64_t end = offset + size;
    uint64_t overlap = 0;
    auto it = viewed_ranges_.upper_bound(begin);
    if (it != viewed_ranges_.begin() && std::prev(it)->second >= begin) --it;
    while (it != viewed_ranges_.end() && it->first <= end) {
      overlap += std::min(end, it->second) - std::max(begin, it->first);
      begin = std::min(begin, it->first);
      end = std::max(end, it->second);
      it = viewed_ranges_.erase(it);
    }
    viewed_ranges_.emplace(begin, end);
    viewed_ += size - overlap;
  }
  return do_view(offset, size);
}

std::unique_ptr<ByteSource> memory_source(std::shared_ptr<char> data, uint64_t size,
                                          std::string name) {
  return std::make_unique<MemorySource>(std::move(data), size, std::move(name),
                                        /*mapped=*/false);
}

std::unique_ptr<ByteSource> whole_file_source(std::unique_ptr<RandomAccessFile> file,
                                              std::string name) {
  const uint64_t size = file->size();
  if (auto mapping = file->map()) {
    // A whole-file load checks every byte, then hands out tensors aliasing them.
    populate(mapping.get(), size, /*exact=*/false);
    return std::make_unique<MemorySource>(std::move(mapping), size, std::move(name),
                                          /*mapped=*/false);
  }
  auto buffer = read_file_buffer(*file, name);
  return memory_source(buffer->data, size, std::move(name));
}

std::unique_ptr<ByteSource> lazy_file_source(std::unique_ptr<RandomAccessFile> file,
                                             std::string name) {
  const uint64_t size = file->size();
  if (auto mapping = file->map()) {
    // Only the views asked for are touched, each read in as it is taken. (Not MADV_RANDOM: with
    // it the populate of a large record read page by page, 171 MB/s here instead of disk speed.)
    return std::make_unique<MemorySource>(std::move(mapping), size, std::move(name),
                                          /*mapped=*/true);
  }
  return std::make_unique<RangedSource>(std::move(file), std::move(name));
}

}  // namespace ckpt::detail
