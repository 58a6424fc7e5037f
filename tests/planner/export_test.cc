// Exports to Megatron-LM and DeepSpeed, checked by reading them back the way the tools do: the
// Megatron arguments are parsed into flags and values (and the pipeline layout string is
// expanded with Megatron-Core's own two regexes, pipeline_parallel_layer_layout.py
// parse_str_to_list) and every value is compared with the plan; the DeepSpeed JSON is parsed
// and its batch identity train_batch_size = micro x accumulation x dp is checked. Error cases
// check the message names the flag, the value and what is allowed.
#include "planner/export.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <numeric>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include "core/model_io.h"

namespace loom::plan {
namespace {

core::ModelSpec model(const char* name) {
  auto m = core::load_model(name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? *m : core::ModelSpec{};
}

core::Layout layout(int64_t tp, int64_t pp, int64_t dp, int zero, int64_t mbs, int64_t gbs) {
  core::Layout l;
  l.tp = tp;
  l.pp = pp;
  l.dp = dp;
  l.zero = zero;
  l.mbs = mbs;
  l.gbs = gbs;
  return l;
}

Plan make_plan(const core::ModelSpec& m, const core::Layout& l) {
  Plan p;
  p.model = m;
  p.cluster = "dgx-h100-80gb";
  auto resolved = core::resolve_layout(l, m);
  EXPECT_TRUE(resolved.ok()) << resolved.status().message();
  if (resolved.ok()) p.layout = *resolved;
  return p;
}

// The BLOOM-176B layout of bigscience tr11 (TP4 PP12 DP8 ZeRO-1, mbs 2, gbs 2048, 5,6x10,5).
core::Layout bloom_layout() {
  core::Layout l = layout(4, 12, 8, 1, 2, 2048);
  l.recompute = core::Recompute::kFull;
  l.partition_method = core::PartitionMethod::kEmbeddingAsLayer;
  l.partition = {5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5};
  return l;
}

// Llama 2 70B on 128 GPUs: TP8 PP4 DP4, two chunks per rank, sequence parallel, selective.
core::Layout llama70b_interleaved() {
  core::Layout l = layout(8, 4, 4, 1, 1, 512);
  l.vpp = 2;
  l.sp = true;
  l.recompute = core::Recompute::kSelective;
  return l;
}

// --- Reading Megatron arguments back -------------------------------------------------------

struct ParsedArgs {
  std::map<std::string, std::string> values;  // --flag value
  std::set<std::string> flags;                // boolean --flag
  bool has(const std::string& f) const { return flags.count(f) > 0 || values.count(f) > 0; }
  std::string str(const std::string& f) const {
    auto it = values.find(f);
    return it == values.end() ? "<missing " + f + ">" : it->second;
  }
  int64_t num(const std::string& f) const {
    auto it = values.find(f);
    return it == values.end() ? -1 : std::stoll(it->second);
  }
};

// argparse's view: "--x v" is an option with a value, a "--x" followed by another option is a
// store_true flag. Values never start with "--" in these exports.
ParsedArgs parse_args(const std::vector<std::string>& argv) {
  ParsedArgs a;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& tok = argv[i];
    EXPECT_EQ(tok.rfind("--", 0), 0u) << "stray value '" << tok << "'";
    EXPECT_FALSE(a.has(tok)) << "flag given twice: " << tok;
    if (i + 1 < argv.size() && argv[i + 1].rfind("--", 0) != 0) {
      a.values[tok] = argv[++i];
    } else {
      a.flags.insert(tok);
    }
  }
  return a;
}

std::vector<std::string> megatron_args(const Plan& p) {
  auto r = megatron_arguments(p);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : std::vector<std::string>{};
}

// Megatron-Core's parse_str_to_list: drop commas, unroll "(...)*n", then "x*n", split on '|'.
std::vector<std::string> expand_layout(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), ','), s.end());
  for (const std::regex& re : {std::regex(R"(\(([^)]+)\)\*(\d+))"), std::regex(R"((.)\*(\d+))")}) {
    std::smatch m;
    std::string out;
    auto begin = s.cbegin();
    while (std::regex_search(begin, s.cend(), m, re)) {
      out.append(begin, m[0].first);
      for (int k = 0; k < std::stoi(m[2].str()); ++k) out += m[1].str();
      begin = m[0].second;
    }
    out.append(begin, s.cend());
    s = out;
  }
  std::vector<std::string> stages(1);
  for (char c : s) {
    if (c == '|') {
      stages.emplace_back();
    } else {
      stages.back().push_back(c);
    }
  }
  return stages;
}

// Blocks per (virtual) stage as Megatron derives them from the layout string.
std::vector<int64_t> partition_from_layout(const std::string& text) {
  const auto stages = expand_layout(text);
  std::vector<int64_t> blocks;
  for (size_t c = 0; c < stages.size(); ++c) {
    const std::string& st = stages[c];
    EXPECT_EQ(st.find_first_not_of("EtL"), std::string::npos) << st;
    EXPECT_EQ(st.find('E') != std::string::npos, c == 0) << "embedding must be first: " << text;
    EXPECT_EQ(st.find('L') != std::string::npos, c + 1 == stages.size()) << "loss last: " << text;
    blocks.push_back(std::count(st.begin(), st.end(), 't'));
  }
  return blocks;
}

// Blocks per (virtual) stage as Megatron places them for these arguments.
std::vector<int64_t> partition_from_args(const ParsedArgs& a) {
  const int64_t layers = a.num("--num-layers"), pp = a.num("--pipeline-model-parallel-size");
  if (a.has("--pipeline-model-parallel-layout")) {
    return partition_from_layout(a.str("--pipeline-model-parallel-layout"));
  }
  if (a.has("--num-layers-per-virtual-pipeline-stage")) {
    const int64_t n = a.num("--num-layers-per-virtual-pipeline-stage");
    EXPECT_EQ(layers % (pp * n), 0);
    return std::vector<int64_t>(layers / n, n);
  }
  const bool first = a.has("--decoder-first-pipeline-num-layers");
  const bool last = a.has("--decoder-last-pipeline-num-layers");
  const int64_t f = first ? a.num("--decoder-first-pipeline-num-layers") : 0;
  const int64_t l = last ? a.num("--decoder-last-pipeline-num-layers") : 0;
  const int64_t middle_stages = pp - first - last;
  const int64_t middle = middle_stages > 0 ? (layers - f - l) / middle_stages : 0;
  EXPECT_EQ(middle_stages > 0 ? (layers - f - l) % middle_stages : 0, 0);
  std::vector<int64_t> out(pp, middle);
  if (first) out.front() = f;
  if (last) out.back() = l;
  return out;
}

// Every value Megatron reads from these arguments against the plan.
void expect_megatron_matches(const Plan& p, const ParsedArgs& a) {
  const auto& m = p.model;
  const auto& l = p.layout;
  EXPECT_EQ(a.num("--tensor-model-parallel-size"), l.tp);
  EXPECT_EQ(a.num("--pipeline-model-parallel-size"), l.pp);
  EXPECT_EQ(a.num("--micro-batch-size"), l.mbs);
  EXPECT_EQ(a.num("--global-batch-size"), l.gbs);
  EXPECT_EQ(a.num("--num-layers"), m.num_layers);
  EXPECT_EQ(a.num("--hidden-size"), m.hidden_size);
  EXPECT_EQ(a.num("--num-attention-heads"), m.num_heads);
  EXPECT_EQ(a.num("--ffn-hidden-size"), m.ffn_hidden_size);
  EXPECT_EQ(a.num("--seq-length"), l.seq);
  EXPECT_GE(a.num("--max-position-embeddings"), l.seq);
  const bool gqa = m.num_kv_heads != m.num_heads;
  EXPECT_EQ(a.has("--group-query-attention"), gqa);
  EXPECT_EQ(gqa ? a.num("--num-query-groups") : m.num_heads, m.num_kv_heads);
  EXPECT_EQ(a.has("--sequence-parallel"), l.sp);
  EXPECT_EQ(a.has("--use-distributed-optimizer"), l.zero >= 1);
  const char* granularity[] = {"<missing --recompute-granularity>", "selective", "full"};
  EXPECT_EQ(a.str("--recompute-granularity"), granularity[static_cast<int>(l.recompute)]);
  EXPECT_EQ(a.has("--recompute-method"), l.recompute == core::Recompute::kFull);
  EXPECT_EQ(a.has("--bf16"), l.precision == core::Precision::kBf16);
  EXPECT_EQ(a.has("--swiglu"), m.mlp == core::MlpKind::kSwiGlu);
  EXPECT_EQ(a.str("--normalization"), m.norm == core::NormKind::kRmsNorm ? "RMSNorm" : "LayerNorm");
  EXPECT_EQ(a.has("--untie-embeddings-and-output-weights"), !m.tied_embeddings);
  // Megatron's padding (tokenizer.py _vocab_size_with_padding) lands on the plan's vocabulary.
  const int64_t multiple = a.num("--make-vocab-size-divisible-by") * l.tp;
  EXPECT_EQ((m.vocab_size + multiple - 1) / multiple * multiple, m.padded_vocab(l.tp));
  EXPECT_EQ(partition_from_args(a), l.partition);
  const int64_t chunks = static_cast<int64_t>(partition_from_args(a).size());
  EXPECT_EQ(chunks, l.pp * l.vpp) << "virtual stages Megatron derives";
}

// --- Megatron ----------------------------------------------------------------------------------

TEST(MegatronExport, Llama70bInterleavedSequenceParallelSelectiveReadsBack) {
  const Plan p = make_plan(model("llama2-70b"), llama70b_interleaved());
  const ParsedArgs a = parse_args(megatron_args(p));
  expect_megatron_matches(p, a);
  EXPECT_EQ(a.num("--num-layers-per-virtual-pipeline-stage"), 10);  // 80 / (4 x 2)
  EXPECT_EQ(a.num("--num-query-groups"), 8);
  EXPECT_EQ(a.str("--position-embedding-type"), "rope");
  EXPECT_EQ(a.num("--rotary-base"), 10000);
  EXPECT_TRUE(a.flags.count("--disable-bias-linear"));
  EXPECT_FALSE(a.has("--add-qkv-bias"));
  EXPECT_FALSE(a.has("--pipeline-model-parallel-layout"));
  EXPECT_FALSE(a.has("--decoder-first-pipeline-num-layers"));
}

// BLOOM's shape and split with learned positions and no embedding LayerNorm (what Megatron-Core
// can build): only the ends differ, so the split is two flags.
TEST(MegatronExport, BloomSplitIsFirstAndLastStageFlags) {
  core::ModelSpec m = model("bloom-176b");
  m.position = core::PositionKind::kLearned;
  m.embedding_norm = false;
  const Plan p = make_plan(m, bloom_layout());
  const ParsedArgs a = parse_args(megatron_args(p));
  expect_megatron_matches(p, a);
  EXPECT_EQ(a.num("--decoder-first-pipeline-num-layers"), 5);
  EXPECT_EQ(a.num("--decoder-last-pipeline-num-layers"), 5);
  EXPECT_EQ(a.str("--recompute-method"), "uniform");
  EXPECT_EQ(a.num("--recompute-num-layers"), 1);
  EXPECT_EQ(a.num("--make-vocab-size-divisible-by"), 62720);  // 250880 / tp 4
  EXPECT_FALSE(a.has("--disable-bias-linear"));
  EXPECT_EQ(a.str("--position-embedding-type"), "learned_absolute");
  EXPECT_EQ(a.num("--max-position-embeddings"), 2048);
}

TEST(MegatronExport, UnevenMiddleStagesNeedTheLayoutString) {
  core::Layout l = layout(8, 4, 4, 1, 1, 512);
  l.partition = {18, 21, 22, 19};
  const Plan p = make_plan(model("llama2-70b"), l);
  const ParsedArgs a = parse_args(megatron_args(p));
  expect_megatron_matches(p, a);
  EXPECT_EQ(a.str("--pipeline-model-parallel-layout"), "Et*18|t*21|t*22|t*19L");
  EXPECT_FALSE(a.has("--decoder-first-pipeline-num-layers"));
  EXPECT_FALSE(a.has("--num-layers-per-virtual-pipeline-stage"));
}

// --num-layers-per-virtual-pipeline-stage needs equal chunks; Megatron-Core's layout string
// takes pp x vpp stages (its length sets vpp), so unequal chunks are spelled out instead.
TEST(MegatronExport, UnequalInterleavedChunksUseTheLayoutString) {
  core::Layout l = llama70b_interleaved();
  l.partition = {9, 10, 10, 10, 10, 10, 10, 11};
  const Plan p = make_plan(model("llama2-70b"), l);
  const ParsedArgs a = parse_args(megatron_args(p));
  expect_megatron_matches(p, a);
  EXPECT_EQ(a.str("--pipeline-model-parallel-layout"), "Et*9|(t*10|)*6,t*11L");
  EXPECT_FALSE(a.has("--num-layers-per-virtual-pipeline-stage"));
}

TEST(MegatronExport, ZeroTwoAndThreeWithoutPipelineAreMegatronFsdp) {
  for (int zero : {2, 3}) {
    const Plan p = make_plan(model("llama3-8b"), layout(2, 1, 32, zero, 1, 256));
    const ParsedArgs a = parse_args(megatron_args(p));
    expect_megatron_matches(p, a);
    EXPECT_TRUE(a.flags.count("--use-megatron-fsdp"));
    EXPECT_EQ(a.str("--data-parallel-sharding-strategy"),
              zero == 2 ? "optim_grads" : "optim_grads_params");
    EXPECT_EQ(a.str("--ckpt-format"), "fsdp_dtensor");
    EXPECT_TRUE(a.flags.count("--no-gradient-accumulation-fusion"));
    EXPECT_EQ(a.num("--rotary-base"), 500000);
  }
}

TEST(MegatronExport, QwenKeepsOnlyTheQkvBiasAndItsRopeBase) {
  const Plan p = make_plan(model("qwen2-7b"), layout(4, 1, 2, 1, 1, 64));
  const ParsedArgs a = parse_args(megatron_args(p));
  expect_megatron_matches(p, a);
  EXPECT_TRUE(a.flags.count("--disable-bias-linear"));
  EXPECT_TRUE(a.flags.count("--add-qkv-bias"));
  EXPECT_EQ(a.num("--rotary-base"), 1000000);
  EXPECT_DOUBLE_EQ(std::stod(a.str("--norm-epsilon")), 1e-6);
}

TEST(MegatronExport, NeoxPartialRotaryIsRotaryPercent) {
  const Plan p = make_plan(model("gpt-neox-20b"), layout(2, 1, 4, 0, 1, 64));
  const ParsedArgs a = parse_args(megatron_args(p));
  expect_megatron_matches(p, a);
  EXPECT_DOUBLE_EQ(std::stod(a.str("--rotary-percent")), 0.25);
  EXPECT_FALSE(a.has("--disable-bias-linear"));
  EXPECT_FALSE(a.has("--use-distributed-optimizer"));
}

void expect_error(const core::Status& st, std::initializer_list<const char*> fragments) {
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), core::ErrorCode::kInvalidArgument);
  for (const char* f : fragments) {
    EXPECT_NE(st.message().find(f), std::string::npos) << "missing '" << f << "' in: "
                                                       << st.message();
  }
}

TEST(MegatronExport, ZeroThreeWithPipelineIsRefusedNamingZero) {
  const Plan p = make_plan(model("llama2-70b"), layout(8, 2, 4, 3, 1, 64));
  expect_error(megatron_arguments(p).status(), {"--zero 3", "pp 2", "allowed: --zero 0 or 1"});
}

TEST(MegatronExport, AlibiAndEmbeddingNormAreRefusedWithTheReason) {
  const Plan p = make_plan(model("bloom-176b"), bloom_layout());
  expect_error(megatron_arguments(p).status(),
               {"bloom-176b", "position 'alibi'", "learned_absolute, rope", "embedding_norm",
                "--format deepspeed"});
}

TEST(MegatronExport, BiasesMegatronCannotBuildAreRefused) {
  core::ModelSpec m = model("llama2-7b");
  m.out_bias = true;  // attention-output bias alone: no Megatron flag gives that
  const Plan p = make_plan(m, layout(1, 1, 8, 1, 1, 64));
  expect_error(megatron_arguments(p).status(), {"out_bias=true", "--disable-bias-linear"});
}

// --- DeepSpeed ---------------------------------------------------------------------------------

nlohmann::json ds_config(const Plan& p) {
  auto r = deepspeed_config(p, "/runs/bloom/ds_config.json");
  EXPECT_TRUE(r.ok()) << r.status().message();
  // Read back from the text, as DeepSpeed reads the file.
  return r.ok() ? nlohmann::json::parse(r->dump(2)) : nlohmann::json::object();
}

TEST(DeepSpeedExport, BloomConfigMatchesThePlan) {
  const Plan p = make_plan(model("bloom-176b"), bloom_layout());
  const nlohmann::json j = ds_config(p);
  const int64_t mbs = j.value("train_micro_batch_size_per_gpu", -1);
  const int64_t accum = j.value("gradient_accumulation_steps", -1);
  EXPECT_EQ(j.value("train_batch_size", -1), mbs * accum * p.layout.dp);
  EXPECT_EQ(j.value("train_batch_size", -1), 2048);
  EXPECT_EQ(mbs, 2);
  EXPECT_EQ(accum, 128);
  EXPECT_EQ(j.at("zero_optimization").value("stage", -1), 1);
  EXPECT_TRUE(j.at("bf16").value("enabled", false));
  EXPECT_FALSE(j.at("fp16").value("enabled", true));
  EXPECT_DOUBLE_EQ(j.value("gradient_clipping", 0.0), 1.0);
  EXPECT_EQ(j.at("pipeline").value("activation_checkpoint_interval", -1), 1);
  const ParsedArgs a = parse_args(j.at("megatron_deepspeed_arguments").get<std::vector<std::string>>());
  EXPECT_EQ(a.str("--pp-partition-method"), "type:transformer|embedding");
  EXPECT_EQ(a.num("--tensor-model-parallel-size"), 4);
  EXPECT_EQ(a.num("--pipeline-model-parallel-size"), 12);
  EXPECT_EQ(a.num("--zero-stage"), 1);
  EXPECT_EQ(a.num("--micro-batch-size"), 2);
  EXPECT_EQ(a.num("--global-batch-size"), 2048);
  EXPECT_EQ(a.num("--seq-length"), 2048);
  EXPECT_TRUE(a.flags.count("--checkpoint-activations"));
  EXPECT_TRUE(a.flags.count("--deepspeed"));
  EXPECT_EQ(a.str("--deepspeed_config"), "/runs/bloom/ds_config.json");
}

TEST(DeepSpeedExport, UniformPartitionIsTypeTransformer) {
  const Plan p = make_plan(model("llama2-70b"), layout(8, 4, 4, 0, 1, 512));
  const nlohmann::json j = ds_config(p);
  const ParsedArgs a = parse_args(j.at("megatron_deepspeed_arguments").get<std::vector<std::string>>());
  EXPECT_EQ(a.str("--pp-partition-method"), "type:transformer");
  EXPECT_EQ(j.at("pipeline").value("activation_checkpoint_interval", -1), 0);
  EXPECT_EQ(j.at("zero_optimization"), nlohmann::json({{"stage", 0}}));
}

TEST(DeepSpeedExport, ZeroThreeWithoutPipelineWritesTheStage3Limits) {
  const Plan p = make_plan(model("llama3-8b"), layout(1, 1, 64, 3, 2, 512));
  const nlohmann::json j = ds_config(p);
  EXPECT_EQ(j.value("train_batch_size", -1),
            j.value("train_micro_batch_size_per_gpu", -1) *
                j.value("gradient_accumulation_steps", -1) * 64);
  EXPECT_EQ(j.value("gradient_accumulation_steps", -1), 4);
  const auto& z = j.at("zero_optimization");
  EXPECT_EQ(z.value("stage", -1), 3);
  EXPECT_TRUE(z.value("overlap_comm", false));
  EXPECT_EQ(z.value("stage3_max_live_parameters", int64_t{0}), 1000000000);
  EXPECT_EQ(z.value("reduce_bucket_size", int64_t{0}), 500000000);
  EXPECT_FALSE(j.contains("pipeline"));
  const ParsedArgs a = parse_args(j.at("megatron_deepspeed_arguments").get<std::vector<std::string>>());
  EXPECT_FALSE(a.has("--pp-partition-method"));
  EXPECT_EQ(a.num("--zero-stage"), 3);
}

TEST(DeepSpeedExport, ZeroTwoWithPipelineIsRefused) {
  const Plan p = make_plan(model("llama2-70b"), layout(8, 2, 4, 2, 1, 64));
  expect_error(deepspeed_config(p).status(),
               {"--zero 2", "pp 2", "ZeRO-2 and ZeRO-3", "allowed: --zero 0 or 1"});
}

TEST(DeepSpeedExport, InterleavingIsRefused) {
  const Plan p = make_plan(model("llama2-70b"), [] {
    core::Layout l = llama70b_interleaved();
    l.sp = false;
    l.recompute = core::Recompute::kFull;
    return l;
  }());
  expect_error(deepspeed_config(p).status(), {"--vpp 2", "interleaved", "allowed: --vpp 1"});
}

TEST(DeepSpeedExport, PartitionNoDeepSpeedMethodGivesIsRefused) {
  core::Layout l = layout(8, 4, 4, 1, 1, 512);
  l.partition = {18, 21, 22, 19};
  const Plan p = make_plan(model("llama2-70b"), l);
  expect_error(deepspeed_config(p).status(),
               {"--partition 18,21,22,19", "20,20,20,20 (type:transformer)",
                "19,21,21,19 (type:transformer|embedding)"});
}

// --- Printing ----------------------------------------------------------------------------------

// What /bin/sh makes of `text` as the arguments of printf '%s\n'.
std::vector<std::string> shell_words(const std::string& text) {
  char path[] = "/tmp/loom_export_testXXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "printf '%s\\n' " << text << "\n";
  std::vector<std::string> words;
  FILE* pipe = popen((std::string("/bin/sh ") + path).c_str(), "r");
  char line[4096];
  while (pipe && fgets(line, sizeof line, pipe)) {
    words.emplace_back(line);
    words.back().pop_back();  // the newline printf added
  }
  if (pipe) pclose(pipe);
  std::remove(path);
  std::remove(path);
  return words;
}

TEST(ShellQuote, TheShellReadsTheArgumentsBackUnchanged) {
  const std::vector<std::string> args = {"--pipeline-model-parallel-layout",
                                         "Et*9|(t*10|)*6,t*11L", "--pp-partition-method",
                                         "type:transformer|embedding", "--name", "it's $HOME",
                                         "--empty", "", "--sequence-parallel"};
  EXPECT_EQ(shell_words(shell_quote_join(args)), args);
  EXPECT_EQ(shell_words(shell_continuation_lines(args)), args);
  EXPECT_EQ(shell_quote("--seq-length"), "--seq-length");
  EXPECT_EQ(shell_quote("Et*9|t*11L"), "'Et*9|t*11L'");
}

TEST(ShellQuote, ContinuationPutsEachOptionOnItsLine) {
  EXPECT_EQ(shell_continuation_lines({"--tensor-model-parallel-size", "8", "--sequence-parallel",
                                      "--seq-length", "4096"}),
            "  --tensor-model-parallel-size 8 \\\n  --sequence-parallel \\\n  --seq-length 4096");
}

}  // namespace
}  // namespace loom::plan
