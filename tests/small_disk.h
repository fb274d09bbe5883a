#pragma once
// A real full disk for tests: a small tmpfs mounted for the test's lifetime, filled and freed on
// demand. Needs root (CI runs as root); fails the test, loudly, otherwise.

#include <boost/test/unit_test.hpp>

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace ckpt::test {

/// A tmpfs of `size` (as mount's option, e.g. "4m") at `path`, unmounted on destruction. fill()
/// takes every free byte with a file of its own, free() deletes it.
class SmallDisk {
 public:
  SmallDisk(std::filesystem::path path, const std::string& size) : path_(std::move(path)) {
    BOOST_REQUIRE_MESSAGE(::geteuid() == 0,
                          "this test mounts a tmpfs and needs root (CI runs as root)");
    std::filesystem::create_directories(path_);
    BOOST_REQUIRE_MESSAGE(
        ::mount("tmpfs", path_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0,
        "mount tmpfs: " << std::strerror(errno));
  }
  ~SmallDisk() { ::umount2(path_.c_str(), MNT_DETACH); }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  void fill() {
    std::ofstream filler(filler_path(), std::ios::binary);
    const std::string block(4096, 'x');
    while (filler.write(block.data(), block.size()) && filler.flush()) {
    }
  }
  void free() { std::filesystem::remove(filler_path()); }

 private:
  std::filesystem::path filler_path() const { return path_ / "filler.bin"; }
  std::filesystem::path path_;
};

}  // namespace ckpt::test
