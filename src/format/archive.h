#pragma once

#include "format/zip.h"

#include <ATen/core/ivalue.h>

#include <memory>
#include <string>

namespace ckpt::detail {

/// An opened torch.save zip: its directory parsed, its format version checked and its `data.pkl`
/// read (through the ByteSource, so nothing else of the file has been read yet). It unpickles the
/// whole value or a subtree, reading the tensors' records only for what it returns.
class Archive {
 public:
  /// How the constructor checks the file before reading its format record and data.pkl.
  enum class Check {
    none,        // nothing (the fuzzer, to reach the parsers)
    records,     // the CRC-32s of those two records
    whole_file,  // ZipReader::verify: every byte, before anything else is parsed
  };
  /// Throws CheckpointError naming the file if it is not a checkpoint zip ckpt can read, or fails
  /// `check`.
  Archive(std::shared_ptr<const ByteSource> source, Check check);

  const ZipReader& zip() const noexcept { return zip_; }
  const std::string& name() const noexcept { return zip_.name(); }

  /// The whole value, each tensor aliasing its record's bytes (checked by its CRC-32 first with
  /// `check_records`; pass false when the whole file was verified already).
  c10::IValue load(bool check_records) const;
  /// The value at `key` (see ckpt::value_at_key), reading only the records its tensors use (checked
  /// by their CRC-32s first with `check_records`). Throws CheckpointError naming the file and
  /// the key if the key is absent.
  c10::IValue load(const std::string& key, bool check_records) const;
  /// The value at `key` with every tensor replaced by a tensor on the meta device of the same
  /// dtype, shape and strides: the structure, without reading a record.
  c10::IValue outline(const std::string& key) const;

 private:
  ZipReader zip_;
  Bytes pickle_;
};

/// Parses, optionally verifies, and unpickles a whole file held in memory (the loader behind
/// ckpt::load_ivalue_file; the fuzzer calls it without verification to reach the parsers).
c10::IValue load_ivalue_buffer(std::shared_ptr<FileBuffer> buffer, const std::string& source,
                               bool verify);

}  // namespace ckpt::detail
