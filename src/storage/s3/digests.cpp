#include "storage/s3/digests.h"

#include <openssl/evp.h>

#include <stdexcept>

namespace ckpt::detail {
namespace {

// OpenSSL's EVP interface (the one not deprecated in OpenSSL 3): `digest` of the bytes.
unsigned digest_of(const EVP_MD* digest, const char* data, std::size_t size, unsigned char* out) {
  unsigned length = 0;
  if (EVP_Digest(data, size, out, &length, digest, nullptr) != 1) {
    throw std::runtime_error("OpenSSL EVP_Digest failed");
  }
  return length;
}

}  // namespace

std::string content_md5(const char* data, std::size_t size) {
  unsigned char md5[EVP_MAX_MD_SIZE];
  const unsigned length = digest_of(EVP_md5(), data, size, md5);
  unsigned char base64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
  const int written = EVP_EncodeBlock(base64, md5, static_cast<int>(length));
  return std::string(reinterpret_cast<const char*>(base64), static_cast<std::size_t>(written));
}

std::string sha256_hex(const char* data, std::size_t size) {
  unsigned char hash[EVP_MAX_MD_SIZE];
  const unsigned length = digest_of(EVP_sha256(), data, size, hash);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < length; ++i) {
    hex += kHex[hash[i] >> 4];
    hex += kHex[hash[i] & 15];
  }
  return hex;
}

}  // namespace ckpt::detail
