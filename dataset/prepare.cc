// Tokenize-and-write for `loom data prepare` (see prepare.h). Tested in
// tests/dataset/prepare_test.cc (text and jsonl inputs, bad lines, missing fields).
#include "dataset/prepare.h"

#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "dataset/indexed_dataset.h"
#include "dataset/metadata.h"

namespace loom::data {

using core::ErrorCode;

namespace {

constexpr int64_t kProgressEveryBytes = int64_t{16} << 20;

struct Run {
  Tokenizer& tok;
  IndexedDatasetWriter& writer;
  PrepareReport& report;
  const PrepareProgress& progress;
  std::vector<int32_t> ids;
  int64_t next_progress = kProgressEveryBytes;

  core::Status add(std::string_view text) {
    report.input_bytes += static_cast<int64_t>(text.size());
    if (text.empty()) {
      ++report.skipped_empty;
      return core::ok_status();
    }
    ids.clear();
    tok.encode(text, ids);
    ids.push_back(tok.eod_token());
    LOOM_RETURN_IF_ERROR(writer.add_document(ids));
    report.documents = writer.documents();
    report.tokens = writer.tokens();
    if (progress && report.input_bytes >= next_progress) {
      progress(report);
      next_progress = report.input_bytes + kProgressEveryBytes;
    }
    return core::ok_status();
  }
};

core::Status add_text_file(Run& run, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return core::error(ErrorCode::kNotFound, "--input {} cannot be opened", path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return run.add(text).with_context(path);
}

core::Status add_jsonl_file(Run& run, const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return core::error(ErrorCode::kNotFound, "--input {} cannot be opened", path);
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      return core::error(ErrorCode::kParse, "{}:{}: not a JSON object ({})", path, line_no, e.what());
    }
    if (!j.is_object() || !j.contains(key)) {
      return core::error(ErrorCode::kParse, "{}:{}: no field \"{}\" (--json-key names the field "
                         "holding the document text)", path, line_no, key);
    }
    if (!j[key].is_string()) {
      return core::error(ErrorCode::kParse, "{}:{}: field \"{}\" is {}, not a string", path, line_no,
                         key, j[key].type_name());
    }
    LOOM_RETURN_IF_ERROR(run.add(j[key].get_ref<const std::string&>())
                             .with_context(fmt::format("{}:{}", path, line_no)));
  }
  return core::ok_status();
}

}  // namespace

core::Result<PrepareReport> prepare_dataset(const PrepareOptions& o, const PrepareProgress& progress) {
  if (o.format != "text" && o.format != "jsonl") {
    return core::error(ErrorCode::kInvalidArgument, "--format '{}' is not known (allowed: text, "
                       "jsonl)", o.format);
  }
  if (o.inputs.empty()) return core::error(ErrorCode::kInvalidArgument, "--input: no files given");
  if (o.output_prefix.empty()) return core::error(ErrorCode::kInvalidArgument, "--output is empty");
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, make_tokenizer(o.tokenizer));
  const DType dtype = token_dtype_for_vocab(tok->vocab_size());
  LOOM_ASSIGN_OR_RETURN(IndexedDatasetWriter writer,
                        IndexedDatasetWriter::create(o.output_prefix, dtype));
  PrepareReport report;
  report.vocab_size = tok->vocab_size();
  report.eod_token = tok->eod_token();
  report.dtype = dtype_name(dtype);
  report.tokenizer = tok->name();
  Run run{*tok, writer, report, progress, {}};
  for (const auto& path : o.inputs) {
    if (o.format == "text") LOOM_RETURN_IF_ERROR(add_text_file(run, path));
    else LOOM_RETURN_IF_ERROR(add_jsonl_file(run, path, o.json_key));
  }
  if (report.documents == 0) {
    return core::error(ErrorCode::kInvalidArgument, "--input: no non-empty documents in {} file(s)",
                       o.inputs.size());
  }
  LOOM_RETURN_IF_ERROR(writer.finish());
  nlohmann::json meta = {{"generator", "loom data prepare"}, {"tokenizer", report.tokenizer},
                         {"vocab_size", report.vocab_size}, {"eod_token", report.eod_token},
                         {"documents", report.documents}, {"tokens", report.tokens},
                         {"dtype", report.dtype}, {"format", o.format}, {"inputs", o.inputs}};
  LOOM_RETURN_IF_ERROR(write_metadata(o.output_prefix, meta));
  return report;
}

}  // namespace loom::data
