#pragma once
// Captures what ckpt logs while it is alive.

#include <ckpt/logger.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <sstream>
#include <string>

namespace ckpt::test {

class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_)) {
    sink_->set_pattern("[%l] %v");
    ckpt::logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = ckpt::logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::string text() const {
    ckpt::logger()->flush();
    return stream_.str();
  }
  bool contains(const std::string& part) const { return text().find(part) != std::string::npos; }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

}  // namespace ckpt::test
