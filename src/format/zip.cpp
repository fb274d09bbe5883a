#include "format/zip.h"

#include <ckpt/checkpoint_error.h>

#include <zlib.h>

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

// ---------------------------------------------------------------- writer

ZipWriter::ZipWriter(Sink sink, std::string archive_name)
    : sink_(std::move(sink)), prefix_(std::move(archive_name) + "/") {}

void ZipWriter::emit(const void* data, std::size_t size) {
  sink_(data, size);
  file_crc_ = crc32(file_crc_, data, size);
  offset_ += size;
}

void ZipWriter::emit_data(const void* data, std::size_t size, uint32_t& record_crc) {
  // Chunked so each chunk's CRC is computed while it is still in cache; the record's and the
  // file's running CRCs are combined from this piece's (no second pass over the bytes; a record
  // may come in several pieces).
  const char* p = static_cast<const char*>(data);
  uint32_t piece_crc = 0;
  for (std::size_t done = 0; done < size;) {
    const std::size_t n = std::min(kChunk, size - done);
    piece_crc = crc32(piece_crc, p + done, n);
    sink_(p + done, n);
    done += n;
  }
  const auto length = static_cast<z_off_t>(size);
  record_crc = static_cast<uint32_t>(::crc32_combine(record_crc, piece_crc, length));
  file_crc_ = static_cast<uint32_t>(::crc32_combine(file_crc_, piece_crc, length));
  offset_ += size;
}

void ZipWriter::write_record(const std::string& name, const void* data, std::size_t size) {
  write_record(name, size, [&](const Sink& piece) { piece(data, size); });
}

void ZipWriter::write_record(const std::string& name, std::size_t size, const Pieces& produce) {
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
  std::size_t produced = 0;
  produce([&](const void* data, std::size_t piece) {
    emit_data(data, piece, record_crc);
    produced += piece;
  });
  if (produced != size) {
    throw CheckpointError("zip writer: record '" + name + "' has " + std::to_string(produced) +
                          " bytes, announced " + std::to_string(size));
  }

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

void ZipReader::fail(const std::string& what) const {
  throw CheckpointError(name() + ": not a valid checkpoint zip: " + what, name());
}

ZipReader::ZipReader(std::shared_ptr<const ByteSource> source) : source_(std::move(source)) {
  const uint64_t size = source_->size();
  // The end record sits within its maximal comment of the end, the zip64 records just before it:
  // one read of the tail serves all of them and, for checkpoints, the central directory too.
  const uint64_t tail_size =
      std::min<uint64_t>(size, kEndSize + 0xffff + kEnd64LocatorSize + kEnd64Size);
  const uint64_t tail_offset = size - tail_size;
  const Bytes tail = source_->view(tail_offset, tail_size);
  auto at = [&](uint64_t offset) { return tail.begin() + (offset - tail_offset); };
  // The end record: the last signature whose comment reaches exactly the end of the file.
  uint64_t end_pos = 0;
  bool found = false;
  for (uint64_t pos = size >= kEndSize ? size - kEndSize + 1 : 0; pos-- > tail_offset;) {
    if (get(at(pos), 4) == kEndSig && pos + kEndSize + get(at(pos) + 20, 2) == size) {
      end_pos = pos;
      found = true;
      break;
    }
  }
  // PyTorch's legacy format (torch.save before 1.6, or with _use_new_zipfile_serialization=False)
  // is a pickle stream, not a zip: it starts with protocol 2 and its magic number
  // 0x1950a86a20f9469cfc6c. Say so, and how to convert it, instead of "not a zip file".
  static constexpr unsigned char kLegacyStart[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                                   0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (!found && size >= sizeof kLegacyStart) {
    const Bytes start =
        tail_offset == 0 ? tail : source_->view(0, static_cast<uint64_t>(sizeof kLegacyStart));
    if (std::memcmp(start.begin(), kLegacyStart, sizeof kLegacyStart) == 0) {
      const std::string& file = source_->name();
      throw CheckpointError(
          file +
              " is in PyTorch's legacy serialization format (torch.save before PyTorch 1.6, or "
              "with _use_new_zipfile_serialization=False), which ckpt does not read; re-save it "
              "in the zip format with Python: torch.save(torch.load(\"" +
              file + "\"), \"" + file + "\")",
          file);
    }
  }
  if (!found && size < kEndSize) fail("too short (" + std::to_string(size) + " bytes)");
  if (!found) fail("no end-of-central-directory record (truncated or not a zip file)");
  const char* end = at(end_pos);
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
    if (end_pos - tail_offset < kEnd64LocatorSize) fail("zip64 locator missing");
    const char* locator = end - kEnd64LocatorSize;
    if (get(locator, 4) != kEnd64LocatorSig) fail("zip64 locator missing");
    const uint64_t end64_pos = get(locator + 8, 8);
    if (end64_pos > end_pos - kEnd64LocatorSize ||
        end_pos - kEnd64LocatorSize - end64_pos < kEnd64Size) {
      fail("zip64 end record out of bounds");
    }
    const Bytes end64_bytes =
        end64_pos >= tail_offset
            ? Bytes{std::shared_ptr<char>(tail.data, tail.data.get() + (end64_pos - tail_offset)),
                    kEnd64Size}
            : source_->view(end64_pos, kEnd64Size);
    const char* end64 = end64_bytes.begin();
    if (get(end64, 4) != kEnd64Sig) fail("bad zip64 end record signature");
    count = get(end64 + 32, 8);
    cd_size = get(end64 + 40, 8);
    cd_offset = get(end64 + 48, 8);
    cd_limit = end64_pos;
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail("central directory out of bounds");
  if (count > cd_size / kCentralHeaderSize) fail("more entries than the central directory holds");

  const Bytes directory = source_->view(cd_offset, cd_size);
  std::unordered_set<std::string> names;
  std::string prefix;
  const char* cd = directory.begin();
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
        uint64_t at_field = 4;
        auto next = [&](uint64_t& field) {
          if (field != k32Max) return;
          if (at_field + 8 > 4 + len) fail("zip64 field of '" + name + "' truncated");
          field = get(x + at_field, 8);
          at_field += 8;
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
    if (cd_offset - local_offset - kLocalHeaderSize < uncompressed) {
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
    entries_.push_back({std::move(name), local_offset, uncompressed, crc, cd_offset});
  }
  // A record's span reaches the next record's header: read together with its header, the data
  // descriptor and any padding, adjacent records make one contiguous range.
  std::vector<Entry*> by_offset;
  for (auto& entry : entries_) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->header_offset < b->header_offset; });
  for (std::size_t i = 0; i + 1 < by_offset.size(); ++i) {
    by_offset[i]->span_end =
        std::max(by_offset[i + 1]->header_offset, by_offset[i]->header_offset + kLocalHeaderSize);
  }
}

const ZipReader::Entry* ZipReader::find(const std::string& name) const {
  for (const auto& entry : entries_) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

Bytes ZipReader::record_in(const Entry& entry, const Bytes& run, uint64_t run_offset) const {
  const uint64_t header_at = entry.header_offset - run_offset;
  if (run.size < header_at + kLocalHeaderSize) {
    fail("record '" + entry.name + "' header out of bounds");
  }
  const char* local = run.begin() + header_at;
  if (get(local, 4) != kLocalHeaderSig) fail("record '" + entry.name + "' has a bad local header");
  const uint64_t data_at = header_at + kLocalHeaderSize + get(local + 26, 2) + get(local + 28, 2);
  if (data_at > run.size || entry.size > run.size - data_at) {
    fail("record '" + entry.name + "' data out of bounds");
  }
  return {std::shared_ptr<char>(run.data, run.data.get() + data_at),
          static_cast<std::size_t>(entry.size)};
}

std::vector<Bytes> ZipReader::read(const std::vector<const Entry*>& records, bool check_crc) const {
  // Group the records into runs of adjacent spans, each read as one range.
  std::vector<std::size_t> order(records.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return records[a]->header_offset < records[b]->header_offset;
  });
  std::vector<Bytes> result(records.size());
  std::size_t first = 0;
  while (first < order.size()) {
    std::size_t last = first;
    uint64_t run_end = records[order[first]]->span_end;
    while (last + 1 < order.size() && records[order[last + 1]]->header_offset <= run_end) {
      ++last;
      run_end = std::max(run_end, records[order[last]]->span_end);
    }
    const uint64_t run_offset = records[order[first]]->header_offset;
    const Bytes run = source_->view(run_offset, run_end - run_offset);
    for (std::size_t i = first; i <= last; ++i) {
      const Entry& entry = *records[order[i]];
      Bytes bytes = record_in(entry, run, run_offset);
      if (check_crc && crc32(0, bytes.begin(), bytes.size) != entry.crc) {
        throw CheckpointError(
            name() + ": checksum mismatch in record '" + entry.name + "' (the file is corrupt)",
            name());
      }
      result[order[i]] = std::move(bytes);
    }
    first = last + 1;
  }
  return result;
}

void ZipReader::verify() const {
  std::vector<const Entry*> all;
  for (const auto& entry : entries_) all.push_back(&entry);
  if (has_file_checksum_) {
    const Bytes whole = source_->view(0, checksummed_bytes_);
    const uint32_t actual = crc32(0, whole.begin(), whole.size);
    if (actual != expected_file_crc_) {
      // Name the damaged record when its own CRC shows it; otherwise the damage is in metadata.
      read(all, /*check_crc=*/true);
      char message[96];
      std::snprintf(message, sizeof message,
                    "whole-file checksum mismatch (expected %08x, got %08x)", expected_file_crc_,
                    actual);
      throw CheckpointError(name() + ": " + message + " in zip headers (the file is corrupt)",
                            name());
    }
    return;  // the whole-file CRC covers every record's bytes
  }
  read(all, /*check_crc=*/true);
}

}  // namespace ckpt::detail
