// `loom data prepare`: tokenizes text files (one document per file) or JSON-lines files (one
// document per line, text in a named field) and writes a Megatron indexed dataset with the
// end-of-document token appended to every document (as preprocess_data.py --append-eod), plus
// PREFIX.json with the tokenizer and vocabulary size. Tested in tests/dataset/prepare_test.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "dataset/tokenizer.h"

namespace loom::data {

struct PrepareOptions {
  std::vector<std::string> inputs;
  TokenizerOptions tokenizer;
  std::string output_prefix;
  std::string format = "text";    // text | jsonl
  std::string json_key = "text";  // jsonl: the field holding the document
};

struct PrepareReport {
  int64_t documents = 0;
  int64_t skipped_empty = 0;  // empty documents are dropped, as Megatron's preprocess_data.py
  int64_t tokens = 0;         // including one EOD per document
  int64_t input_bytes = 0;
  int64_t vocab_size = 0;
  int32_t eod_token = 0;
  std::string dtype, tokenizer;
};

// Called every ~16 MiB of input with the report so far (for progress lines on stderr).
using PrepareProgress = std::function<void(const PrepareReport&)>;

core::Result<PrepareReport> prepare_dataset(const PrepareOptions& options,
                                            const PrepareProgress& progress = nullptr);

}  // namespace loom::data
