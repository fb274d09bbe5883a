#pragma once

#include <ckpt/state_dict.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

namespace ckpt {

/// The safetensors format (https://github.com/huggingface/safetensors), for weights-only files
/// that other frameworks read without unpickling anything:
///
///   8 bytes   N, the header length, unsigned little-endian
///   N bytes   JSON: {"__metadata__": {...}, "<name>": {"dtype": "F32", "shape": [2, 3],
///             "data_offsets": [begin, end]}, ...}, padded with spaces to a multiple of 8 bytes
///   rest      the tensors' raw little-endian bytes, C order; offsets are relative to here
///
/// Dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL. ckpt writes `__metadata__` with
/// `format` = `pt`, `ckpt_format_version` (kFormatVersion) and `ckpt_crc32`, the CRC-32 of the
/// byte buffer (8 hex digits), which the loader checks when present.
///
/// safetensors forbids tensors that overlap in the byte buffer, so tensors that share storage
/// (tied weights, views) are each written with their own copy of their bytes, under every name:
/// nothing is dropped, and a loaded file has no sharing left.
///
///   ckpt::save_safetensors_file(ckpt::module_state(*model), "weights.safetensors");
///   ckpt::StateDict weights = ckpt::load_safetensors_file("weights.safetensors");
///
/// Thread safety: the functions share no state.

/// Writes every entry of `tensors` (each must be a CPU tensor of one of the dtypes above; anything
/// else is a CheckpointError naming the key) to `path`, in insertion order. Atomic and durable
/// like save_ivalue_file, through `storage` (on the local filesystem: a temporary
/// `.<name>.ckpt-tmp-XXXXXX` in the same directory, fsync, rename, directory fsync); on failure
/// nothing new is visible and CheckpointError (naming `path`) is thrown, leaving any previous file
/// untouched. `metadata` is
/// added to `__metadata__` (ckpt's own keys win). Returns the bytes written.
uint64_t save_safetensors_file(const StateDict& tensors, const std::filesystem::path& path,
                               Storage& storage = *Storage::by_location(),
                               const std::map<std::string, std::string>& metadata = {});

/// Reads a safetensors file (ckpt's or any conforming writer's) into a StateDict of CPU tensors,
/// in header order. Every length and offset is bounds-checked: the tensors must tile the byte
/// buffer exactly, each the size its dtype and shape imply. A malformed file, an unknown dtype, a
/// newer `ckpt_format_version` or a `ckpt_crc32` mismatch throws CheckpointError naming `path`.
StateDict load_safetensors_file(const std::filesystem::path& path,
                                Storage& storage = *Storage::by_location());

/// The `__metadata__` of a safetensors file (empty if it has none), after the same checks as
/// load_safetensors_file, without building tensors. Throws where it would.
std::map<std::string, std::string> verify_safetensors_file(
    const std::filesystem::path& path, Storage& storage = *Storage::by_location());

/// Whether `path` starts like a safetensors file (a plausible header length followed by `{`)
/// rather than a zip container. False for unreadable or short files.
bool is_safetensors_file(const std::filesystem::path& path,
                         Storage& storage = *Storage::by_location());

}  // namespace ckpt
