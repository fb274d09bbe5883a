# Probes the LibTorch that find_package(Torch) found for the API differences between the LibTorch
# versions ckpt builds against (Debian's 1.13, PyPI wheels' 2.x), so the code never guesses from a
# version number. Each probe only compiles (no link) one small source with LibTorch's include
# directories and flags (the `torch` target's link interface is too much for try_compile).
# The results reach src/compat/torch_compat.h, the one header that knows of the differences,
# through the compile definitions of the INTERFACE target ckpt_torch_compat (for the library, the
# sample trainer and the tests; never installed or exported). Include after find_package(Torch)
# and find_package(spdlog).
if(TARGET ckpt_torch_compat)
  return()
endif()
include(CheckCXXSourceCompiles)
include(CMakePushCheckState)

add_library(ckpt_torch_compat INTERFACE)
target_include_directories(ckpt_torch_compat INTERFACE ${CMAKE_CURRENT_LIST_DIR}/../src/compat)

get_target_property(spdlog_definitions spdlog::spdlog INTERFACE_COMPILE_DEFINITIONS)
list(TRANSFORM spdlog_definitions PREPEND -D)
macro(ckpt_torch_probe_state)
  cmake_push_check_state(RESET)
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
  set(CMAKE_REQUIRED_INCLUDES ${ARGN} ${TORCH_INCLUDE_DIRS})
  set(CMAKE_REQUIRED_FLAGS "${TORCH_CXX_FLAGS}")
  set(CMAKE_REQUIRED_QUIET ON)
endmacro()

ckpt_torch_probe_state()

# Optimizer::state() is keyed by the parameter's TensorImpl* (2.x), not its address printed to a
# string (1.13).
check_cxx_source_compiles([[
#include <torch/optim/optimizer.h>
#include <type_traits>
using State = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
static_assert(std::is_same<State::key_type, void*>::value, "");
int main() { return 0; }]] CKPT_TORCH_OPTIMIZER_STATE_KEYED_BY_POINTER)

# c10::Event::synchronize(), and the device guard's synchronizeEvent() behind it (2.x); 1.13 has
# only query().
check_cxx_source_compiles([[
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
void wait(const c10::Event& event) { event.synchronize(); }
auto hook = &c10::impl::DeviceGuardImplInterface::synchronizeEvent;
int main() { return 0; }]] CKPT_TORCH_EVENT_HAS_SYNCHRONIZE)

# c10::Allocator::allocate() is const in 1.13, not in 2.x, where copy_data() is also to be defined
# (a device allocator in the tests implements both).
check_cxx_source_compiles([[
#include <c10/core/Allocator.h>
#include <type_traits>
static_assert(std::is_same<decltype(&c10::Allocator::allocate),
                           c10::DataPtr (c10::Allocator::*)(size_t) const>::value, "");
int main() { return 0; }]] CKPT_TORCH_ALLOCATE_IS_CONST)
check_cxx_source_compiles([[
#include <c10/core/Allocator.h>
void (c10::Allocator::*copy)(void*, const void*, std::size_t) const = &c10::Allocator::copy_data;
int main() { return 0; }]] CKPT_TORCH_ALLOCATOR_HAS_COPY_DATA)

# A PrivateUse1 device can name itself and register hooks (2.x), which the autograd engine asks
# for its streams once it takes PrivateUse1 for the accelerator; 1.13 has neither. Only the test
# device (tests/device/) uses it: tests/CMakeLists.txt defines it for that one source.
check_cxx_source_compiles([[
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/DeviceType.h>
void f() {
  c10::register_privateuse1_backend("privateuseone");
  at::RegisterPrivateUse1HooksInterface(nullptr);
}
int main() { return 0; }]] CKPT_TORCH_PRIVATEUSE1_HOOKS)

# c10d::ProcessGroupGloo is a c10d::Backend that a c10d::ProcessGroup dispatches to (2.x), not a
# ProcessGroup itself (1.13). Needs Gloo's headers (Debian's libgloo-dev; the wheels ship none).
find_path(CKPT_GLOO_INCLUDE_DIR gloo/config.h)
if(CKPT_GLOO_INCLUDE_DIR)
  list(APPEND CMAKE_REQUIRED_INCLUDES ${CKPT_GLOO_INCLUDE_DIR})
  set(CMAKE_REQUIRED_DEFINITIONS -DUSE_C10D_GLOO=1)
  check_cxx_source_compiles([[
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <type_traits>
static_assert(std::is_base_of<c10d::Backend, c10d::ProcessGroupGloo>::value &&
              !std::is_base_of<c10d::ProcessGroup, c10d::ProcessGroupGloo>::value, "");
int main() { return 0; }]] CKPT_TORCH_GLOO_IS_BACKEND)
endif()
cmake_pop_check_state()

# spdlog's headers compile against the fmt that spdlog was built with. LibTorch wheels ship their
# own (newer) fmt in the include directory they put first, which spdlog 1.10 does not compile with.
# Then ckpt_fmt_first puts a directory holding only spdlog's fmt ahead of LibTorch's.
ckpt_torch_probe_state()
set(CMAKE_REQUIRED_DEFINITIONS ${spdlog_definitions})
check_cxx_source_compiles([[
#include <c10/core/TensorImpl.h>
#include <spdlog/spdlog.h>
int main() { spdlog::info("{}", 1); return 0; }]] CKPT_SPDLOG_FMT_IS_TORCH_FMT)
cmake_pop_check_state()

add_library(ckpt_fmt_first INTERFACE)
if(NOT CKPT_SPDLOG_FMT_IS_TORCH_FMT)
  get_target_property(fmt_include_dirs fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
  find_path(CKPT_FMT_INCLUDE_DIR fmt/core.h HINTS ${fmt_include_dirs} NO_DEFAULT_PATH)
  if(NOT CKPT_FMT_INCLUDE_DIR)
    message(FATAL_ERROR "spdlog does not compile with LibTorch's fmt, and spdlog's fmt is not found")
  endif()
  set(fmt_first_dir ${CMAKE_BINARY_DIR}/ckpt-fmt-first)
  file(MAKE_DIRECTORY ${fmt_first_dir})
  file(CREATE_LINK ${CKPT_FMT_INCLUDE_DIR}/fmt ${fmt_first_dir}/fmt SYMBOLIC)
  target_include_directories(ckpt_fmt_first SYSTEM BEFORE INTERFACE ${fmt_first_dir})
  ckpt_torch_probe_state(${fmt_first_dir})
  set(CMAKE_REQUIRED_DEFINITIONS ${spdlog_definitions})
  check_cxx_source_compiles([[
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <spdlog/spdlog.h>
int main() { spdlog::info("{}", 1); return 0; }]] CKPT_SPDLOG_FMT_FIRST_COMPILES)
  cmake_pop_check_state()
  if(NOT CKPT_SPDLOG_FMT_FIRST_COMPILES)
    message(FATAL_ERROR "LibTorch's headers do not compile with spdlog's fmt ahead of LibTorch's")
  endif()
  message(STATUS "spdlog's fmt (${CKPT_FMT_INCLUDE_DIR}) comes before LibTorch's")
endif()

foreach(probe CKPT_TORCH_OPTIMIZER_STATE_KEYED_BY_POINTER CKPT_TORCH_GLOO_IS_BACKEND
              CKPT_TORCH_EVENT_HAS_SYNCHRONIZE CKPT_TORCH_ALLOCATE_IS_CONST
              CKPT_TORCH_ALLOCATOR_HAS_COPY_DATA)
  if(${probe})
    target_compile_definitions(ckpt_torch_compat INTERFACE ${probe}=1)
  endif()
endforeach()

# Gloo (ProcessGroupGloo's transport): Debian's LibTorch links Debian's libgloo, while the torch
# wheel builds its own Gloo into libtorch_cpu and exports its symbols. A program that links
# Debian's libgloo beside the wheel interposes that second Gloo on the wheel's ProcessGroupGloo:
# seen here, ranks deadlocked inside free() on a corrupted heap. ckpt_gloo gives Gloo's headers
# (Debian's libgloo-dev; the wheels ship none) and links Debian's library only when LibTorch does
# not carry its own. For the sample trainer and the tests; never installed or exported.
add_library(ckpt_gloo INTERFACE)
find_library(CKPT_GLOO_LIBRARY gloo)
if(CKPT_GLOO_INCLUDE_DIR AND NOT CKPT_GLOO_INCLUDE_DIR STREQUAL "/usr/include")
  target_include_directories(ckpt_gloo SYSTEM INTERFACE ${CKPT_GLOO_INCLUDE_DIR})
endif()
get_filename_component(ckpt_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
set(ckpt_torch_cpu "${ckpt_torch_lib_dir}/libtorch_cpu.so")
if(NOT EXISTS "${ckpt_torch_cpu}")
  set(ckpt_torch_cpu "${TORCH_LIBRARY}")
endif()
execute_process(COMMAND nm -D --defined-only "${ckpt_torch_cpu}"
                COMMAND grep -c "_ZN4gloo9transport3tcp12CreateDevice"
                OUTPUT_VARIABLE ckpt_torch_gloo_symbols OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(ckpt_torch_gloo_symbols GREATER 0)
  message(STATUS "${ckpt_torch_cpu} carries its own Gloo: Debian's libgloo is not linked")
elseif(CKPT_GLOO_LIBRARY)
  target_link_libraries(ckpt_gloo INTERFACE ${CKPT_GLOO_LIBRARY})
endif()

# The torch wheel's libtorch.so exports its own copies of libstdc++'s std::filesystem functions
# (built with a newer GCC). Listed before libstdc++ in a program's needed libraries, they interpose
# Debian 12's, and call into parts of libstdc++ that GCC 12's lacks: every std::filesystem::
# remove_all jumped to address 0. Then every program that links ckpt lists libstdc++ first.
add_library(ckpt_libstdcxx_first INTERFACE)
execute_process(COMMAND nm -D --defined-only "${TORCH_LIBRARY}"
                OUTPUT_VARIABLE ckpt_torch_symbols ERROR_QUIET)
if(ckpt_torch_symbols MATCHES "_ZNSt10filesystem")
  target_link_options(ckpt_libstdcxx_first INTERFACE
                      "LINKER:--push-state,--no-as-needed,-lstdc++,--pop-state")
  message(STATUS "${TORCH_LIBRARY} exports std::filesystem: libstdc++ is linked ahead of it")
endif()
unset(ckpt_torch_symbols)
