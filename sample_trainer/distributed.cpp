#include <sample_trainer/distributed.h>

#include "torch_compat.h"

#include <spdlog/spdlog.h>
#include <boost/program_options.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <sstream>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <thread>

namespace po = boost::program_options;

namespace sample_trainer {
namespace {

constexpr int64_t kDefaultMasterPort = 29500;
constexpr int kExitStopped = 3;

std::optional<int64_t> env_int(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(value, &end, 10);
  if (errno != 0 || *end != '\0') {
    throw std::invalid_argument(std::string("invalid environment variable ") + name + "='" + value +
                                "': not an integer");
  }
  return parsed;
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

// A port that was free a moment ago (bound to port 0, then released).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(error));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// The launcher's children, for the signal handler that forwards SIGTERM/SIGINT.
constexpr int kMaxChildren = 1024;
volatile pid_t g_children[kMaxChildren];
volatile std::sig_atomic_t g_child_count = 0;

extern "C" void forward_signal(int signal) {
  for (int i = 0; i < g_child_count; ++i) {
    if (g_children[i] > 0) ::kill(g_children[i], signal);
  }
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

void DistArguments::resolve_environment() {
  if (!rank) rank = env_int("RANK");
  if (!world_size) world_size = env_int("WORLD_SIZE");
  if (!local_rank) local_rank = env_int("LOCAL_RANK");
  if (!master_port) master_port = env_int("MASTER_PORT");
  if (!master_addr) {
    if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') {
      master_addr = addr;
    }
  }
  if (rank && !world_size) world_size = 1;
  if (world_size && !rank && nproc == 0) {
    throw std::invalid_argument(
        "WORLD_SIZE or --dist.world_size is set but not the rank: set "
        "RANK or --dist.rank too");
  }
  if (rank && !local_rank) local_rank = rank;
}

void DistArguments::validate() const {
  if (nproc < 0) {
    throw std::invalid_argument("invalid nproc " + std::to_string(nproc) + ": must be >= 0");
  }
  if (nnodes < 1) {
    throw std::invalid_argument("invalid nnodes " + std::to_string(nnodes) + ": must be >= 1");
  }
  if (node_rank < 0 || node_rank >= nnodes) {
    throw std::invalid_argument("invalid node_rank " + std::to_string(node_rank) +
                                ": must be in 0.." + std::to_string(nnodes - 1));
  }
  if (nproc > kMaxChildren) {
    throw std::invalid_argument("invalid nproc " + std::to_string(nproc) + ": at most " +
                                std::to_string(kMaxChildren));
  }
  if (nproc > 0 && rank) {
    throw std::invalid_argument("invalid rank " + std::to_string(*rank) +
                                ": the launcher (--dist.nproc) assigns the ranks; unset RANK and "
                                "--dist.rank");
  }
  if (world_size && *world_size < 1) {
    throw std::invalid_argument("invalid world_size " + std::to_string(*world_size) +
                                ": must be >= 1 (--dist.world_size or WORLD_SIZE)");
  }
  if (rank && (*rank < 0 || *rank >= world_size.value_or(1))) {
    throw std::invalid_argument("invalid rank " + std::to_string(*rank) + ": must be in 0.." +
                                std::to_string(world_size.value_or(1) - 1) +
                                " (--dist.rank or RANK)");
  }
  if (master_port && (*master_port < 1 || *master_port > 65535)) {
    throw std::invalid_argument("invalid master_port " + std::to_string(*master_port) +
                                ": must be in 1..65535 (--dist.master_port or MASTER_PORT)");
  }
  if (master_addr && master_addr->empty()) {
    throw std::invalid_argument("invalid master_addr '': must name rank 0's host");
  }
  if (!(timeout > 0)) {
    throw std::invalid_argument("invalid timeout " + std::to_string(timeout) + ": must be > 0");
  }
}

po::options_description dist_options(DistArguments& args, const std::string& prefix) {
  const DistArguments defaults = args;  // a program's presets are the defaults
  const std::string p = prefix + ".";
  // An optional field: unset stays unset (the environment may fill it); a preset is the default.
  auto optional_int = [&args](std::optional<int64_t> DistArguments::*field) {
    auto* value = po::value<int64_t>()->notifier([&args, field](int64_t v) { args.*field = v; });
    if (const auto& preset = args.*field) value->default_value(*preset);
    return value;
  };
  auto* master_addr = po::value<std::string>()->notifier(
      [&args](const std::string& v) { args.master_addr = v; });
  if (defaults.master_addr) master_addr->default_value(*defaults.master_addr);
  std::ostringstream timeout;
  timeout << defaults.timeout;
  po::options_description desc("Data-parallel options (" + prefix +
                               "); unset ones come from RANK, WORLD_SIZE, LOCAL_RANK, "
                               "MASTER_ADDR, MASTER_PORT");
  desc.add_options()(
      (p + "nproc").c_str(), po::value<int64_t>(&args.nproc)->default_value(defaults.nproc),
      "launcher: start this many local ranks of this program and wait for them (0: no launcher)")(
      (p + "nnodes").c_str(), po::value<int64_t>(&args.nnodes)->default_value(defaults.nnodes),
      "launcher: machines in the job")(
      (p + "node_rank").c_str(),
      po::value<int64_t>(&args.node_rank)->default_value(defaults.node_rank),
      "launcher: this machine's index in 0..nnodes-1")(
      (p + "rank").c_str(), optional_int(&DistArguments::rank),
      "this process's rank (RANK); unset and no RANK: one process, no data parallelism")(
      (p + "world_size").c_str(), optional_int(&DistArguments::world_size),
      "processes in the job (WORLD_SIZE)")((p + "local_rank").c_str(),
                                           optional_int(&DistArguments::local_rank),
                                           "rank on this machine (LOCAL_RANK)")(
      (p + "master_addr").c_str(), master_addr,
      "host of rank 0's rendezvous (MASTER_ADDR; default 127.0.0.1)")(
      (p + "master_port").c_str(), optional_int(&DistArguments::master_port),
      "port of rank 0's rendezvous (MASTER_PORT; default 29500, or a free one for a one-machine "
      "launch)")((p + "timeout").c_str(),
                 po::value<double>(&args.timeout)->default_value(defaults.timeout, timeout.str()),
                 "seconds a rank waits for the others (rendezvous, collectives, checkpoint saves) "
                 "before failing");
  return desc;
}

c10::intrusive_ptr<c10d::ProcessGroup> init_process_group(const DistArguments& args) {
  const int rank = static_cast<int>(args.rank.value());
  const int world_size = static_cast<int>(args.world_size.value_or(1));
  const std::string address = args.master_addr.value_or("127.0.0.1");
  const int64_t port = args.master_port.value_or(kDefaultMasterPort);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(args.timeout * 1000));
  const std::string where = address + ":" + std::to_string(port) +
                            " (--dist.master_addr/--dist.master_port or MASTER_ADDR/MASTER_PORT)";
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(port);
    options.isServer = rank == 0;
    options.numWorkers = static_cast<std::size_t>(world_size);
    options.waitWorkers = true;
    options.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(address, options);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(rank) + ": rendezvous at " + where +
                             " failed within " + std::to_string(args.timeout) + " s: " + e.what());
  }
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
        interface != nullptr && *interface != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else if (is_loopback(address)) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto group = ckpt::compat::gloo_process_group(
        store, rank, world_size,
        c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options));
    spdlog::info("rank {} of {} joined the job at {}:{} (Gloo, timeout {} s)", rank, world_size,
                 address, port, args.timeout);
    return group;
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(rank) +
                             ": cannot connect to the other ranks via " + where + ": " + e.what());
  }
}

std::vector<std::string> without_nproc(int argc, char** argv, const std::string& prefix) {
  const std::string flag = "--" + prefix + ".nproc";
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == flag) {
      ++i;  // and its value
      continue;
    }
    if (arg.rfind(flag + "=", 0) == 0) continue;
    args.push_back(arg);
  }
  return args;
}

int launch(const DistArguments& args, const std::vector<std::string>& child_args,
           double grace_seconds) {
  const int64_t nproc = args.nproc;
  const int64_t world_size = nproc * args.nnodes;
  const std::string address = args.master_addr.value_or("127.0.0.1");
  const int64_t port =
      args.master_port ? *args.master_port : (args.nnodes == 1 ? free_port() : kDefaultMasterPort);

  // The children run this executable again; the command line beats a config file's nproc.
  std::vector<std::string> arguments{"/proc/self/exe"};
  arguments.insert(arguments.end(), child_args.begin(), child_args.end());
  arguments.push_back("--dist.nproc=0");
  std::vector<char*> child_argv;
  for (auto& a : arguments) child_argv.push_back(a.data());
  child_argv.push_back(nullptr);

  struct sigaction forward {};
  forward.sa_handler = forward_signal;
  sigemptyset(&forward.sa_mask);
  struct sigaction old_term {
  }, old_int{};
  sigaction(SIGTERM, &forward, &old_term);
  sigaction(SIGINT, &forward, &old_int);

  const pid_t launcher = ::getpid();
  std::vector<pid_t> pids;
  for (int64_t local = 0; local < nproc; ++local) {
    const int64_t rank = args.node_rank * nproc + local;
    const pid_t pid = ::fork();
    if (pid < 0) {
      spdlog::error("launcher: fork failed: {}", std::strerror(errno));
      forward_signal(SIGKILL);
      return 1;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != launcher) ::_exit(1);  // the launcher died before prctl
      signal(SIGTERM, SIG_DFL);
      signal(SIGINT, SIG_DFL);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world_size).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", address.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::execv("/proc/self/exe", child_argv.data());
      std::fprintf(stderr, "launcher: cannot run /proc/self/exe: %s\n", std::strerror(errno));
      ::_exit(127);
    }
    pids.push_back(pid);
    g_children[g_child_count] = pid;
    g_child_count = g_child_count + 1;
    spdlog::info("launcher: started rank {} of {} (pid {}), rendezvous at {}:{}", rank, world_size,
                 pid, address, port);
  }

  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> first_failure;
  bool terminated = false;
  int result = 0;
  bool any_stopped = false;
  size_t running = pids.size();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR) break;
    if (pid > 0) {
      --running;
      const auto it = std::find(pids.begin(), pids.end(), pid);
      const int64_t rank = args.node_rank * nproc + (it - pids.begin());
      for (int i = 0; i < g_child_count; ++i) {
        if (g_children[i] == pid) g_children[i] = 0;
      }
      const int code = exit_code_of(status);
      if (code == kExitStopped) any_stopped = true;
      if (code == 0 || code == kExitStopped) continue;
      spdlog::error("launcher: rank {} (pid {}) {} {}", rank, pid,
                    WIFSIGNALED(status) ? "was killed by signal" : "exited with code",
                    WIFSIGNALED(status) ? WTERMSIG(status) : code);
      if (!first_failure) {
        first_failure = Clock::now();
        result = code;
      }
      continue;
    }
    if (first_failure) {
      const double waited = std::chrono::duration<double>(Clock::now() - *first_failure).count();
      if (!terminated && waited > grace_seconds) {
        spdlog::error("launcher: stopping the {} remaining rank(s) after a failure", running);
        forward_signal(SIGTERM);
        terminated = true;
      } else if (terminated && waited > grace_seconds + 5) {
        forward_signal(SIGKILL);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGINT, &old_int, nullptr);
  g_child_count = 0;
  if (result != 0) return result;
  return any_stopped ? kExitStopped : 0;
}

}  // namespace sample_trainer
