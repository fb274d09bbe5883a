#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace ckpt {

/// The one exception type ckpt throws. It carries the file the failure is about (empty when the
/// failure concerns no file, e.g. a bad option value) and, for system errors, the errno.
///
///   try { checkpointer.load(); }
///   catch (const ckpt::CheckpointError& e) { std::cerr << e.what() << " [" << e.path() << "]\n"; }
class CheckpointError : public std::runtime_error {
 public:
  explicit CheckpointError(const std::string& message, std::filesystem::path path = {},
                           int error_number = 0);

  /// The file or directory the error concerns; empty if none.
  const std::filesystem::path& path() const noexcept { return path_; }
  /// The errno of the failed system call, or 0.
  int error_number() const noexcept { return error_number_; }

 private:
  std::filesystem::path path_;
  int error_number_;
};

}  // namespace ckpt
