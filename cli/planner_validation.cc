// Planner regret against measured layouts: see planner_validation.h.
#include "cli/planner_validation.h"

#include <algorithm>
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "cli/table.h"
#include "planner/search.h"
#include "simulator/step_validation.h"

namespace loom::cli {

namespace {

struct GroupOutcome {
  std::string key;
  int runs = 0;
  std::string chosen;
  double regret_pct = 0;
};

bool same_shape(const core::Layout& a, const core::Layout& b) {
  return a.tp == b.tp && a.pp == b.pp && a.dp == b.dp && a.mbs == b.mbs && a.vpp == b.vpp;
}

core::Result<std::optional<GroupOutcome>> choose(const std::vector<const sim::StepValidation*>& members,
                                                 sim::ProfileCache& profiles) {
  const sim::ValidationRun& first = *members.front()->run;
  plan::PlanRequest req;
  req.model = first.model;
  LOOM_ASSIGN_OR_RETURN(const core::ClusterProfile* cluster, profiles.get(first.cluster_profile));
  req.cluster = *cluster;
  req.cluster_name = first.cluster_profile;
  req.gpus = first.layout.gpus;
  req.gbs = first.layout.gbs;
  req.seq = first.layout.seq;
  req.framework = first.framework;
  req.precision = first.layout.precision;
  req.threads = 1;
  for (const auto* m : members) req.only.push_back(m->run->layout);
  LOOM_ASSIGN_OR_RETURN(plan::PlanResult result, plan::search_plans(req));
  if (result.top.empty()) return std::optional<GroupOutcome>{};
  const core::Layout& pick = result.top[0].layout;
  double best = 1e300, chosen = 0;
  for (const auto* m : members) {
    best = std::min(best, m->measured_s);
    if (same_shape(m->run->layout, pick) && m->run->layout.recompute == pick.recompute) chosen = m->measured_s;
  }
  if (chosen == 0) return std::optional<GroupOutcome>{};
  return std::optional<GroupOutcome>{GroupOutcome{members.front()->batch_group_key,
                                                  static_cast<int>(members.size()), pick.summary(),
                                                  100.0 * (chosen / best - 1.0)}};
}

}  // namespace

core::Status run_planner_validation(const std::vector<sim::ValidationRun>& runs, bool json) {
  LOOM_ASSIGN_OR_RETURN(std::vector<sim::StepValidation> steps, sim::validate_step_time(runs));
  std::map<std::string, std::vector<const sim::StepValidation*>> groups;
  for (const auto& s : steps) {
    if (s.status == sim::StepValidation::Status::kSimulated) groups[s.batch_group_key].push_back(&s);
  }
  sim::ProfileCache profiles;
  std::vector<GroupOutcome> outcomes;
  for (const auto& [key, members] : groups) {
    if (members.size() < 2) continue;
    LOOM_ASSIGN_OR_RETURN(auto outcome, choose(members, profiles));
    if (outcome) outcomes.push_back(*outcome);
  }
  double mean = 0, worst = 0;
  for (const auto& o : outcomes) mean += o.regret_pct, worst = std::max(worst, o.regret_pct);
  if (!outcomes.empty()) mean /= static_cast<double>(outcomes.size());
  if (json) {
    nlohmann::json g = nlohmann::json::array();
    for (const auto& o : outcomes) {
      g.push_back({{"group", o.key}, {"runs", o.runs}, {"chosen", o.chosen}, {"regret_pct", o.regret_pct}});
    }
    std::cout << nlohmann::json{{"groups", g}, {"mean_regret_pct", mean}, {"max_regret_pct", worst}}.dump(2)
              << "\n";
    return core::ok_status();
  }
  Table t;
  t.add_column("group", Table::Align::kLeft);
  t.add_column("runs");
  t.add_column("planner's choice", Table::Align::kLeft);
  t.add_column("regret %");
  for (const auto& o : outcomes) {
    t.add_row({o.key, std::to_string(o.runs), o.chosen, fmt::format("{:.1f}", o.regret_pct)});
  }
  std::cout << t.render()
            << fmt::format("\nplanner restricted to the measured layouts, {} groups (same model, GPUs "
                           "and global batch): mean regret {:.1f}%, max {:.1f}%\n",
                           outcomes.size(), mean, worst);
  return core::ok_status();
}

}  // namespace loom::cli
