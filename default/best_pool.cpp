#include "best_pool.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_names.h>
#include <ckpt/logger.h>

#include <ckpt/serialization.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <optional>

namespace ckpt::detail {
namespace {

std::optional<double> number_at(const StateDict& state, const std::string& key) {
  if (!state.contains(key)) return std::nullopt;
  const c10::IValue& value = state.at(key);
  if (value.isDouble()) return value.toDouble();
  if (value.isInt()) return static_cast<double>(value.toInt());
  return std::nullopt;
}

std::optional<StateDict> dict_at(const StateDict& state, const std::string& key) {
  if (!state.contains(key) || !state.at(key).isGenericDict()) return std::nullopt;
  return StateDict::from_ivalue(state.at(key), key);
}

}  // namespace

bool BestPool::better(double a, double b) const { return args_.mode == "max" ? a > b : a < b; }

bool BestPool::ranks_before(const Entry& a, const Entry& b) const {
  return better(a.score, b.score) || (a.score == b.score && a.index < b.index);
}

void BestPool::consider(const Checkpoint& checkpoint, const Checkpoint& written, int64_t index) {
  const auto metrics = dict_at(checkpoint.metadata, "metrics");
  const auto score = metrics ? number_at(*metrics, args_.monitor) : std::nullopt;
  if (!score) {
    std::string present;
    if (metrics) {
      for (const auto& entry : *metrics) present += (present.empty() ? "" : ", ") + entry.first;
    }
    throw CheckpointError(
        "monitor '" + args_.monitor + "' is not among the metrics reported with checkpoint index " +
        std::to_string(index) + " (reported: " + (present.empty() ? "none" : present) + ")");
  }
  if (std::isnan(*score)) {
    logger()->warn("{} is NaN at index {}: not a best checkpoint", args_.monitor, index);
    return;
  }
  // The same index and score again (e.g. the trainer's final forced save) is already in the pool.
  if (std::any_of(entries_.begin(), entries_.end(),
                  [&](const Entry& b) { return b.index == index && b.score == *score; })) {
    return;
  }
  // A re-save of an index in the pool with another score replaces its entry.
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const Entry& b) { return b.index == index; }),
                 entries_.end());
  const auto k = static_cast<size_t>(args_.save_top_k);
  if (entries_.size() >= k && !better(*score, entries_.back().score)) return;  // ties: earlier

  Checkpoint best_file = written;
  StateDict best;
  best.insert_or_assign("monitor", args_.monitor);
  best.insert_or_assign("mode", args_.mode);
  best.insert_or_assign("score", *score);
  best.insert_or_assign("index", index);
  best_file.metadata.insert_or_assign("best", best.to_ivalue());
  check_mk_dir(args_.save_dir, storage_);
  const auto path = args_.save_dir / names_.best(index);
  preflight_.check(best_file, path, /*may_prune=*/false);
  save_checkpoint_file(best_file, path, storage_);

  const Entry entry{path, index, *score};
  const auto at = std::find_if(entries_.begin(), entries_.end(),
                               [&](const Entry& b) { return ranks_before(entry, b); });
  const auto rank = static_cast<size_t>(at - entries_.begin()) + 1;
  entries_.insert(at, entry);
  logger()->info("best checkpoint {}: {}={} (rank {} of {})", path.string(), args_.monitor, *score,
                 rank, entries_.size());
  while (entries_.size() > k) {
    const Entry evicted = entries_.back();
    entries_.pop_back();
    storage_.remove(evicted.path);
    logger()->info("best pool (save_top_k={}): deleted {} ({}={})", k, evicted.path.string(),
                   args_.monitor, evicted.score);
  }
  logger()->info("best so far: {} ({}={})", entries_.front().path.string(), args_.monitor,
                 entries_.front().score);
}

void BestPool::load() {
  for (const auto& file : storage_.list(args_.save_dir, /*recursive=*/false)) {
    const auto& path = file.path;
    if (!names_.best_index(path.filename().string())) continue;
    try {
      const Checkpoint checkpoint = load_checkpoint_file(path, storage_);
      const auto best = dict_at(checkpoint.metadata, "best");
      const auto score = best ? number_at(*best, "score") : std::nullopt;
      const auto index = best ? number_at(*best, "index") : std::nullopt;
      const bool same_ranking = best && best->contains("monitor") && best->contains("mode") &&
                                best->at("monitor") == c10::IValue(args_.monitor) &&
                                best->at("mode") == c10::IValue(args_.mode);
      if (!score || !index || !same_ranking) {
        logger()->warn("best checkpoint {} is not ranked by {} ({}): left alone, not in the pool",
                       path.string(), args_.monitor, args_.mode);
        continue;
      }
      entries_.push_back({path, static_cast<int64_t>(*index), *score});
    } catch (const CheckpointError& e) {
      logger()->warn("best checkpoint {} cannot be read: left alone, not in the pool: {}",
                     path.string(), e.what());
    }
  }
  std::sort(entries_.begin(), entries_.end(),
            [&](const Entry& a, const Entry& b) { return ranks_before(a, b); });
  const auto k = static_cast<size_t>(args_.save_top_k);
  while (entries_.size() > k) {  // save_top_k was lowered since these were written
    storage_.remove(entries_.back().path);
    logger()->info("best pool (save_top_k={}): deleted {}", k, entries_.back().path.string());
    entries_.pop_back();
  }
  if (!entries_.empty()) {
    logger()->info("best pool from {}: {} checkpoints, best {} ({}={})", args_.save_dir.string(),
                   entries_.size(), entries_.front().path.string(), args_.monitor,
                   entries_.front().score);
  }
}

}  // namespace ckpt::detail
