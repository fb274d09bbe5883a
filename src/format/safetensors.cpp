#include <ckpt/safetensors.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/serialization.h>

#include "format/byte_source.h"
#include "format/crc32.h"
#include "format/device_copies.h"
#include "storage/atomic_file.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors stores little-endian bytes; ckpt writes tensors' memory as is"
#endif

namespace ckpt {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kMetadataKey = "__metadata__";
// The reference implementation refuses headers above 100 MB; so do we, before allocating.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

constexpr std::pair<const char*, at::ScalarType> kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool}};

const char* dtype_name(at::ScalarType type) {
  for (const auto& [name, t] : kDtypes) {
    if (t == type) return name;
  }
  return nullptr;
}

std::optional<at::ScalarType> dtype_of(const std::string& name) {
  for (const auto& [n, t] : kDtypes) {
    if (name == n) return t;
  }
  return std::nullopt;
}

std::string hex32(uint32_t value) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", value);
  return text;
}

// One tensor of a parsed header.
struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

struct Parsed {
  std::shared_ptr<detail::FileBuffer> buffer;
  uint64_t data_start = 0;  // first byte of the byte buffer
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};

constexpr unsigned __int128 kTooBig = static_cast<unsigned __int128>(1) << 64;

[[noreturn]] void malformed(const std::filesystem::path& path, const std::string& what) {
  throw CheckpointError(path.string() + ": not a valid safetensors file: " + what, path);
}

Entry parse_entry(const std::filesystem::path& path, const std::string& name, const Json& value,
                  uint64_t buffer_size) {
  const std::string where = "tensor '" + name + "'";
  if (!value.is_object()) malformed(path, where + " is not a JSON object");
  const auto dtype = value.find("dtype");
  const auto shape = value.find("shape");
  const auto offsets = value.find("data_offsets");
  if (dtype == value.end() || !dtype->is_string()) malformed(path, where + " has no string dtype");
  const auto type = dtype_of(dtype->get<std::string>());
  if (!type) {
    malformed(path, where + " has unsupported dtype '" + dtype->get<std::string>() +
                        "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  }
  if (shape == value.end() || !shape->is_array()) malformed(path, where + " has no shape array");
  Entry entry{name, *type, {}, 0, 0};
  unsigned __int128 bytes = at::elementSize(*type);
  for (const auto& dim : *shape) {
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      malformed(path, where + " has a shape entry that is not a non-negative integer");
    }
    entry.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
    // Saturate at 2^64 instead of overflowing: no offsets can match that, so it is refused below.
    bytes = std::min<unsigned __int128>(bytes * dim.get<uint64_t>(), kTooBig);
  }
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    malformed(path, where + " has no data_offsets [begin, end]");
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > buffer_size) {
    malformed(path, where + " has data_offsets [" + std::to_string(entry.begin) + ", " +
                        std::to_string(entry.end) + "] outside the " + std::to_string(buffer_size) +
                        "-byte buffer");
  }
  if (entry.end - entry.begin != bytes) {
    malformed(path, where + " has " + std::to_string(entry.end - entry.begin) +
                        " bytes but its dtype and shape need " +
                        (bytes == kTooBig ? std::string("2^64 or more")
                                          : std::to_string(static_cast<uint64_t>(bytes))));
  }
  return entry;
}

Parsed parse(const std::filesystem::path& path, Storage& storage) {
  const auto info = storage.stat(path);
  if (!info) {
    throw CheckpointError("safetensors file " + path.string() + " does not exist", path, ENOENT);
  }
  if (info->is_directory) throw CheckpointError(path.string() + " is not a regular file", path);
  Parsed parsed;
  parsed.buffer = detail::read_file_buffer(*storage.open(path), path.string());
  const uint64_t size = parsed.buffer->size;
  const auto* bytes = reinterpret_cast<const unsigned char*>(parsed.buffer->data.get());
  if (size < 8) malformed(path, "only " + std::to_string(size) + " bytes, no header length");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes || header_size > size - 8) {
    malformed(path, "header length " + std::to_string(header_size) + " exceeds the file's " +
                        std::to_string(size) + " bytes (or the 100 MB limit)");
  }
  parsed.data_start = 8 + header_size;
  const uint64_t buffer_size = size - parsed.data_start;

  Json header;
  try {
    header = Json::parse(bytes + 8, bytes + parsed.data_start);
  } catch (const Json::exception& e) {
    malformed(path, std::string("header is not JSON: ") + e.what());
  }
  if (!header.is_object()) malformed(path, "header is not a JSON object");
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) malformed(path, "__metadata__ is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) malformed(path, "__metadata__ '" + key + "' is not a string");
        parsed.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    parsed.entries.push_back(parse_entry(path, name, value, buffer_size));
  }

  // The tensors must tile the buffer: no overlap, no hole, nothing after the last one.
  std::vector<const Entry*> by_offset;
  for (const auto& entry : parsed.entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  uint64_t covered = 0;
  for (const Entry* entry : by_offset) {
    if (entry->begin != covered) {
      malformed(path, "tensor '" + entry->name + "' starts at byte " +
                          std::to_string(entry->begin) + " of the buffer, expected " +
                          std::to_string(covered) + " (tensors overlap or leave a hole)");
    }
    covered = entry->end;
  }
  if (covered != buffer_size) {
    malformed(path, "the tensors cover " + std::to_string(covered) + " bytes of the " +
                        std::to_string(buffer_size) + "-byte buffer");
  }

  if (const auto it = parsed.metadata.find("ckpt_format_version"); it != parsed.metadata.end()) {
    char* end = nullptr;
    const long long version = std::strtoll(it->second.c_str(), &end, 10);
    if (end == it->second.c_str() || *end != '\0' || version < 1) {
      malformed(path, "unreadable ckpt_format_version '" + it->second + "'");
    }
    if (version > kFormatVersion) {
      throw CheckpointError(path.string() + " has format version " + std::to_string(version) +
                                "; this ckpt reads versions 1 to " + std::to_string(kFormatVersion),
                            path);
    }
  }
  if (const auto it = parsed.metadata.find("ckpt_crc32"); it != parsed.metadata.end()) {
    const std::string actual = hex32(detail::crc32(0, bytes + parsed.data_start, buffer_size));
    if (it->second != actual) {
      throw CheckpointError(path.string() + ": checksum mismatch: the tensor bytes have CRC-32 " +
                                actual + ", the header says " + it->second +
                                " (the file is damaged)",
                            path);
    }
  }
  return parsed;
}

}  // namespace

uint64_t save_safetensors_file(const StateDict& tensors, const std::filesystem::path& path,
                               Storage& storage,
                               const std::map<std::string, std::string>& metadata) {
  // Contiguous copies where needed; a tensor that shares storage is still written under its own
  // name with its own bytes (safetensors forbids overlapping entries).
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  Json entries = Json::object();
  uint64_t offset = 0;
  uint32_t crc = 0;
  std::vector<char> device_piece;  // device tensors reach the host through it, a piece at a time
  for (const auto& [name, value] : tensors) {
    if (name == kMetadataKey) {
      throw CheckpointError(
          "cannot write " + path.string() + ": the key '" + name + "' is reserved by safetensors",
          path);
    }
    if (!value.isTensor()) {
      throw CheckpointError("cannot write " + path.string() + ": '" + name + "' is a " +
                                value.tagKind() + ", not a tensor (safetensors holds tensors only)",
                            path);
    }
    const at::Tensor& tensor = value.toTensor();
    if (!tensor.defined() || tensor.device().is_meta() || tensor.layout() != at::kStrided) {
      throw CheckpointError("cannot write " + path.string() + ": '" + name +
                                "' is not a defined, dense tensor with data",
                            path);
    }
    const char* dtype = dtype_name(tensor.scalar_type());
    if (dtype == nullptr) {
      throw CheckpointError("cannot write " + path.string() + ": '" + name + "' has dtype " +
                                std::string(c10::toString(tensor.scalar_type())) +
                                ", which safetensors does not support here",
                            path);
    }
    contiguous.push_back(tensor.contiguous());
    const uint64_t bytes = contiguous.back().nbytes();
    entries[name] = {{"dtype", dtype},
                     {"shape", tensor.sizes().vec()},
                     {"data_offsets", {offset, offset + bytes}}};
    // The header, which comes first, carries the data's checksum: a device tensor is read for it
    // here and again to write it (through one reused buffer both times).
    detail::for_each_host_piece(contiguous.back(), device_piece,
                                [&](const void* data, std::size_t size) {
                                  crc = detail::crc32(crc, data, size);
                                });
    offset += bytes;
  }

  Json meta = Json::object();
  for (const auto& [key, text] : metadata) meta[key] = text;
  meta["format"] = "pt";
  meta["ckpt_format_version"] = std::to_string(kFormatVersion);
  meta["ckpt_crc32"] = hex32(crc);
  Json header = Json::object();
  header[kMetadataKey] = meta;
  for (auto& [name, entry] : entries.items()) header[name] = std::move(entry);
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // the reference pads to 8 bytes with spaces

  detail::AtomicFile file(storage, path);
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(text.size() >> (8 * i));
  file.write(length, sizeof length);
  file.write(text.data(), text.size());
  for (const auto& tensor : contiguous) {
    detail::for_each_host_piece(tensor, device_piece, [&](const void* data, std::size_t size) {
      file.write(data, size);
    });
  }
  file.commit();
  return file.bytes_written();
}

StateDict load_safetensors_file(const std::filesystem::path& path, Storage& storage) {
  const Parsed parsed = parse(path, storage);
  const char* data = parsed.buffer->data.get() + parsed.data_start;
  StateDict result;
  for (const auto& entry : parsed.entries) {
    at::Tensor tensor = at::empty(entry.shape, at::TensorOptions().dtype(entry.type));
    if (entry.end > entry.begin)
      std::memcpy(tensor.data_ptr(), data + entry.begin, entry.end - entry.begin);
    result.insert_or_assign(entry.name, std::move(tensor));
  }
  return result;
}

std::map<std::string, std::string> verify_safetensors_file(const std::filesystem::path& path,
                                                           Storage& storage) {
  return parse(path, storage).metadata;
}

bool is_safetensors_file(const std::filesystem::path& path, Storage& storage) {
  unsigned char head[9];
  try {
    const auto file = storage.open(path);
    if (file->size() < sizeof head) return false;
    file->read(0, sizeof head, head);
  } catch (const CheckpointError&) {
    return false;
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | head[i];
  return header_size >= 2 && header_size <= kMaxHeaderBytes && head[8] == '{';
}

}  // namespace ckpt
