#include "tool_common.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_reader.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>
#include <ckpt/state_dict.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <sstream>

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace ckpt::tool {

bool parse_arguments(const std::vector<std::string>& args, po::options_description& options,
                     const std::vector<std::pair<std::string, int>>& positional,
                     const std::string& usage, po::variables_map& vm) {
  po::options_description all;
  all.add_options()("help,h", "show this help and exit");
  all.add(options);
  po::options_description hidden;
  po::positional_options_description order;
  for (const auto& [name, count] : positional) {
    hidden.add_options()(name.c_str(), count == -1
                                           ? po::value<std::vector<std::string>>()->composing()
                                           : po::value<std::vector<std::string>>());
    order.add(name.c_str(), count);
  }
  po::options_description parse_with;
  parse_with.add(all).add(hidden);
  try {
    po::store(po::command_line_parser(args).options(parse_with).positional(order).run(), vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  if (vm.count("help")) {
    std::cout << usage << "\n" << all << std::endl;
    return false;
  }
  po::notify(vm);
  for (const auto& [name, count] : positional) {
    if (!vm.count(name))
      throw UsageError("missing " + name + " (" + usage.substr(0, usage.find('\n')) + ")");
  }
  return true;
}

Storage& storage() { return *Storage::by_location(); }

FileKind kind_of(const fs::path& path) {
  return is_safetensors_file(path, storage()) ? FileKind::kSafetensors : FileKind::kTorchZip;
}

const char* kind_name(FileKind kind) {
  return kind == FileKind::kSafetensors ? "safetensors" : "torch.save zip";
}

void require_path(const fs::path& path, bool want_dir, const std::string& what) {
  std::optional<FileInfo> info;
  try {
    info = storage().stat(path);
  } catch (const CheckpointError& e) {
    throw UsageError(what + " " + path.string() + ": " + e.what());
  }
  if (!info) throw UsageError(what + " " + path.string() + " does not exist");
  if (want_dir && !info->is_directory) {
    throw UsageError(what + " " + path.string() + " is not a directory");
  }
  if (!want_dir && info->is_directory) {
    throw UsageError(what + " " + path.string() + " is not a regular file");
  }
}

void verify_any(const fs::path& path) {
  if (kind_of(path) == FileKind::kSafetensors) {
    verify_safetensors_file(path, storage());
  } else {
    verify_file(path, storage());
  }
}

c10::IValue load_any(const fs::path& path) {
  if (kind_of(path) == FileKind::kSafetensors)
    return load_safetensors_file(path, storage()).to_ivalue();
  return load_ivalue_file(path, storage());
}

namespace {

std::string key_string(const c10::IValue& key) {
  if (key.isString()) return key.toStringRef();
  if (key.isInt()) return std::to_string(key.toInt());
  return value_string(key);
}

}  // namespace

c10::IValue at_key(const c10::IValue& root, const std::string& key, const std::string& file) {
  try {
    return value_at_key(root, key, file);
  } catch (const CheckpointError& e) {
    // The library's message starts "key K: ..."; the tool names the flag.
    throw UsageError(std::string("--") + e.what());
  }
}

c10::IValue load_any_at(const fs::path& path, const std::string& key) {
  if (key.empty()) return load_any(path);
  if (kind_of(path) == FileKind::kSafetensors) return at_key(load_any(path), key, path.string());
  // Only the records under the key are read, each checked by its CRC-32 before use.
  const CheckpointReader reader(path, storage());
  at_key(reader.outline(), key, path.string());  // a missing key is a usage error
  return reader.load(key, Verification::records_read);
}

void for_each_leaf(const c10::IValue& root, const std::string& path,
                   const std::function<void(const std::string&, const c10::IValue&)>& visit) {
  auto child = [&](const std::string& step) { return path.empty() ? step : path + "/" + step; };
  if (root.isGenericDict() && !root.toGenericDict().empty()) {
    for (const auto& item : root.toGenericDict()) {
      for_each_leaf(item.value(), child(key_string(item.key())), visit);
    }
  } else if (root.isList() && !root.toListRef().empty()) {
    const auto& items = root.toListRef();
    for (std::size_t i = 0; i < items.size(); ++i) {
      for_each_leaf(items[i], child(std::to_string(i)), visit);
    }
  } else if (root.isTuple() && !root.toTupleRef().elements().empty()) {
    const auto& items = root.toTupleRef().elements();
    for (std::size_t i = 0; i < items.size(); ++i) {
      for_each_leaf(items[i], child(std::to_string(i)), visit);
    }
  } else {
    visit(path, root);
  }
}

std::string dtype_string(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kLong:
      return "int64";
    case at::kInt:
      return "int32";
    case at::kShort:
      return "int16";
    case at::kChar:
      return "int8";
    case at::kByte:
      return "uint8";
    case at::kBool:
      return "bool";
    case at::kComplexHalf:
      return "complex32";
    case at::kComplexFloat:
      return "complex64";
    case at::kComplexDouble:
      return "complex128";
    default:
      return c10::toString(tensor.scalar_type());
  }
}

std::string shape_string(const at::Tensor& tensor) {
  std::string text = "[";
  for (int64_t i = 0; i < tensor.dim(); ++i) {
    text += (i ? ", " : "") + std::to_string(tensor.size(i));
  }
  return text + "]";
}

std::string value_string(const c10::IValue& value) {
  if (value.isNone()) return "None";
  if (value.isBool()) return value.toBool() ? "True" : "False";
  if (value.isInt()) return std::to_string(value.toInt());
  if (value.isDouble()) {
    // The shortest text that reads back as the same double, as Python's repr prints 0.003.
    std::string text;
    for (int precision = 15; precision <= 17; ++precision) {
      std::ostringstream out;
      out.precision(precision);
      out << value.toDouble();
      text = out.str();
      if (std::strtod(text.c_str(), nullptr) == value.toDouble()) break;
    }
    if (std::isfinite(value.toDouble()) && text.find_first_of(".e") == std::string::npos) {
      text += ".0";
    }
    return text;
  }
  if (value.isString()) {
    std::string text = "'";
    for (char c : value.toStringRef()) {
      if (c == '\'' || c == '\\') text += '\\';
      text += c;
    }
    return text + "'";
  }
  if (value.isGenericDict()) return "dict (" + std::to_string(value.toGenericDict().size()) + ")";
  if (value.isList()) return "list (" + std::to_string(value.toListRef().size()) + ")";
  if (value.isTuple()) {
    return "tuple (" + std::to_string(value.toTupleRef().elements().size()) + ")";
  }
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    return "tensor " + dtype_string(t) + " " + shape_string(t);
  }
  return value.tagKind();
}

std::optional<std::string> item_string(const at::Tensor& tensor) {
  if (tensor.dim() != 0 || tensor.is_complex()) return std::nullopt;
  if (tensor.scalar_type() == at::kBool) return value_string(tensor.item<bool>());
  if (tensor.is_floating_point()) return value_string(tensor.item<double>());
  return value_string(tensor.item<int64_t>());
}

std::string failure_with_key(const fs::path& path, const std::exception& error) {
  const std::string why = one_line(error);
  if (why.find("record '") == std::string::npos || kind_of(path) != FileKind::kTorchZip) {
    return why;
  }
  // Each tensor read alone, its record checked by its CRC-32: the first that fails is the key.
  std::optional<std::string> key;
  try {
    const CheckpointReader reader(path, storage());
    for_each_leaf(reader.outline(), "", [&](const std::string& at, const c10::IValue& leaf) {
      if (key || !leaf.isTensor()) return;
      try {
        reader.load(at, Verification::records_read);
      } catch (const CheckpointError&) {
        key = at;
      }
    });
  } catch (const std::exception&) {
  }
  if (!key) return why;
  // The library's message starts with the file's name; the key goes right after it.
  const std::string named = path.string() + ": ";
  if (why.compare(0, named.size(), named) == 0) {
    return named + "tensor at key " + *key + ": " + why.substr(named.size());
  }
  return "tensor at key " + *key + ": " + why;
}

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double size = static_cast<double>(bytes);
  int unit = 0;
  while (size >= 1024 && unit < 4) {
    size /= 1024;
    ++unit;
  }
  std::ostringstream out;
  if (unit == 0) {
    out << bytes << " B";
  } else {
    out.setf(std::ios::fixed);
    out.precision(size < 10 ? 2 : 1);
    out << size << " " << units[unit];
  }
  return out.str();
}

std::optional<uint64_t> stored_size(const fs::path& path) {
  try {
    if (const auto info = storage().stat(path)) return info->size;
  } catch (const CheckpointError&) {
  }
  return std::nullopt;
}

std::string modified_time(const fs::path& path) {
  std::optional<FileInfo> info;
  try {
    info = storage().stat(path);
  } catch (const CheckpointError&) {
  }
  if (!info || info->mtime_ns == 0) return "?";
  const std::time_t t = static_cast<std::time_t>(info->mtime_ns / 1000000000);
  std::tm local{};
  localtime_r(&t, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
  return text;
}

std::string one_line(const std::exception& e) {
  std::string message;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    message = c10_error->what_without_backtrace();
  } else {
    message = e.what();
  }
  const auto newline = message.find('\n');
  if (newline != std::string::npos) message.resize(newline);
  return message;
}

}  // namespace ckpt::tool
