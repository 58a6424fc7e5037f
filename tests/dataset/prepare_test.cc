// `prepare_dataset`: text files (one document each) and JSON lines (one per line, a named field)
// become a Megatron dataset with the EOD after every document; empty documents are skipped; bad
// lines and missing fields are errors naming file:line.
#include "dataset/prepare.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dataset/indexed_dataset.h"
#include "dataset/metadata.h"

namespace loom::data {
namespace {

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("loom_ds_prep_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::vector<int32_t> bytes_plus_eod(const std::string& s) {
  std::vector<int32_t> ids(s.begin(), s.end());
  for (auto& id : ids) id = static_cast<uint8_t>(id);
  ids.push_back(256);
  return ids;
}

TEST(Prepare, TextFilesAreOneDocumentEachWithEod) {
  PrepareOptions o;
  o.inputs = {write_file("a.txt", "héllo\n"), write_file("empty.txt", ""), write_file("b.txt", "x y")};
  o.output_prefix = temp_path("text");
  auto r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->documents, 2);
  EXPECT_EQ(r->skipped_empty, 1);
  EXPECT_EQ(r->tokens, 7 + 1 + 3 + 1);
  EXPECT_EQ(r->dtype, "uint16");
  auto ds = IndexedDataset::open(o.output_prefix);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->document(0), bytes_plus_eod("héllo\n"));
  EXPECT_EQ(ds->document(1), bytes_plus_eod("x y"));
  auto meta = read_metadata(o.output_prefix);
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ((*meta)["vocab_size"], 257);
  EXPECT_EQ((*meta)["tokenizer"], "byte");
}

TEST(Prepare, JsonLinesUseTheNamedField) {
  PrepareOptions o;
  o.inputs = {write_file("d.jsonl", "{\"content\": \"ab\", \"id\": 1}\n\n{\"content\": \"c\\u00e9\"}\n")};
  o.format = "jsonl";
  o.json_key = "content";
  o.output_prefix = temp_path("jsonl");
  auto r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto ds = IndexedDataset::open(o.output_prefix);
  ASSERT_EQ(ds->num_documents(), 2);
  EXPECT_EQ(ds->document(0), bytes_plus_eod("ab"));
  EXPECT_EQ(ds->document(1), bytes_plus_eod("cé"));
}

TEST(Prepare, Gpt2TokenizerUsesItsEod) {
  const std::string dir = std::string(LOOM_TEST_DATA_DIR) + "/tokenizer";
  PrepareOptions o;
  o.inputs = {write_file("g.txt", "the lower")};
  o.tokenizer = {.kind = "gpt2", .vocab_path = dir + "/vocab.json", .merges_path = dir + "/merges.txt"};
  o.output_prefix = temp_path("gpt2");
  auto r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->eod_token, 266);
  auto ds = IndexedDataset::open(o.output_prefix);
  EXPECT_EQ(ds->document(0), (std::vector<int32_t>{83, 257, 263, 266}));  // see gpt2_tokenizer_test
}

TEST(Prepare, BadJsonLinesNameFileAndLine) {
  PrepareOptions o;
  o.format = "jsonl";
  o.output_prefix = temp_path("bad");
  o.inputs = {write_file("bad1.jsonl", "{\"text\": \"ok\"}\n{not json}\n")};
  auto r = prepare_dataset(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bad1.jsonl:2"), std::string::npos) << r.status().message();
  o.inputs = {write_file("bad2.jsonl", "{\"body\": \"ok\"}\n")};
  r = prepare_dataset(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bad2.jsonl:1: no field \"text\""), std::string::npos)
      << r.status().message();
  o.inputs = {write_file("bad3.jsonl", "{\"text\": 5}\n")};
  r = prepare_dataset(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a string"), std::string::npos) << r.status().message();
  EXPECT_FALSE(std::filesystem::exists(o.output_prefix + ".idx"));  // nothing half-written
}

TEST(Prepare, UnknownFormatAndNoDocumentsAreErrors) {
  PrepareOptions o;
  o.inputs = {write_file("only_empty.txt", "")};
  o.output_prefix = temp_path("none");
  o.format = "csv";
  auto r = prepare_dataset(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("text, jsonl"), std::string::npos);
  o.format = "text";
  r = prepare_dataset(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no non-empty documents"), std::string::npos);
}

}  // namespace
}  // namespace loom::data
