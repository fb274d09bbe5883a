#include <ckpt/checkpoint_reader.h>

#include <ckpt/checkpoint_error.h>

#include "format/archive.h"
#include "format/device_copies.h"
#include "format/byte_source.h"

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <utility>

namespace ckpt {
namespace {

std::string key_string(const c10::IValue& key) {
  if (key.isString()) return key.toStringRef();
  if (key.isInt()) return std::to_string(key.toInt());
  return std::string("<") + key.tagKind() + ">";
}

// "keys a, b, c" or "a list of 3": what a missing step could have been.
std::string available(const c10::IValue& value) {
  if (value.isGenericDict()) {
    std::string keys;
    int shown = 0;
    for (const auto& item : value.toGenericDict()) {
      if (shown++ == 12) return "keys " + keys + ", ...";
      keys += (keys.empty() ? "" : ", ") + key_string(item.key());
    }
    return keys.empty() ? "an empty dict" : "keys " + keys;
  }
  if (value.isList()) return "a list of " + std::to_string(value.toListRef().size());
  if (value.isTuple()) return "a tuple of " + std::to_string(value.toTupleRef().elements().size());
  return "a " + std::string(value.tagKind()) + ", not a container";
}

}  // namespace

c10::IValue value_at_key(const c10::IValue& root, const std::string& key, const std::string& what) {
  c10::IValue value = root;
  std::string walked;
  std::size_t begin = 0;
  while (begin <= key.size()) {
    const std::size_t end = std::min(key.find('/', begin), key.size());
    const std::string step = key.substr(begin, end - begin);
    begin = end + 1;
    if (step.empty()) continue;
    bool found = false;
    if (value.isGenericDict()) {
      for (const auto& item : value.toGenericDict()) {
        if (key_string(item.key()) == step) {
          value = item.value();
          found = true;
          break;
        }
      }
    } else if (value.isList() || value.isTuple()) {
      const auto& items =
          value.isList() ? value.toListRef().vec() : value.toTupleRef().elements().vec();
      char* rest = nullptr;
      const long long index = std::strtoll(step.c_str(), &rest, 10);
      if (*rest == '\0' && index >= 0 && static_cast<std::size_t>(index) < items.size()) {
        value = items[static_cast<std::size_t>(index)];
        found = true;
      }
    }
    if (!found) {
      const std::string where = walked.empty() ? "the top level" : "'" + walked + "'";
      throw CheckpointError("key " + key + ": no '" + step + "' in " + where + " of " + what +
                                " (it has " + available(value) + ")",
                            what);
    }
    walked += (walked.empty() ? "" : "/") + step;
  }
  return value;
}

struct CheckpointReader::Impl {
  std::shared_ptr<const detail::ByteSource> source;
  std::unique_ptr<detail::Archive> archive;
  // Verification::whole_file is paid once per reader.
  mutable std::once_flag verified;
};

CheckpointReader::CheckpointReader(std::filesystem::path path, Storage& storage)
    : path_(std::move(path)), impl_(std::make_unique<Impl>()) {
  const auto info = storage.stat(path_);
  if (!info) {
    throw CheckpointError("checkpoint file " + path_.string() + " does not exist", path_, ENOENT);
  }
  if (info->is_directory) throw CheckpointError(path_.string() + " is not a regular file", path_);
  impl_->source = detail::lazy_file_source(storage.open(path_), path_.string());
  if (impl_->source->size() == 0) {
    throw CheckpointError(path_.string() + " is empty (0 bytes): not a checkpoint", path_);
  }
  impl_->archive =
      std::make_unique<detail::Archive>(impl_->source, detail::Archive::Check::records);
}

CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;

uint64_t CheckpointReader::file_size() const noexcept { return impl_->source->size(); }

uint64_t CheckpointReader::bytes_read() const noexcept { return impl_->source->bytes_viewed(); }

bool CheckpointReader::contains(const std::string& key) const {
  try {
    impl_->archive->outline(key);
    return true;
  } catch (const CheckpointError&) {
    return false;
  }
}

c10::IValue CheckpointReader::outline(const std::string& key) const {
  return impl_->archive->outline(key);
}

c10::IValue CheckpointReader::load(const std::string& key, Verification verification,
                                   c10::Device map_location) const {
  detail::check_device_exists(map_location, "cannot load " + path_.string() + " onto " +
                                                map_location.str());
  c10::IValue value;
  if (verification == Verification::whole_file) {
    std::call_once(impl_->verified, [&] { impl_->archive->zip().verify(); });
    value = impl_->archive->load(key, /*check_records=*/false);
  } else {
    value = impl_->archive->load(key, /*check_records=*/true);
  }
  return map_location.is_cpu() ? value : detail::to_device(value, map_location);
}

StateDict CheckpointReader::load_state(const std::string& key, Verification verification,
                                       c10::Device map_location) const {
  return StateDict::from_ivalue(load(key, verification, map_location),
                                path_.string() + (key.empty() ? "" : " at key " + key));
}

}  // namespace ckpt
