// scripts/hf_reference_forward.py where a closed form exists: ALiBi slopes (Press et al.) for
// 4, 8, 12 heads; 0 layers: logits = norm(embed[token]) @ head^T; 1 token: softmax = 1, so each
// block is x + Wo(Wv n(x)) + MLP, computed here from Loom's parameter names (checks the export
// mapping, BLOOM's fused QKV and bf16 reading); sharded == unsharded; prefix rows are causal.
// Skips when no python3 with numpy is found (LOOM_PYTHON, /usr/bin/python3, python3).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include <gtest/gtest.h>

#include "checkpoint/hf_export.h"

#include "tests/checkpoint/python_util.h"

namespace loom::ckpt {
namespace {

namespace fs = std::filesystem;
using Vec = std::vector<double>;

const std::string kScript = std::string(LOOM_SOURCE_DIR) + "/scripts/hf_reference_forward.py";

using test_util::python_with_numpy;
using test_util::run_capture;

class ReferenceForward : public ::testing::Test {
 protected:
  void SetUp() override {
    py_ = python_with_numpy();
    if (py_.empty()) GTEST_SKIP() << "no python3 with numpy (set LOOM_PYTHON)";
    dir_ = fs::temp_directory_path() / ("loom_ref_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Runs the script and returns the logits [T, V] it saved (float64 .npy, C order).
  std::vector<Vec> logits(const fs::path& model, const std::string& tokens) {
    const fs::path out = dir_ / "logits.npy";
    int status = 0;
    const std::string log = run_capture(py_ + " " + kScript + " --model " + model.string() +
                                            " --tokens '" + tokens + "' --out " + out.string() +
                                            " 2>&1",
                                        &status);
    EXPECT_EQ(status, 0) << log;
    return read_npy_f8(out);
  }

  static std::vector<Vec> read_npy_f8(const fs::path& path) {
    std::ifstream f(path, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(f)), {});
    if (all.size() < 10 || all.compare(0, 6, "\x93NUMPY") != 0) return {};
    const bool v1 = all[6] == 1;  // format 1.0: 2-byte header length; 2.0/3.0: 4 bytes
    size_t hlen = static_cast<uint8_t>(all[8]) | static_cast<size_t>(static_cast<uint8_t>(all[9])) << 8;
    size_t start = 10;
    if (!v1) {
      hlen = 0;
      for (int i = 3; i >= 0; --i) hlen = hlen << 8 | static_cast<uint8_t>(all[8 + static_cast<size_t>(i)]);
      start = 12;
    }
    const std::string header = all.substr(start, hlen);
    std::smatch m;
    const bool ok = std::regex_search(header, m, std::regex(R"('shape': \((\d+), (\d+)\))")) &&
                    header.find("'<f8'") != std::string::npos &&
                    header.find("'fortran_order': False") != std::string::npos;
    EXPECT_TRUE(ok) << header;
    if (!ok) return {};
    const size_t rows = std::stoul(m[1].str()), cols = std::stoul(m[2].str());
    std::vector<Vec> out(rows, Vec(cols));
    const char* data = all.data() + start + hlen;
    for (size_t r = 0; r < rows; ++r) std::memcpy(out[r].data(), data + r * cols * 8, cols * 8);
    return out;
  }

  std::string py_;
  fs::path dir_;
};

void expect_close(const std::vector<Vec>& got, const std::vector<Vec>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t t = 0; t < want.size(); ++t) {
    ASSERT_EQ(got[t].size(), want[t].size());
    for (size_t v = 0; v < want[t].size(); ++v) {
      // Both sides are float64 over the same float32 weights; only the summation order differs.
      ASSERT_NEAR(got[t][v], want[t][v], tol * (1.0 + std::fabs(want[t][v])))
          << "token " << t << " vocab " << v;
    }
  }
}

TEST_F(ReferenceForward, AlibiSlopesMatchClosedForm) {
  int status = 0;
  const std::string code =
      "import sys; sys.path.insert(0, '" + std::string(LOOM_SOURCE_DIR) + "/scripts'); "
      "import hf_reference_forward as r; "
      "print(' '.join('%.17g' % s for n in (4, 8, 12) for s in r.alibi_slopes(n)))";
  const std::string out = run_capture(py_ + " -c \"" + code + "\" 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  Vec want;
  for (int i = 1; i <= 4; ++i) want.push_back(std::pow(2.0, -2.0 * i));   // 4 heads: 2^(-8i/4)
  for (int i = 1; i <= 8; ++i) want.push_back(std::pow(2.0, -1.0 * i));   // 8 heads: 2^(-8i/8)
  for (int i = 1; i <= 8; ++i) want.push_back(std::pow(2.0, -1.0 * i));   // 12 = 8 + 4 extra:
  for (int i = 1; i <= 7; i += 2) want.push_back(std::pow(2.0, -0.5 * i)); // odd powers of 2^-0.5
  std::istringstream in(out);
  for (size_t i = 0; i < want.size(); ++i) {
    double s = 0;
    ASSERT_TRUE(in >> s) << out;
    EXPECT_NEAR(s, want[i], 1e-15) << "slope " << i;
  }
}

// --- 0 layers: logits = norm(embed[token]) @ head^T -----------------------------------------

using Params = std::map<std::string, Vec>;  // name -> values as double

Vec random_values(size_t n, std::mt19937& rng, double mean = 0.0) {
  std::normal_distribution<float> normal(0.0f, 0.5f);
  Vec v(n);
  // Rounded to float: exactly what an F32 tensor stores, so both sides see the same weights.
  for (double& x : v) x = static_cast<float>(mean + normal(rng));
  return v;
}

Vec row(const Vec& m, size_t r, size_t cols) {
  return Vec(m.begin() + static_cast<std::ptrdiff_t>(r * cols),
             m.begin() + static_cast<std::ptrdiff_t>((r + 1) * cols));
}

Vec rms_norm(const Vec& x, const Vec& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

Vec layer_norm(const Vec& x, const Vec& w, const Vec& b, double eps) {
  double mu = 0, var = 0;
  for (double v : x) mu += v;
  mu /= static_cast<double>(x.size());
  for (double v : x) var += (v - mu) * (v - mu);
  const double inv = 1.0 / std::sqrt(var / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mu) * inv * w[i] + b[i];
  return y;
}

// y = W x (+ b): W [out, in] row-major; the bias is used when `p` has it.
Vec linear(const Params& p, const std::string& name, const Vec& x) {
  const Vec& w = p.at(name + ".weight");
  const size_t out = w.size() / x.size();
  Vec y(out, 0.0);
  for (size_t o = 0; o < out; ++o) {
    for (size_t i = 0; i < x.size(); ++i) y[o] += w[o * x.size() + i] * x[i];
  }
  if (auto it = p.find(name + ".bias"); it != p.end()) {
    for (size_t o = 0; o < out; ++o) y[o] += it->second[o];
  }
  return y;
}

void write_model(const fs::path& dir, const nlohmann::json& config, const Params& p,
                 const std::map<std::string, std::vector<int64_t>>& shapes) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  std::vector<Tensor> ts;
  for (const auto& [name, v] : p) ts.push_back(make_f64_tensor(name, shapes.at(name), v.data()));
  ASSERT_TRUE(write_safetensors((dir / "model.safetensors").string(), ts).ok());
}

TEST_F(ReferenceForward, ZeroLayerLlamaIsNormedEmbeddingTimesHead) {
  constexpr size_t kV = 11, kH = 8;
  std::mt19937 rng(7);
  Params p = {{"model.embed_tokens.weight", random_values(kV * kH, rng)},
              {"model.norm.weight", random_values(kH, rng, 1.0)},
              {"lm_head.weight", random_values(kV * kH, rng)}};
  const nlohmann::json config = {{"model_type", "llama"}, {"hidden_size", kH},
                                 {"num_attention_heads", 2}, {"num_hidden_layers", 0},
                                 {"vocab_size", kV}, {"rms_norm_eps", 1e-6},
                                 {"tie_word_embeddings", false}};
  write_model(dir_ / "m", config, p,
              {{"model.embed_tokens.weight", {kV, kH}}, {"model.norm.weight", {kH}},
               {"lm_head.weight", {kV, kH}}});
  const std::vector<size_t> tokens = {3, 1, 4, 1, 5, 10};
  std::vector<Vec> want;
  for (size_t t : tokens) {
    const Vec n = rms_norm(row(p["model.embed_tokens.weight"], t, kH), p["model.norm.weight"], 1e-6);
    want.push_back(linear({{"lm_head.weight", p["lm_head.weight"]}}, "lm_head", n));
  }
  expect_close(logits(dir_ / "m", "3 1 4 1 5 10"), want, 1e-12);
}

TEST_F(ReferenceForward, ZeroLayerBloomIsTwoLayerNormsTimesTiedEmbedding) {
  constexpr size_t kV = 11, kH = 8;
  std::mt19937 rng(8);
  Params p = {{"transformer.word_embeddings.weight", random_values(kV * kH, rng)},
              {"transformer.word_embeddings_layernorm.weight", random_values(kH, rng, 1.0)},
              {"transformer.word_embeddings_layernorm.bias", random_values(kH, rng)},
              {"transformer.ln_f.weight", random_values(kH, rng, 1.0)},
              {"transformer.ln_f.bias", random_values(kH, rng)}};
  const nlohmann::json config = {{"model_type", "bloom"}, {"hidden_size", kH}, {"n_head", 2},
                                 {"n_layer", 0}, {"vocab_size", kV},
                                 {"layer_norm_epsilon", 1e-5}};
  write_model(dir_ / "b", config, p,
              {{"transformer.word_embeddings.weight", {kV, kH}},
               {"transformer.word_embeddings_layernorm.weight", {kH}},
               {"transformer.word_embeddings_layernorm.bias", {kH}},
               {"transformer.ln_f.weight", {kH}}, {"transformer.ln_f.bias", {kH}}});
  std::vector<Vec> want;
  for (size_t t : {2, 7, 0}) {
    Vec x = layer_norm(row(p["transformer.word_embeddings.weight"], t, kH),
                       p["transformer.word_embeddings_layernorm.weight"],
                       p["transformer.word_embeddings_layernorm.bias"], 1e-5);
    x = layer_norm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], 1e-5);
    want.push_back(linear({{"e.weight", p["transformer.word_embeddings.weight"]}}, "e", x));
  }
  expect_close(logits(dir_ / "b", "2 7 0"), want, 1e-12);
}

// --- 1 token through exported models: attention output = v ----------------------------------

core::ModelSpec tiny_spec(const std::string& family) {
  core::ModelSpec m;
  m.name = "tiny-" + family;
  m.family = family;
  m.num_layers = 2;
  m.hidden_size = 32;
  m.num_heads = 4;
  m.num_kv_heads = family == "bloom" ? 4 : 2;
  m.ffn_hidden_size = family == "bloom" ? 128 : 48;
  m.vocab_size = 97;  // padded to 128
  m.max_seq_len = 64;
  if (family == "bloom") {
    m.norm = core::NormKind::kLayerNorm;
    m.mlp = core::MlpKind::kGelu;
    m.position = core::PositionKind::kAlibi;
    m.qkv_bias = m.out_bias = m.mlp_bias = m.embedding_norm = m.tied_embeddings = true;
  } else {
    m.norm = core::NormKind::kRmsNorm;
    m.norm_bias = false;
    m.norm_eps = 1e-6;
    m.mlp = core::MlpKind::kSwiGlu;
    m.position = core::PositionKind::kRope;
    m.qkv_bias = family == "qwen";
    m.rope_theta = family == "qwen" ? 1e6 : 1e4;
  }
  return m;
}

// Loom parameters with norm weights around 1 (so activations stay O(1)) and the rest N(0, 0.5).
Params random_loom_params(const core::ModelSpec& spec, uint32_t seed) {
  std::mt19937 rng(seed);
  Params p;
  for (const ParamShape& s : loom_param_shapes(spec)) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    const bool norm_weight = s.name.find("norm.weight") != std::string::npos;
    p[s.name] = random_values(static_cast<size_t>(n), rng, norm_weight ? 1.0 : 0.0);
  }
  return p;
}

std::vector<Tensor> to_tensors(const core::ModelSpec& spec, const Params& p) {
  std::vector<Tensor> out;
  for (const ParamShape& s : loom_param_shapes(spec)) {
    const Vec& v = p.at(s.name);
    std::vector<float> f(v.begin(), v.end());  // exact: the values were drawn as floats
    out.push_back(make_f32_tensor(s.name, s.shape, f.data()));
  }
  return out;
}

// The logits of a one-token sequence from Loom's parameters: with one key, softmax is 1 and
// attention returns v (query head j reads kv head j / (Hq / Hkv)); RoPE and ALiBi drop out.
Vec one_token_logits(const core::ModelSpec& m, const Params& p, size_t token) {
  const size_t h = static_cast<size_t>(m.hidden_size), hd = static_cast<size_t>(m.head_dim_or_default());
  const bool ln = m.norm == core::NormKind::kLayerNorm;
  auto norm = [&](const std::string& name, const Vec& x) {
    return ln ? layer_norm(x, p.at(name + ".weight"), p.at(name + ".bias"), m.norm_eps)
              : rms_norm(x, p.at(name + ".weight"), m.norm_eps);
  };
  Vec x = row(p.at("embed.weight"), token, h);
  if (m.embedding_norm) x = norm("embed_norm", x);
  for (int64_t i = 0; i < m.num_layers; ++i) {
    const std::string l = "layers." + std::to_string(i);
    const Vec v = linear(p, l + ".attn.wv", norm(l + ".attn_norm", x));
    Vec o;
    const size_t rep = static_cast<size_t>(m.num_heads / m.num_kv_heads);
    for (size_t j = 0; j < static_cast<size_t>(m.num_heads); ++j) {
      o.insert(o.end(), v.begin() + static_cast<std::ptrdiff_t>(j / rep * hd),
               v.begin() + static_cast<std::ptrdiff_t>((j / rep + 1) * hd));
    }
    const Vec attn = linear(p, l + ".attn.wo", o);
    for (size_t k = 0; k < h; ++k) x[k] += attn[k];
    const Vec n = norm(l + ".mlp_norm", x);
    Vec a = linear(p, l + ".mlp.w_up", n);
    if (m.mlp == core::MlpKind::kSwiGlu) {
      const Vec g = linear(p, l + ".mlp.w_gate", n);
      for (size_t k = 0; k < a.size(); ++k) a[k] *= g[k] / (1.0 + std::exp(-g[k]));
    } else {  // BLOOM's tanh GeLU (modeling_bloom.bloom_gelu_forward, constant 0.79788456)
      for (double& z : a) z = z * 0.5 * (1.0 + std::tanh(0.79788456 * z * (1.0 + 0.044715 * z * z)));
    }
    const Vec mlp = linear(p, l + ".mlp.w_down", a);
    for (size_t k = 0; k < h; ++k) x[k] += mlp[k];
  }
  x = norm("final_norm", x);
  const std::string head = m.tied_embeddings ? "embed.weight" : "lm_head.weight";
  return linear({{"head.weight", p.at(head)}}, "head", x);
}

TEST_F(ReferenceForward, OneTokenMatchesClosedFormForEachFamily) {
  for (const std::string family : {"llama", "qwen", "bloom"}) {
    SCOPED_TRACE(family);
    const core::ModelSpec spec = tiny_spec(family);
    const Params p = random_loom_params(spec, 11);
    const fs::path out = dir_ / family;
    ASSERT_TRUE(export_hf(spec, to_tensors(spec, p), out.string(), DType::kF32, 0).ok());
    const size_t token = family == "qwen" ? 96 : 5;  // 96: the last unpadded id
    expect_close(logits(out, std::to_string(token)), {one_token_logits(spec, p, token)}, 1e-10);
  }
}

// The script widens BF16 by hand (uint16 << 16): a bf16 export must read back as the weights
// rounded to bf16.
TEST_F(ReferenceForward, Bf16ExportReadsAsRoundedWeights) {
  const core::ModelSpec spec = tiny_spec("bloom");
  const Params p = random_loom_params(spec, 13);
  Params rounded = p;
  for (auto& [name, v] : rounded) {
    for (double& x : v) x = bf16_to_float(float_to_bf16(static_cast<float>(x)));
  }
  ASSERT_TRUE(export_hf(spec, to_tensors(spec, p), (dir_ / "bf16").string(), DType::kBF16, 0).ok());
  expect_close(logits(dir_ / "bf16", "7"), {one_token_logits(spec, rounded, 7)}, 1e-10);
}

TEST_F(ReferenceForward, ShardedEqualsUnshardedAndPrefixRowsAreCausal) {
  const core::ModelSpec spec = tiny_spec("qwen");
  const std::vector<Tensor> params = to_tensors(spec, random_loom_params(spec, 12));
  ASSERT_TRUE(export_hf(spec, params, (dir_ / "one").string(), DType::kF32, 0).ok());
  HfExportReport report;
  ASSERT_TRUE(export_hf(spec, params, (dir_ / "many").string(), DType::kF32, 30000, &report).ok());
  ASSERT_GT(report.files.size(), 3u) << "expected several shards";
  const std::vector<Vec> full = logits(dir_ / "one", "3 1 4 1 5 9 2 6");
  expect_close(logits(dir_ / "many", "3 1 4 1 5 9 2 6"), full, 1e-12);
  const std::vector<Vec> prefix = logits(dir_ / "one", "3 1 4");
  expect_close(prefix, std::vector<Vec>(full.begin(), full.begin() + 3), 1e-12);
  // Later positions see earlier tokens: the repeated token 1 gets different logits.
  EXPECT_NE(full[1], full[3]);
}

}  // namespace
}  // namespace loom::ckpt
