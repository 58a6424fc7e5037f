// Sharded training checkpoints: see sharded_checkpoint.h.
#include "trainer/sharded_checkpoint.h"

#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace loom::train {

namespace {

std::string part_name(int64_t tp_rank, int64_t pp_rank) {
  return fmt::format("t{}-p{}", tp_rank, pp_rank);
}

// The global manifest: every tensor's global shape and the pieces of it each (tp, pp) position
// writes (the same shards the trainer builds, ParallelTrainer::chunk_shard).
nlohmann::json tensor_manifest(const core::ModelSpec& spec, const core::Layout& layout) {
  nlohmann::json tensors = nlohmann::json::object();
  for (int64_t p = 0; p < layout.pp; ++p) {
    for (int64_t t = 0; t < layout.tp; ++t) {
      for (int64_t c = 0; c < layout.vpp; ++c) {
        const ParamLayout shard(spec, ParallelTrainer::chunk_shard(layout, t, p, c));
        for (const ParamInfo& info : shard.params()) {
          if (info.duplicate) continue;
          nlohmann::json& entry = tensors[info.name];
          entry["global_shape"] = info.global_shape;
          entry["pieces"].push_back({{"part", part_name(t, p)},
                                     {"shape", info.shape},
                                     {"split_dim", info.split_dim},
                                     {"split_start", info.split_start}});
        }
      }
    }
  }
  return tensors;
}

// Every rank learns whether any rank failed (a rank that returned early would leave the others
// waiting in the next collective).
core::Status agree(comm::Communicator& world, const core::Status& mine, const std::string& what) {
  double failed = mine.ok() ? 0.0 : 1.0;
  LOOM_RETURN_IF_ERROR(world.all_reduce(&failed, 1, comm::ReduceOp::kMax));
  if (!mine.ok()) return mine;
  if (failed > 0) return core::error(core::ErrorCode::kIo, "{} failed on another rank", what);
  return core::ok_status();
}

}  // namespace

core::Status save_sharded_trainer_state(const TrainConfig& cfg, const core::ModelSpec& spec,
                                        const core::Layout& layout, ParallelTrainer& trainer,
                                        const comm::ProcessGroups& groups,
                                        comm::Communicator& world, const TrainerState& state,
                                        const std::string& why) {
  const std::string what = fmt::format("saving the checkpoint of iteration {} in --save {}",
                                       state.step, cfg.save);
  std::vector<float> params, exp_avg, exp_avg_sq;
  LOOM_RETURN_IF_ERROR(trainer.shard_state(&params, &exp_avg, &exp_avg_sq));
  // 1. Rank 0 opens the staging directory; the writers wait for it.
  core::Status opened = core::ok_status();
  if (world.rank() == 0) opened = ckpt::begin_shared_checkpoint(cfg.save, state.step).status();
  LOOM_RETURN_IF_ERROR(agree(world, opened.with_context(what), what));
  const std::string staging = ckpt::shared_checkpoint_staging(cfg.save, state.step);
  // 2. Data-parallel rank 0 of each (tp, pp) position writes its weights and moments.
  std::vector<double> record(5, 0.0);  // written?, model bytes, model crc, optimizer bytes, crc
  core::Status wrote = core::ok_status();
  if (groups.coords.dp == 0) {
    std::vector<ckpt::Tensor> model, optimizer;
    for (const ParamInfo& p : trainer.rank_layout().params()) {
      if (p.duplicate) continue;
      model.push_back(ckpt::make_f32_tensor(p.name, p.shape, params.data() + p.offset));
      optimizer.push_back(ckpt::make_f32_tensor("exp_avg." + p.name, p.shape, exp_avg.data() + p.offset));
      optimizer.push_back(
          ckpt::make_f32_tensor("exp_avg_sq." + p.name, p.shape, exp_avg_sq.data() + p.offset));
    }
    const std::string part = part_name(groups.coords.tp, groups.coords.pp);
    auto m = ckpt::write_checkpoint_shard(staging, state.step, "model-" + part, model);
    auto o = m.ok() ? ckpt::write_checkpoint_shard(staging, state.step, "optimizer-" + part, optimizer)
                    : core::Result<ckpt::ShardFile>(m.status());
    wrote = o.status();
    if (o.ok()) record = {1.0, double(m->bytes), double(m->crc32c), double(o->bytes), double(o->crc32c)};
  }
  LOOM_RETURN_IF_ERROR(agree(world, wrote.with_context(what), what));
  std::vector<double> records(5 * static_cast<size_t>(world.size()));
  LOOM_RETURN_IF_ERROR(world.all_gather(record.data(), records.data(), 5));
  // 3. Rank 0 commits: the manifest lists every file and maps every tensor onto them.
  core::Status committed = core::ok_status();
  if (world.rank() == 0) {
    std::vector<ckpt::ShardFile> files;
    for (int r = 0; r < world.size(); ++r) {
      const double* rec = records.data() + 5 * r;
      if (rec[0] != 1.0) continue;
      const core::RankCoords c = core::rank_coords(layout, r);
      const std::string part = part_name(c.tp, c.pp);
      files.push_back({"model-" + part, static_cast<int64_t>(rec[1]), static_cast<uint32_t>(rec[2])});
      files.push_back({"optimizer-" + part, static_cast<int64_t>(rec[3]), static_cast<uint32_t>(rec[4])});
    }
    nlohmann::json meta = trainer_checkpoint_meta(cfg, spec, state, why, kShardedFormat);
    meta["layout"] = layout.summary();
    meta["tensors"] = tensor_manifest(spec, layout);
    committed = ckpt::commit_shared_checkpoint(cfg.save, staging, state.step, files, meta,
                                               static_cast<int>(cfg.keep_last));
  }
  return agree(world, committed.with_context(what), what);
}

core::Status assemble_sharded(const ckpt::CheckpointData& d, const ParamLayout& full,
                              const std::string& prefix, const std::string& origin, float* flat) {
  const auto tensors = d.meta.find("tensors");
  if (tensors == d.meta.end() || !tensors->is_object()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "{}: a sharded checkpoint without its tensor manifest", origin);
  }
  const std::string file_prefix = prefix.empty() ? "model-" : "optimizer-";
  std::unordered_map<std::string, const ckpt::Tensor*> by_name;  // "<file>/<tensor>"
  for (const auto& [shard, list] : d.shards) {
    for (const ckpt::Tensor& t : list) by_name[shard + "/" + t.name] = &t;
  }
  for (const ParamInfo& f : full.params()) {
    const auto entry = tensors->find(f.name);
    if (entry == tensors->end()) {
      return core::error(core::ErrorCode::kInvalidArgument, "{}: tensor {} is not in the manifest",
                          origin, f.name);
    }
    int64_t covered = 0;
    for (const nlohmann::json& piece : entry->at("pieces")) {
      const std::string file = file_prefix + piece.at("part").get<std::string>();
      const auto t = by_name.find(file + "/" + prefix + f.name);
      if (t == by_name.end()) {
        return core::error(core::ErrorCode::kInvalidArgument, "{}: {} holds no tensor {}", origin,
                           file, prefix + f.name);
      }
      ParamInfo p;
      p.shape = piece.at("shape").get<std::vector<int64_t>>();
      p.size = 1;
      for (int64_t dim : p.shape) p.size *= dim;
      p.split_dim = piece.at("split_dim").get<int>();
      p.split_start = piece.at("split_start").get<int64_t>();
      if (t->second->shape != p.shape) {
        return core::error(core::ErrorCode::kInvalidArgument,
                           "{}: tensor {} in {} has shape {}, the manifest says {}", origin,
                           prefix + f.name, file, ckpt::shape_string(t->second->shape),
                           ckpt::shape_string(p.shape));
      }
      const std::vector<float> data = ckpt::as_f32(*t->second);
      for_each_run(p, f, [&](int64_t lo, int64_t fo, int64_t n) {
        std::copy(data.begin() + lo, data.begin() + lo + n, flat + fo);
        covered += n;
      });
    }
    if (covered != f.size) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "{}: the pieces of tensor {} cover {} of its {} elements", origin,
                         prefix + f.name, covered, f.size);
    }
  }
  return core::ok_status();
}

}  // namespace loom::train
