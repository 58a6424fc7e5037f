// `loom data prepare | synth | info`: tokenize text into a Megatron indexed dataset, generate
// synthetic Markov data of known entropy rate, and describe a PREFIX.bin/.idx. Each prints a
// table or, with --json, one JSON object. Tested end to end in tests/dataset/data_command_test.cc.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "core/quantity.h"
#include "dataset/indexed_dataset.h"
#include "dataset/markov_source.h"
#include "dataset/metadata.h"
#include "dataset/prepare.h"

namespace loom::cli {

namespace {

struct DataArgs {
  data::PrepareOptions prepare;
  data::SynthOptions synth;
  std::string info_prefix;
  std::string synth_tokens;  // parsed by core::parse_count: "1000000", "10M", "2.5e6"
  bool json = false;
};

std::string render_pairs(const std::vector<std::pair<std::string, std::string>>& rows) {
  Table t;
  t.add_column("field", Table::Align::kLeft);
  t.add_column("value", Table::Align::kLeft);
  for (const auto& [k, v] : rows) t.add_row({k, v});
  return t.render();
}

core::Status run_prepare(const DataArgs& a) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto progress = [tty](const data::PrepareReport& r) {
    std::cerr << fmt::format("prepare: {:.1f} MiB read, {} documents, {} tokens{}",
                             static_cast<double>(r.input_bytes) / (1 << 20), r.documents, r.tokens,
                             tty ? "\r" : "\n");
  };
  LOOM_ASSIGN_OR_RETURN(data::PrepareReport r, data::prepare_dataset(a.prepare, progress));
  if (a.json) {
    nlohmann::json j = {{"prefix", a.prepare.output_prefix}, {"documents", r.documents},
                        {"skipped_empty", r.skipped_empty}, {"tokens", r.tokens},
                        {"input_bytes", r.input_bytes}, {"dtype", r.dtype},
                        {"tokenizer", r.tokenizer}, {"vocab_size", r.vocab_size},
                        {"eod_token", r.eod_token}};
    std::cout << j.dump(2) << "\n";
    return core::ok_status();
  }
  if (tty && r.input_bytes >= (16 << 20)) std::cerr << "\n";
  std::cout << render_pairs({{"output", a.prepare.output_prefix + ".{bin,idx,json}"},
                             {"documents", std::to_string(r.documents)},
                             {"skipped (empty)", std::to_string(r.skipped_empty)},
                             {"tokens (with EOD)", std::to_string(r.tokens)},
                             {"dtype", r.dtype},
                             {"tokenizer", fmt::format("{} (vocab {}, EOD {})", r.tokenizer,
                                                       r.vocab_size, r.eod_token)}});
  return core::ok_status();
}

core::Status run_synth(DataArgs& a) {
  LOOM_ASSIGN_OR_RETURN(double tokens, core::parse_count(a.synth_tokens, "--tokens"));
  if (tokens != std::floor(tokens) || tokens > 9e18) {
    return core::error(core::ErrorCode::kInvalidArgument, "--tokens {}: not a whole number of "
                       "tokens", a.synth_tokens);
  }
  a.synth.tokens = static_cast<int64_t>(tokens);
  LOOM_ASSIGN_OR_RETURN(data::SynthReport r, data::synthesize(a.synth));
  if (a.json) {
    nlohmann::json j = r.metadata;
    j["prefix"] = a.synth.prefix;
    std::cout << j.dump(2) << "\n";
    return core::ok_status();
  }
  const auto& m = r.metadata;
  std::cout << render_pairs(
      {{"output", a.synth.prefix + ".{bin,idx,json}"},
       {"documents", std::to_string(r.documents)},
       {"tokens", fmt::format("{} (+{} EOD)", r.tokens, r.tokens_with_eod - r.tokens)},
       {"vocab", fmt::format("{} + EOD {} = {}", a.synth.chain.vocab, a.synth.chain.vocab,
                             r.vocab_size)},
       {"dtype", m["dtype"].get<std::string>()},
       {"entropy rate", fmt::format("{:.6f} nats/token ({:.6f} bits)", r.entropy_rate_nats,
                                    m["entropy_rate_bits"].get<double>())},
       {"with EOD", fmt::format("{:.6f} nats/token", m["entropy_rate_with_eod_nats"].get<double>())}});
  return core::ok_status();
}

core::Status run_info(const DataArgs& a) {
  LOOM_ASSIGN_OR_RETURN(data::IndexedDataset ds, data::IndexedDataset::open(a.info_prefix));
  const auto& len = ds.lengths();
  const int64_t min_len = len.empty() ? 0 : *std::min_element(len.begin(), len.end());
  const int64_t max_len = len.empty() ? 0 : *std::max_element(len.begin(), len.end());
  const int64_t max_id = ds.max_token_id();
  auto meta = data::read_metadata(a.info_prefix);
  if (!meta.ok() && meta.status().code() != core::ErrorCode::kNotFound) return meta.status();
  if (a.json) {
    nlohmann::json j = {{"prefix", a.info_prefix}, {"documents", ds.num_documents()},
                        {"tokens", ds.num_tokens()}, {"dtype", data::dtype_name(ds.dtype())},
                        {"min_document_tokens", min_len}, {"max_document_tokens", max_len},
                        {"max_token_id", max_id}};
    if (meta.ok()) j["metadata"] = *meta;
    std::cout << j.dump(2) << "\n";
    return core::ok_status();
  }
  std::vector<std::pair<std::string, std::string>> rows = {
      {"documents", std::to_string(ds.num_documents())},
      {"tokens", std::to_string(ds.num_tokens())},
      {"dtype", data::dtype_name(ds.dtype())},
      {"document tokens", fmt::format("{} .. {}", min_len, max_len)},
      {"max token id", std::to_string(max_id)}};
  if (meta.ok()) {
    for (const char* k : {"generator", "tokenizer", "vocab_size", "eod_token", "entropy_rate_nats"}) {
      if (meta->contains(k)) rows.emplace_back(k, (*meta)[k].dump());
    }
  }
  std::cout << render_pairs(rows);
  return core::ok_status();
}

void add_prepare(CLI::App& data_cmd, DataArgs& a, CLI::App*& cmd) {
  cmd = data_cmd.add_subcommand("prepare", "tokenize text files into a Megatron indexed dataset "
                                "(PREFIX.bin/.idx) with an end-of-document token after each document");
  auto& p = a.prepare;
  cmd->add_option("--input", p.inputs, "input files (text: one document per file; jsonl: one per line)")
      ->required()->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", p.tokenizer.kind, "byte | gpt2")->capture_default_str();
  cmd->add_option("--vocab", p.tokenizer.vocab_path, "gpt2: vocab.json");
  cmd->add_option("--merges", p.tokenizer.merges_path, "gpt2: merges.txt");
  cmd->add_option("--output", p.output_prefix, "output PREFIX (writes PREFIX.bin, .idx, .json)")
      ->required();
  cmd->add_option("--format", p.format, "text | jsonl")->capture_default_str();
  cmd->add_option("--json-key", p.json_key, "jsonl: the field holding the text")->capture_default_str();
  cmd->add_flag("--json", a.json, "print a JSON object instead of a table");
}

void add_synth(CLI::App& data_cmd, DataArgs& a, CLI::App*& cmd) {
  cmd = data_cmd.add_subcommand("synth", "generate tokens from a random Markov source of known "
                                "entropy rate (Dirichlet rows), as PREFIX.bin/.idx + PREFIX.json");
  auto& s = a.synth;
  cmd->add_option("--vocab", s.chain.vocab, "V: chain tokens 0..V-1 (the EOD is id V)")->required();
  cmd->add_option("--tokens", a.synth_tokens, "chain tokens to write, e.g. 1000000 or 10M (EODs "
                  "not counted)")->required();
  cmd->add_option("--seed", s.chain.seed, "seed of the chain and the sample")->capture_default_str();
  cmd->add_option("--output", s.prefix, "output PREFIX")->required();
  cmd->add_option("--order", s.chain.order, "context length k (V^k states)")->capture_default_str();
  cmd->add_option("--concentration", s.chain.concentration,
                  "Dirichlet alpha of each row (small: near-deterministic, large: near-uniform)")
      ->capture_default_str();
  cmd->add_option("--doc-len", s.doc_len, "chain tokens per document")->capture_default_str();
  cmd->add_flag("--json", a.json, "print a JSON object instead of a table");
}

}  // namespace

CommandRunner register_data_command(CLI::App& app) {
  auto args = std::make_shared<DataArgs>();
  CLI::App* data_cmd = app.add_subcommand("data", "training data: prepare | synth | info");
  data_cmd->require_subcommand(1);
  CLI::App *prepare = nullptr, *synth = nullptr;
  add_prepare(*data_cmd, *args, prepare);
  add_synth(*data_cmd, *args, synth);
  CLI::App* info = data_cmd->add_subcommand("info", "describe PREFIX.bin/.idx (and PREFIX.json)");
  info->add_option("prefix", args->info_prefix, "dataset PREFIX")->required();
  info->add_flag("--json", args->json, "print a JSON object instead of a table");
  return [args, data_cmd, prepare, synth, info]() -> core::Status {
    if (!data_cmd->parsed()) return core::ok_status();
    if (prepare->parsed()) return run_prepare(*args);
    if (synth->parsed()) return run_synth(*args);
    if (info->parsed()) return run_info(*args);
    return core::ok_status();
  };
}

}  // namespace loom::cli
