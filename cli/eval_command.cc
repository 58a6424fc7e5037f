// `loom eval`: mean next-token loss and perplexity of a trained checkpoint on the held-out
// documents of an indexed dataset, or on one whitespace-separated list of token ids
// (--tokens FILE; --dump-logits writes that sequence's logits as a NumPy .npy file, which the
// Hugging Face export test compares with an independent NumPy forward pass).
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "trainer/batch_source.h"
#include "trainer/checkpoint_model.h"
#include "trainer/transformer.h"

namespace loom::cli {

namespace {

struct EvalArgs {
  std::string checkpoint, data, tokens, dump_logits;
  int64_t seq = 0, mbs = 0, max_batches = 64;
  bool json = false;
};

core::Result<std::vector<int32_t>> read_token_file(const std::string& path, int64_t vocab) {
  std::ifstream in(path);
  if (!in) return core::error(core::ErrorCode::kNotFound, "--tokens {}: cannot open", path);
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v >= vocab) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--tokens {}: '{}' (token {}) is not a token id in 0..{}", path, word,
                         ids.size(), vocab - 1);
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.size() < 2) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--tokens {}: {} token ids; at least 2 are needed (one prediction)", path,
                       ids.size());
  }
  return ids;
}

// NumPy .npy version 1.0 (numpy.lib.format): magic, header dict padded to 64 bytes, raw data.
core::Status write_npy(const std::string& path, const std::vector<float>& data, int64_t rows,
                       int64_t cols) {
  std::string header = fmt::format(
      "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows, cols);
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(float)));
  if (!out) return core::error(core::ErrorCode::kIo, "--dump-logits {}: write failed", path);
  return core::ok_status();
}

core::Status run_eval(const EvalArgs& a) {
  if (a.data.empty() == a.tokens.empty()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "give exactly one of --data PREFIX and --tokens FILE");
  }
  std::vector<std::string> warnings;
  LOOM_ASSIGN_OR_RETURN(train::CheckpointModel m,
                        train::load_checkpoint_model(a.checkpoint, &warnings));
  for (const auto& w : warnings) std::cerr << "warning: " << w << "\n";
  train::Transformer<float> model(m.spec, core::Recompute::kNone);
  double loss_sum = 0.0;
  int64_t count = 0;
  if (!a.tokens.empty()) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int32_t> ids, read_token_file(a.tokens, m.spec.vocab_size));
    const int64_t s = static_cast<int64_t>(ids.size()) - 1;
    loss_sum = model.forward_loss(m.params.data(), ids.data(), 1, s);
    count = s;
    if (!a.dump_logits.empty()) {
      const auto logits = model.forward_logits(m.params.data(), ids.data(), 1, s + 1);
      LOOM_RETURN_IF_ERROR(write_npy(a.dump_logits, logits, s + 1, m.spec.padded_vocab(1)));
    }
  } else {
    const int64_t seq = a.seq > 0 ? a.seq : m.config.value("seq", int64_t{128});
    const int64_t mbs = a.mbs > 0 ? a.mbs : m.config.value("mbs", int64_t{1});
    LOOM_ASSIGN_OR_RETURN(
        std::unique_ptr<train::BatchSource> src,
        train::open_dataset_source(a.data, seq, m.config.value("seed", uint64_t{1234}),
                                   m.config.value("train_fraction", 0.99)));
    for (const auto& b : src->validation(mbs, a.max_batches)) {
      const int64_t rows = static_cast<int64_t>(b.size()) / (seq + 1);
      loss_sum += model.forward_loss(m.params.data(), b.data(), rows, seq);
      count += rows * seq;
    }
    if (count == 0) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--data {}: no validation window of {} tokens", a.data, seq + 1);
    }
  }
  const double loss = loss_sum / static_cast<double>(count);
  if (a.json) {
    std::cout << nlohmann::json{{"loss", loss}, {"perplexity", std::exp(loss)},
                                {"tokens", count}, {"step", m.step}, {"model", m.spec.name}}
                     .dump(2)
              << "\n";
    return core::ok_status();
  }
  Table t;
  for (const char* h : {"model", "iteration", "tokens", "loss", "perplexity"}) t.add_column(h);
  t.add_row({m.spec.name, std::to_string(m.step), std::to_string(count),
             fmt::format("{:.5f}", loss), fmt::format("{:.3f}", std::exp(loss))});
  std::cout << t.render();
  return core::ok_status();
}

}  // namespace

CommandRunner register_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Mean next-token loss and perplexity of a checkpoint on a dataset's held-out "
              "documents or on a list of token ids");
  sub->add_option("--checkpoint", args->checkpoint,
                  "checkpoint directory, or a --save root (its newest complete checkpoint)")
      ->required();
  sub->add_option("--data", args->data, "indexed dataset prefix (its held-out documents)");
  sub->add_option("--tokens", args->tokens, "file of whitespace-separated token ids");
  sub->add_option("--seq", args->seq, "window length (default: the run's --seq)");
  sub->add_option("--mbs", args->mbs, "sequences per forward pass (default: the run's --mbs)");
  sub->add_option("--max-batches", args->max_batches, "validation batches at most")
      ->capture_default_str();
  sub->add_option("--dump-logits", args->dump_logits,
                  "with --tokens: write the logits [tokens, padded vocab] as float32 .npy");
  sub->add_flag("--json", args->json, "JSON output: loss, perplexity, tokens");
  return [sub, args]() -> core::Status {
    if (!sub->parsed()) return core::ok_status();
    return run_eval(*args);
  };
}

}  // namespace loom::cli
