#pragma once

#include <c10/util/intrusive_ptr.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace boost {
namespace program_options {
class options_description;
}  // namespace program_options
}  // namespace boost

namespace c10d {
class ProcessGroup;
}  // namespace c10d

namespace sample_trainer {

/// How a process joins a data-parallel job (`--dist.*`), as torchrun and PyMarlin describe it.
/// A field left unset is read from torchrun's environment variables (RANK, WORLD_SIZE,
/// LOCAL_RANK, MASTER_ADDR, MASTER_PORT): flags beat the environment.
struct DistArguments {
  /// Launcher mode: start this many local processes (ranks `node_rank * nproc ..`), each this
  /// program with the same arguments, and wait for them. 0: not a launcher. Default: 0.
  int64_t nproc = 0;
  /// Launcher mode: machines in the job, and this machine's index. Default: 1 and 0.
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  /// This process's rank in 0 .. world_size - 1 (RANK). Unset: a single process.
  std::optional<int64_t> rank;
  /// Processes in the job (WORLD_SIZE). Default: 1 when `rank` is set.
  std::optional<int64_t> world_size;
  /// Rank on this machine (LOCAL_RANK); informational on CPU. Default: `rank`.
  std::optional<int64_t> local_rank;
  /// Where rank 0 serves the rendezvous (MASTER_ADDR, MASTER_PORT). Defaults: 127.0.0.1, and
  /// 29500 (the launcher of a one-machine job picks a free port instead).
  std::optional<std::string> master_addr;
  std::optional<int64_t> master_port;
  /// Seconds a rank waits for the others (rendezvous, collectives, checkpoint saves) before it
  /// fails with an error that says so. Default: 300.
  double timeout = 300;

  /// True when this process is one rank of a job (`rank` set after resolve_environment).
  bool distributed() const noexcept { return rank.has_value(); }
  /// Fills unset fields from the environment. Throws std::invalid_argument naming the variable
  /// for a value that is not a number.
  void resolve_environment();
  /// Throws std::invalid_argument naming the flag for an out-of-range value, e.g.
  /// "invalid rank 2: must be in 0..1 (--dist.rank or RANK)".
  void validate() const;
};

/// Binds DistArguments to `--<prefix>.<field>` (and a `[<prefix>]` config section).
boost::program_options::options_description dist_options(DistArguments& args,
                                                         const std::string& prefix = "dist");

/// Joins the job: rank 0 serves a c10d::TCPStore at master_addr:master_port, every rank connects
/// and builds a c10d::ProcessGroupGloo over it, with `timeout` for every collective. The Gloo
/// device binds to 127.0.0.1 when the master is on loopback, else to the interface named by
/// GLOO_SOCKET_IFNAME or the address of this machine's hostname. Throws std::runtime_error naming
/// the address and the flags on failure.
c10::intrusive_ptr<c10d::ProcessGroup> init_process_group(const DistArguments& args);

/// The launcher (`--dist.nproc N`): starts N copies of this executable with `child_args`
/// (argv[1..], without --dist.nproc) and torchrun's environment for each rank, forwards SIGTERM
/// and SIGINT to them, and waits. When one fails, the others get `grace_seconds` to finish on
/// their own (they learn of the failure through the collectives), then SIGTERM, then SIGKILL.
/// Children die with the launcher (PR_SET_PDEATHSIG). Logs each child's rank and pid. Returns the
/// first failure's exit code (128 + signal for a killed child), else 3 if a rank was stopped by a
/// signal after saving, else 0.
int launch(const DistArguments& args, const std::vector<std::string>& child_args,
           double grace_seconds);

/// `argv[1..]` without the `--<prefix>.nproc` option (both `--dist.nproc N` and `--dist.nproc=N`).
std::vector<std::string> without_nproc(int argc, char** argv, const std::string& prefix = "dist");

}  // namespace sample_trainer
