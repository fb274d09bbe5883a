#pragma once

#include <string>

namespace ckpt::detail {

/// The marker in the names of LocalStorage's temporaries: `.<final name>.ckpt-tmp-XXXXXX`.
inline constexpr const char* kTempMarker = ".ckpt-tmp-";

/// If `filename` is one of LocalStorage's temporaries, the final name it was being written for;
/// otherwise an empty string.
std::string temp_target_name(const std::string& filename);

}  // namespace ckpt::detail
