#pragma once
// keep_last_n: the newest N resumable checkpoints that verify stay, older ones of ours go.

#include "file_names.h"
#include "verified_files.h"

#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <vector>

namespace ckpt::detail {

class Retention {
 public:
  Retention(Storage& storage, std::filesystem::path dir, const FileNames& names,
            VerifiedFiles& verified)
      : storage_(storage), dir_(std::move(dir)), names_(names), verified_(verified) {}

  /// What apply(keep) would delete (see ckpt::retention_victims).
  std::vector<std::filesystem::path> victims(int64_t keep);
  /// Deletes our resumable checkpoints beyond the newest `keep` that verify, logging each.
  void apply(int64_t keep);

 private:
  Storage& storage_;
  std::filesystem::path dir_;
  const FileNames& names_;
  VerifiedFiles& verified_;
};

}  // namespace ckpt::detail
