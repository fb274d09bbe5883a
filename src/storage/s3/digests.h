#pragma once

#include <cstddef>
#include <string>

namespace ckpt::detail {

/// The base64 MD5 of `size` bytes at `data`: the value of an S3 `Content-MD5` header, with which
/// the store rejects a body that arrived corrupted (HTTP 400 BadDigest).
std::string content_md5(const char* data, std::size_t size);

/// The lowercase hex SHA-256 of `size` bytes at `data` (SigV4's `x-amz-content-sha256`).
std::string sha256_hex(const char* data, std::size_t size);

}  // namespace ckpt::detail
