#include "detail/zip.h"

#include <ckpt/checkpoint_error.h>

#include <isa-l/crc.h>
#include <zlib.h>

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

namespace ckpt::detail {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kDataDescriptorSig = 0x08074b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kPaddingExtraId = 0x4246;  // "FB", as PyTorch's writer pads
constexpr uint64_t kAlignment = 64;
constexpr uint64_t k32Max = 0xffffffffu;
constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kEndSize = 22;
constexpr std::size_t kEnd64Size = 56;
constexpr std::size_t kEnd64LocatorSize = 20;
constexpr std::size_t kCommentSize = 19;  // "ckpt-crc32:" + 8 hex digits
constexpr std::size_t kChunk = 4 << 20;
constexpr std::size_t kHugePage = 2 << 20;

void put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

uint32_t crc32(uint32_t crc, const void* data, std::size_t size) {
  return crc32_gzip_refl(crc, static_cast<const unsigned char*>(data), size);
}

// ---------------------------------------------------------------- writer

ZipWriter::ZipWriter(Sink sink, std::string archive_name)
    : sink_(std::move(sink)), prefix_(std::move(archive_name) + "/") {}

void ZipWriter::emit(const void* data, std::size_t size) {
  sink_(data, size);
  file_crc_ = crc32(file_crc_, data, size);
  offset_ += size;
}

void ZipWriter::emit_data(const void* data, std::size_t size, uint32_t& record_crc) {
  // Chunked so each chunk's CRC is computed while it is still in cache; the file's running CRC
  // is combined from the record's (no second pass over the bytes).
  const char* p = static_cast<const char*>(data);
  for (std::size_t done = 0; done < size;) {
    const std::size_t n = std::min(kChunk, size - done);
    record_crc = crc32(record_crc, p + done, n);
    sink_(p + done, n);
    done += n;
  }
  file_crc_ =
      static_cast<uint32_t>(::crc32_combine(file_crc_, record_crc, static_cast<z_off_t>(size)));
  offset_ += size;
}

void ZipWriter::write_record(const std::string& name, const void* data, std::size_t size) {
  if (finished_) throw CheckpointError("zip writer: record '" + name + "' after finish()");
  const std::string full_name = prefix_ + name;
  const bool zip64 = size >= k32Max;
  std::string header;
  put32(header, kLocalHeaderSig);
  put16(header, zip64 ? 45 : 20);
  put16(header, 0x0008);  // sizes and CRC follow the data (data descriptor)
  put16(header, 0);       // stored
  put16(header, 0);       // time
  put16(header, 0x21);    // date: 1980-01-01
  put32(header, 0);
  put32(header, zip64 ? k32Max : 0);
  put32(header, zip64 ? k32Max : 0);
  put16(header, static_cast<uint16_t>(full_name.size()));
  const std::size_t zip64_extra = zip64 ? 20 : 0;
  const uint64_t before_padding = offset_ + kLocalHeaderSize + full_name.size() + zip64_extra + 4;
  const std::size_t padding = (kAlignment - before_padding % kAlignment) % kAlignment;
  put16(header, static_cast<uint16_t>(zip64_extra + 4 + padding));
  header += full_name;
  if (zip64) {
    put16(header, kZip64ExtraId);
    put16(header, 16);
    put64(header, 0);
    put64(header, 0);
  }
  put16(header, kPaddingExtraId);
  put16(header, static_cast<uint16_t>(padding));
  header.append(padding, 'Z');
  const uint64_t offset = offset_;
  emit(header.data(), header.size());

  uint32_t record_crc = 0;
  emit_data(data, size, record_crc);

  std::string descriptor;
  put32(descriptor, kDataDescriptorSig);
  put32(descriptor, record_crc);
  if (zip64) {
    put64(descriptor, size);
    put64(descriptor, size);
  } else {
    put32(descriptor, static_cast<uint32_t>(size));
    put32(descriptor, static_cast<uint32_t>(size));
  }
  emit(descriptor.data(), descriptor.size());
  entries_.push_back({full_name, offset, size, record_crc});
}

void ZipWriter::finish() {
  if (finished_) return;
  finished_ = true;
  const uint64_t cd_offset = offset_;
  std::string cd;
  for (const auto& e : entries_) {
    const bool big_size = e.size >= k32Max;
    const bool big_offset = e.offset >= k32Max;
    std::string extra;
    if (big_size || big_offset) {
      put16(extra, kZip64ExtraId);
      put16(extra, static_cast<uint16_t>((big_size ? 16 : 0) + (big_offset ? 8 : 0)));
      if (big_size) {
        put64(extra, e.size);
        put64(extra, e.size);
      }
      if (big_offset) put64(extra, e.offset);
    }
    put32(cd, kCentralHeaderSig);
    put16(cd, 45);
    put16(cd, (big_size || big_offset) ? 45 : 20);
    put16(cd, 0x0008);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0x21);
    put32(cd, e.crc);
    put32(cd, big_size ? k32Max : static_cast<uint32_t>(e.size));
    put32(cd, big_size ? k32Max : static_cast<uint32_t>(e.size));
    put16(cd, static_cast<uint16_t>(e.name.size()));
    put16(cd, static_cast<uint16_t>(extra.size()));
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, big_offset ? k32Max : static_cast<uint32_t>(e.offset));
    cd += e.name;
    cd += extra;
  }
  emit(cd.data(), cd.size());
  const uint64_t cd_size = cd.size();
  const bool zip64 = entries_.size() >= 0xffff || cd_offset >= k32Max || cd_size >= k32Max;
  std::string end;
  if (zip64) {
    const uint64_t end64_offset = offset_;
    put32(end, kEnd64Sig);
    put64(end, kEnd64Size - 12);
    put16(end, 45);
    put16(end, 45);
    put32(end, 0);
    put32(end, 0);
    put64(end, entries_.size());
    put64(end, entries_.size());
    put64(end, cd_size);
    put64(end, cd_offset);
    put32(end, kEnd64LocatorSig);
    put32(end, 0);
    put64(end, end64_offset);
    put32(end, 1);
  }
  const uint16_t count16 = zip64 ? 0xffff : static_cast<uint16_t>(entries_.size());
  put32(end, kEndSig);
  put16(end, 0);
  put16(end, 0);
  put16(end, count16);
  put16(end, count16);
  put32(end, zip64 ? k32Max : static_cast<uint32_t>(cd_size));
  put32(end, zip64 ? k32Max : static_cast<uint32_t>(cd_offset));
  put16(end, static_cast<uint16_t>(kCommentSize));
  emit(end.data(), end.size());
  char comment[kCommentSize + 1];
  std::snprintf(comment, sizeof comment, "%s%08x", kChecksumCommentPrefix, file_crc_);
  sink_(comment, kCommentSize);
  offset_ += kCommentSize;
}

// ---------------------------------------------------------------- reader

std::shared_ptr<FileBuffer> read_file_buffer(const RandomAccessFile& file,
                                             const std::string& path) {
  auto buffer = std::make_shared<FileBuffer>();
  buffer->size = static_cast<std::size_t>(file.size());
  // Large buffers in transparent huge pages where the system allows it: a fresh buffer costs a
  // page fault per page, which dominates the time a large load takes.
  const std::size_t alignment = buffer->size >= kHugePage ? kHugePage : kAlignment;
  const std::size_t capacity = (buffer->size + alignment) / alignment * alignment;
  buffer->data = std::unique_ptr<char, void (*)(void*)>(
      static_cast<char*>(std::aligned_alloc(alignment, capacity)), &std::free);
  if (buffer->data && alignment == kHugePage) {
    ::madvise(buffer->data.get(), capacity, MADV_HUGEPAGE);  // advice only: failure is harmless
  }
  if (!buffer->data) {
    throw CheckpointError(
        "cannot read " + path + ": out of memory for " + std::to_string(buffer->size) + " bytes",
        path, ENOMEM);
  }
  file.read(0, buffer->size, buffer->data.get());
  return buffer;
}

void ZipReader::fail(const std::string& what) const {
  throw CheckpointError(source_ + ": not a valid checkpoint zip: " + what, source_);
}

ZipReader::ZipReader(std::shared_ptr<FileBuffer> buffer, std::string source)
    : buffer_(std::move(buffer)), source_(std::move(source)) {
  const char* base = buffer_->data.get();
  const uint64_t size = buffer_->size;
  // PyTorch's legacy format (torch.save before 1.6, or with _use_new_zipfile_serialization=False)
  // is a pickle stream, not a zip: it starts with protocol 2 and its magic number
  // 0x1950a86a20f9469cfc6c. Say so, and how to convert it, instead of "not a zip file".
  static constexpr unsigned char kLegacyStart[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                                   0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (size >= sizeof kLegacyStart && std::memcmp(base, kLegacyStart, sizeof kLegacyStart) == 0) {
    throw CheckpointError(
        source_ +
            " is in PyTorch's legacy serialization format (torch.save before PyTorch 1.6, or "
            "with _use_new_zipfile_serialization=False), which ckpt does not read; re-save it "
            "in the zip format with Python: torch.save(torch.load(\"" +
            source_ + "\"), \"" + source_ + "\")",
        source_);
  }
  if (size < kEndSize) fail("too short (" + std::to_string(size) + " bytes)");

  // The end record: the last signature whose comment reaches exactly the end of the file.
  uint64_t end_pos = 0;
  bool found = false;
  const uint64_t lowest = size >= kEndSize + 0xffff ? size - kEndSize - 0xffff : 0;
  for (uint64_t pos = size - kEndSize + 1; pos-- > lowest;) {
    if (get(base + pos, 4) == kEndSig && pos + kEndSize + get(base + pos + 20, 2) == size) {
      end_pos = pos;
      found = true;
      break;
    }
  }
  if (!found) fail("no end-of-central-directory record (truncated or not a zip file)");
  const char* end = base + end_pos;
  const uint64_t comment_size = get(end + 20, 2);
  const std::string comment(end + kEndSize, comment_size);
  // torch.save writes no comment; ckpt writes exactly its checksum. Anything else is damage.
  if (!comment.empty()) {
    if (comment.size() != kCommentSize || comment.rfind(kChecksumCommentPrefix, 0) != 0) {
      fail("damaged checksum comment at the end of the file");
    }
    char* parse_end = nullptr;
    const std::string hex = comment.substr(std::strlen(kChecksumCommentPrefix));
    expected_file_crc_ = static_cast<uint32_t>(std::strtoul(hex.c_str(), &parse_end, 16));
    if (parse_end != hex.c_str() + hex.size()) fail("malformed checksum comment");
    has_file_checksum_ = true;
    checksummed_bytes_ = end_pos + kEndSize;
  }
  uint64_t count = get(end + 10, 2);
  uint64_t cd_size = get(end + 12, 4);
  uint64_t cd_offset = get(end + 16, 4);
  uint64_t cd_limit = end_pos;
  if (count == 0xffff || cd_size == k32Max || cd_offset == k32Max) {
    if (end_pos < kEnd64LocatorSize) fail("zip64 locator missing");
    const char* locator = end - kEnd64LocatorSize;
    if (get(locator, 4) != kEnd64LocatorSig) fail("zip64 locator missing");
    const uint64_t end64_pos = get(locator + 8, 8);
    if (end64_pos > end_pos - kEnd64LocatorSize ||
        end_pos - kEnd64LocatorSize - end64_pos < kEnd64Size) {
      fail("zip64 end record out of bounds");
    }
    const char* end64 = base + end64_pos;
    if (get(end64, 4) != kEnd64Sig) fail("bad zip64 end record signature");
    count = get(end64 + 32, 8);
    cd_size = get(end64 + 40, 8);
    cd_offset = get(end64 + 48, 8);
    cd_limit = end64_pos;
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail("central directory out of bounds");
  if (count > cd_size / kCentralHeaderSize) fail("more entries than the central directory holds");

  std::unordered_set<std::string> names;
  std::string prefix;
  const char* cd = base + cd_offset;
  uint64_t pos = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_size - pos < kCentralHeaderSize) fail("central directory truncated");
    const char* h = cd + pos;
    if (get(h, 4) != kCentralHeaderSig) fail("bad central directory signature");
    const uint64_t method = get(h + 10, 2);
    const uint32_t crc = static_cast<uint32_t>(get(h + 16, 4));
    uint64_t compressed = get(h + 20, 4);
    uint64_t uncompressed = get(h + 24, 4);
    const uint64_t name_size = get(h + 28, 2);
    const uint64_t extra_size = get(h + 30, 2);
    const uint64_t comment_len = get(h + 32, 2);
    uint64_t local_offset = get(h + 42, 4);
    const uint64_t entry_size = kCentralHeaderSize + name_size + extra_size + comment_len;
    if (cd_size - pos < entry_size) fail("central directory entry truncated");
    std::string name(h + kCentralHeaderSize, name_size);
    // zip64 extra: the maxed-out fields, in order.
    for (uint64_t e = 0; e + 4 <= extra_size;) {
      const char* x = h + kCentralHeaderSize + name_size + e;
      const uint64_t id = get(x, 2);
      const uint64_t len = get(x + 2, 2);
      if (e + 4 + len > extra_size) fail("extra field of '" + name + "' out of bounds");
      if (id == kZip64ExtraId) {
        uint64_t at = 4;
        auto next = [&](uint64_t& field) {
          if (field != k32Max) return;
          if (at + 8 > 4 + len) fail("zip64 field of '" + name + "' truncated");
          field = get(x + at, 8);
          at += 8;
        };
        next(uncompressed);
        next(compressed);
        next(local_offset);
      }
      e += 4 + len;
    }
    pos += entry_size;
    if (method != 0) fail("record '" + name + "' is compressed (only stored records are read)");
    if (compressed != uncompressed) fail("record '" + name + "' has inconsistent sizes");
    if (local_offset > cd_offset || cd_offset - local_offset < kLocalHeaderSize) {
      fail("record '" + name + "' header out of bounds");
    }
    const char* local = base + local_offset;
    if (get(local, 4) != kLocalHeaderSig) fail("record '" + name + "' has a bad local header");
    const uint64_t data_offset =
        local_offset + kLocalHeaderSize + get(local + 26, 2) + get(local + 28, 2);
    if (data_offset > cd_offset || uncompressed > cd_offset - data_offset) {
      fail("record '" + name + "' data out of bounds");
    }
    if (i == 0) {
      const auto slash = name.find('/');
      if (slash == std::string::npos) fail("record '" + name + "' is outside an archive folder");
      prefix = name.substr(0, slash + 1);
    }
    if (name.compare(0, prefix.size(), prefix) != 0) {
      fail("record '" + name + "' is outside the archive folder '" + prefix + "'");
    }
    name.erase(0, prefix.size());
    if (!names.insert(name).second) fail("duplicate record '" + name + "'");
    entries_.push_back({std::move(name), data_offset, uncompressed, crc});
  }
}

const ZipReader::Entry* ZipReader::find(const std::string& name) const {
  for (const auto& entry : entries_) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

void ZipReader::verify() const {
  if (has_file_checksum_) {
    const uint32_t actual = crc32(0, buffer_->data.get(), checksummed_bytes_);
    if (actual != expected_file_crc_) {
      // Name the damaged record when its own CRC shows it; otherwise the damage is in metadata.
      for (const auto& entry : entries_) {
        if (crc32(0, data(entry), entry.size) != entry.crc) {
          throw CheckpointError(
              source_ + ": checksum mismatch in record '" + entry.name + "' (the file is corrupt)",
              source_);
        }
      }
      char message[96];
      std::snprintf(message, sizeof message,
                    "whole-file checksum mismatch (expected %08x, got %08x)", expected_file_crc_,
                    actual);
      throw CheckpointError(source_ + ": " + message + " in zip headers (the file is corrupt)",
                            source_);
    }
    return;  // the whole-file CRC covers every record's bytes
  }
  for (const auto& entry : entries_) {
    if (crc32(0, data(entry), entry.size) != entry.crc) {
      throw CheckpointError(
          source_ + ": checksum mismatch in record '" + entry.name + "' (the file is corrupt)",
          source_);
    }
  }
}

}  // namespace ckpt::detail
