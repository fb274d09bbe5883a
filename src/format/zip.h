#pragma once

#include <ckpt/storage.h>

#include "format/byte_source.h"
#include "format/crc32.h"

#include <ATen/core/ivalue.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ckpt::detail {

/// The zip comment ckpt writes: "ckpt-crc32:" followed by 8 hex digits, the CRC-32 of every byte
/// of the file before the comment, so a flipped byte anywhere is detected.
inline constexpr const char* kChecksumCommentPrefix = "ckpt-crc32:";

/// Writes the zip container PyTorch uses (stored entries under `<archive>/`, data aligned to 64
/// bytes), streaming every byte to `sink` exactly once: record data goes straight from the
/// caller's memory. CRCs are computed as the data passes (data descriptors carry them), zip64
/// records are used where sizes or offsets need them, and finish() appends the whole-file checksum.
class ZipWriter {
 public:
  using Sink = std::function<void(const void* data, std::size_t size)>;
  explicit ZipWriter(Sink sink, std::string archive_name = "archive");

  void write_record(const std::string& name, const void* data, std::size_t size);
  /// A record of `size` bytes that `produce` hands over in pieces, through the function it is
  /// given (for bytes that are not in host memory all at once: a device tensor's, copied to the
  /// host a piece at a time). Throws if the pieces do not add up to `size`.
  using Pieces = std::function<void(const Sink& piece)>;
  void write_record(const std::string& name, std::size_t size, const Pieces& produce);
  void finish();
  uint64_t bytes_written() const noexcept { return offset_; }

 private:
  struct Entry {
    std::string name;
    uint64_t offset;
    uint64_t size;
    uint32_t crc;
  };
  void emit(const void* data, std::size_t size);  // sink + running position and file CRC
  void emit_data(const void* data, std::size_t size, uint32_t& record_crc);

  Sink sink_;
  std::string prefix_;
  uint64_t offset_ = 0;
  uint32_t file_crc_ = 0;
  std::vector<Entry> entries_;
  bool finished_ = false;
};

/// A parsed zip container, read through a ByteSource: the constructor reads only the end records
/// and the central directory; a record's bytes are read when asked for. Every offset and size is
/// checked against the file, so a damaged or hostile file throws CheckpointError (naming the
/// source) instead of reading out of bounds.
class ZipReader {
 public:
  struct Entry {
    std::string name;        // without the `<archive>/` prefix
    uint64_t header_offset;  // of its local header
    uint64_t size;
    uint32_t crc;
    uint64_t span_end;  // where the next record (or the central directory) starts
  };

  explicit ZipReader(std::shared_ptr<const ByteSource> source);

  const Entry* find(const std::string& name) const;
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  const ByteSource& source() const noexcept { return *source_; }
  const std::string& name() const noexcept { return source_->name(); }

  /// The data of each of `records`, in the same order, checked against its CRC-32 first if
  /// `check_crc`. Records next to each other in the file are read as one range.
  std::vector<Bytes> read(const std::vector<const Entry*>& records, bool check_crc) const;
  Bytes read(const Entry& record, bool check_crc) const { return read({&record}, check_crc)[0]; }

  /// True if the file carries ckpt's whole-file checksum (files written by Python do not).
  bool has_file_checksum() const noexcept { return has_file_checksum_; }
  /// Checks the whole-file checksum (if present; it covers every byte) or else every record's
  /// CRC-32: reads the whole file. Throws CheckpointError naming the file and the damaged record.
  void verify() const;

 private:
  [[noreturn]] void fail(const std::string& what) const;
  // The data of `entry` inside `run`, the file's bytes from `run_offset` on.
  Bytes record_in(const Entry& entry, const Bytes& run, uint64_t run_offset) const;

  std::shared_ptr<const ByteSource> source_;
  std::vector<Entry> entries_;
  bool has_file_checksum_ = false;
  uint32_t expected_file_crc_ = 0;
  uint64_t checksummed_bytes_ = 0;
};

}  // namespace ckpt::detail
