// LlamaModel against independent expectations: a scalar double-precision reimplementation written
// from the architecture's definition, a one-layer case worked by hand, decode == prefill, and
// autograd against finite differences.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/model/safetensors.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using test::max_abs_diff;
using test::small_config;

// ---- scalar reference (plain loops, doubles) ---------------------------------------------------

struct Mat {
  at::Tensor t;  // double, contiguous
  explicit Mat(const at::Tensor& x) : t(x.defined() ? x.to(at::kDouble).contiguous() : x) {}
  double operator()(int64_t r, int64_t c) const { return t.data_ptr<double>()[r * t.size(1) + c]; }
  double operator[](int64_t i) const { return t.data_ptr<double>()[i]; }
  bool defined() const { return t.defined(); }
};

using Vec = std::vector<double>;

Vec matvec(const Mat& w, const Vec& x, const Mat* bias = nullptr) {
  Vec y(static_cast<size_t>(w.t.size(0)), 0.0);
  for (int64_t r = 0; r < w.t.size(0); ++r) {
    double s = (bias && bias->defined()) ? (*bias)[r] : 0.0;
    for (int64_t c = 0; c < w.t.size(1); ++c) s += w(r, c) * x[static_cast<size_t>(c)];
    y[static_cast<size_t>(r)] = s;
  }
  return y;
}

Vec rmsnorm(const Vec& x, const Mat& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[static_cast<int64_t>(i)];
  return y;
}

// RoPE frequencies from the definitions (theta^(-2i/D); linear: / factor; llama3: band-wise).
Vec inv_freqs(const ModelConfig& c) {
  Vec f(static_cast<size_t>(c.head_dim / 2));
  for (size_t i = 0; i < f.size(); ++i) {
    double inv = std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim));
    const auto& rs = c.rope_scaling;
    if (rs.type == RopeScaling::Type::Linear) inv /= rs.factor;
    if (rs.type == RopeScaling::Type::Llama3) {
      const double wavelen = 2 * M_PI / inv;
      const double old = static_cast<double>(rs.original_max_position_embeddings);
      if (wavelen > old / rs.low_freq_factor) {
        inv /= rs.factor;
      } else if (wavelen >= old / rs.high_freq_factor) {
        const double smooth = (old / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        inv = (1 - smooth) * inv / rs.factor + smooth * inv;
      }
    }
    f[i] = inv;
  }
  return f;
}

void rope(Vec& x, int64_t head, int64_t D, int64_t pos, const Vec& inv) {
  for (int64_t i = 0; i < D / 2; ++i) {
    const double a = x[static_cast<size_t>(head * D + i)], b = x[static_cast<size_t>(head * D + i + D / 2)];
    const double ang = static_cast<double>(pos) * inv[static_cast<size_t>(i)];
    x[static_cast<size_t>(head * D + i)] = a * std::cos(ang) - b * std::sin(ang);
    x[static_cast<size_t>(head * D + i + D / 2)] = b * std::cos(ang) + a * std::sin(ang);
  }
}

// Logits [T][V] of one sequence.
std::vector<Vec> reference_logits(const LlamaModel& m, const std::vector<int64_t>& tokens) {
  const ModelConfig& c = m.config();
  const auto& w = m.weights();
  const int64_t D = c.head_dim, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads, G = Hq / Hkv;
  const Vec inv = inv_freqs(c);
  Mat embed(w.embed), final_norm(w.final_norm), head(w.lm_head);
  std::vector<std::vector<Vec>> K(static_cast<size_t>(c.num_hidden_layers)), V(K.size());
  std::vector<Vec> out;
  for (size_t p = 0; p < tokens.size(); ++p) {
    Vec x(static_cast<size_t>(c.hidden_size));
    for (int64_t i = 0; i < c.hidden_size; ++i) x[static_cast<size_t>(i)] = embed(tokens[p], i);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const auto& lw = w.layers[static_cast<size_t>(l)];
      Mat qb(lw.q_bias), kb(lw.k_bias), vb(lw.v_bias);
      Vec h = rmsnorm(x, Mat(lw.input_norm), c.rms_norm_eps);
      Vec q = matvec(Mat(lw.q_proj), h, &qb), k = matvec(Mat(lw.k_proj), h, &kb), v = matvec(Mat(lw.v_proj), h, &vb);
      for (int64_t hh = 0; hh < Hq; ++hh) rope(q, hh, D, static_cast<int64_t>(p), inv);
      for (int64_t hh = 0; hh < Hkv; ++hh) rope(k, hh, D, static_cast<int64_t>(p), inv);
      K[static_cast<size_t>(l)].push_back(k);
      V[static_cast<size_t>(l)].push_back(v);
      Vec attn(static_cast<size_t>(Hq * D), 0.0);
      for (int64_t hh = 0; hh < Hq; ++hh) {
        const int64_t kvh = hh / G;
        Vec s(p + 1);
        double mx = -1e300;
        for (size_t t = 0; t <= p; ++t) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += q[static_cast<size_t>(hh * D + d)] * K[static_cast<size_t>(l)][t][static_cast<size_t>(kvh * D + d)];
          s[t] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, s[t]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (size_t t = 0; t <= p; ++t)
          for (int64_t d = 0; d < D; ++d)
            attn[static_cast<size_t>(hh * D + d)] += s[t] / z * V[static_cast<size_t>(l)][t][static_cast<size_t>(kvh * D + d)];
      }
      Vec o = matvec(Mat(lw.o_proj), attn);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      Vec h2 = rmsnorm(x, Mat(lw.post_norm), c.rms_norm_eps);
      Vec g = matvec(Mat(lw.gate_proj), h2), u = matvec(Mat(lw.up_proj), h2);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      Vec dn = matvec(Mat(lw.down_proj), g);
      for (size_t i = 0; i < x.size(); ++i) x[i] += dn[i];
    }
    out.push_back(matvec(head, rmsnorm(x, final_norm, c.rms_norm_eps)));
  }
  return out;
}

at::Tensor random_tokens(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randint(0, vocab, {B, T}, g, at::TensorOptions().dtype(at::kLong));
}

// Random weights scaled up so attention is far from uniform and errors would show.
LlamaModel sharp_model(const ModelConfig& c, uint64_t seed, c10::ScalarType dtype = at::kFloat) {
  LoadOptions opt;
  opt.dtype = dtype;
  LlamaModel m = LlamaModel::random(c, seed, opt);
  c10::NoGradGuard ng;
  at::Generator g = at::detail::createCPUGenerator(seed + 7);
  for (auto& lw : m.weights().layers) {
    lw.q_proj.mul_(8);
    lw.k_proj.mul_(8);
    lw.input_norm.copy_(at::rand(lw.input_norm.sizes(), g) + 0.5);
    if (lw.q_bias.defined()) {
      lw.q_bias.copy_(at::randn(lw.q_bias.sizes(), g) * 0.1);
      lw.k_bias.copy_(at::randn(lw.k_bias.sizes(), g) * 0.1);
      lw.v_bias.copy_(at::randn(lw.v_bias.sizes(), g) * 0.1);
    }
  }
  m.weights().embed.mul_(30);
  return m;
}

struct Variant {
  const char* name;
  int64_t kv_heads;
  const char* type;
  RopeScaling::Type scaling;
  bool tie;
};

class ReferenceTest : public ::testing::TestWithParam<Variant> {};

TEST_P(ReferenceTest, MatchesScalarReference) {
  const Variant v = GetParam();
  ModelConfig c = small_config(v.kv_heads, v.type);
  c.tie_word_embeddings = v.tie;
  c.rope_theta = 500.0;  // low theta: rotation angles vary a lot over a few positions
  c.rope_scaling.type = v.scaling;
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 64;  // puts the 8 frequencies in all three llama3 bands
  LlamaModel m = sharp_model(c, 11);
  const int64_t T = 9;
  at::Tensor toks = random_tokens(1, T, c.vocab_size, 3);
  KvCache cache = m.make_full_precision_cache();
  at::Tensor logits = m.forward(toks, cache).squeeze(0);
  std::vector<int64_t> tv(toks.data_ptr<int64_t>(), toks.data_ptr<int64_t>() + T);
  auto ref = reference_logits(m, tv);
  double worst = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < c.vocab_size; ++i)
      worst = std::max(worst, std::abs(ref[static_cast<size_t>(t)][static_cast<size_t>(i)] - logits[t][i].item<double>()));
  EXPECT_LT(worst, 2e-4) << v.name;
}

INSTANTIATE_TEST_SUITE_P(Llama, ReferenceTest,
                         ::testing::Values(Variant{"mha", 4, "llama", RopeScaling::Type::None, false},
                                           Variant{"gqa_tied", 2, "llama", RopeScaling::Type::None, true},
                                           Variant{"mqa_llama3", 1, "llama", RopeScaling::Type::Llama3, false},
                                           Variant{"linear", 2, "mistral", RopeScaling::Type::Linear, false},
                                           Variant{"qwen2_bias", 2, "qwen2", RopeScaling::Type::None, false}),
                         [](const auto& info) { return std::string(info.param.name); });

// The llama3 band rule must actually change some frequencies and keep others (else the test above
// could not tell it apart from no scaling).
TEST(Rope, Llama3ScalingTouchesAllBands) {
  ModelConfig c = small_config();
  c.rope_theta = 500.0;
  c.rope_scaling.type = RopeScaling::Type::Llama3;
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 64;
  ModelConfig plain = c;
  plain.rope_scaling.type = RopeScaling::Type::None;
  at::Tensor a = Rope(c).inv_freq(), b = Rope(plain).inv_freq();
  int kept = 0, divided = 0, between = 0;
  for (int64_t i = 0; i < a.size(0); ++i) {
    const double r = b[i].item<double>() / a[i].item<double>();
    if (std::abs(r - 1) < 1e-6) ++kept;
    else if (std::abs(r - 4) < 1e-4) ++divided;
    else ++between;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(between, 0);
}

// One layer, one head, D = H = 2, a single token at position 0 (RoPE is the identity there and
// attention over one token returns its value). Embedding row [3, 4], all norms 1, q/k/v/o = I,
// MLP zero, lm_head rows [1,0], [0,1], [1,1]:
//   h = [3,4] / sqrt(12.5);  x = [3,4] + h = [3,4] * (1 + 1/sqrt(12.5))
//   final norm of x = [3,4] / sqrt(12.5) = [0.848528, 1.131371]   (x is a multiple of [3,4])
//   logits = [0.848528, 1.131371, 1.979899]
TEST(LlamaModel, HandComputedOneLayer) {
  ModelConfig c;
  c.vocab_size = 3, c.hidden_size = 2, c.intermediate_size = 1, c.num_hidden_layers = 1;
  c.num_attention_heads = 1, c.num_key_value_heads = 1, c.head_dim = 2;
  c.validate("hand");
  c.rms_norm_eps = 0;
  ModelWeights w;
  w.embed = at::tensor({0.f, 0.f, 3.f, 4.f, 1.f, 1.f}).view({3, 2});
  LayerWeights lw;
  lw.input_norm = at::ones({2});
  lw.post_norm = at::ones({2});
  lw.q_proj = at::eye(2);
  lw.k_proj = at::eye(2);
  lw.v_proj = at::eye(2);
  lw.o_proj = at::eye(2);
  lw.gate_proj = at::zeros({1, 2});
  lw.up_proj = at::zeros({1, 2});
  lw.down_proj = at::zeros({2, 1});
  w.layers.push_back(lw);
  w.final_norm = at::ones({2});
  w.lm_head = at::tensor({1.f, 0.f, 0.f, 1.f, 1.f, 1.f}).view({3, 2});
  LlamaModel m(c, w);
  KvCache cache = m.make_full_precision_cache();
  at::Tensor logits = m.forward(at::tensor({int64_t{1}}).view({1, 1}), cache).view({3});
  const double s = std::sqrt(12.5);
  EXPECT_NEAR(logits[0].item<double>(), 3 / s, 1e-6);
  EXPECT_NEAR(logits[1].item<double>(), 4 / s, 1e-6);
  EXPECT_NEAR(logits[2].item<double>(), 7 / s, 1e-6);
}

// Prefill of T tokens == feeding them one at a time through the cache, batch 3.
class DecodeTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(DecodeTest, TokenByTokenEqualsPrefill) {
  ModelConfig c = small_config(GetParam());
  LlamaModel m = sharp_model(c, 5);
  const int64_t B = 3, T = 14;
  at::Tensor toks = random_tokens(B, T, c.vocab_size, 9);
  KvCache full = m.make_full_precision_cache();
  at::Tensor prefill = m.forward(toks, full);
  KvCache step = m.make_full_precision_cache();
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < T; ++t) steps.push_back(m.forward(toks.narrow(1, t, 1), step));
  EXPECT_LT(max_abs_diff(at::cat(steps, 1), prefill), 1e-4);
  EXPECT_EQ(step.length(), T);
  // Chunked prefill (5 + 9 tokens) too: the causal mask must be offset by the cached length.
  KvCache chunk = m.make_full_precision_cache();
  at::Tensor a = m.forward(toks.narrow(1, 0, 5), chunk);
  at::Tensor b = m.forward(toks.narrow(1, 5, T - 5), chunk);
  EXPECT_LT(max_abs_diff(at::cat({a, b}, 1), prefill), 1e-4);
  // Sequences of a batch do not leak into each other.
  KvCache one = m.make_full_precision_cache();
  EXPECT_LT(max_abs_diff(m.forward(toks.narrow(0, 1, 1), one), prefill.narrow(0, 1, 1)), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Heads, DecodeTest, ::testing::Values(4, 2, 1),
                         [](const auto& info) { return info.param == 4 ? "MHA" : info.param == 2 ? "GQA" : "MQA"; });

TEST(LlamaModel, CacheBytesAreExact) {
  ModelConfig c = small_config(2);
  LlamaModel m = LlamaModel::random(c, 1);
  KvCache cache = m.make_full_precision_cache();
  m.forward(random_tokens(3, 7, c.vocab_size, 1), cache);
  m.forward(random_tokens(3, 1, c.vocab_size, 2), cache);
  // layers * (K and V) * batch * kv_heads * tokens * head_dim * 4 bytes
  EXPECT_EQ(cache.bytes().keys.full_precision, 2 * 3 * 2 * 8 * 8 * 4);
  EXPECT_EQ(cache.bytes().values.full_precision, 2 * 3 * 2 * 8 * 8 * 4);
  EXPECT_EQ(cache.bytes().total(), 2 * 2 * 3 * 2 * 8 * 8 * 4);
  EXPECT_GE(cache.layer(0).capacity_bytes(), cache.layer(0).bytes().total());
  cache.reset();
  EXPECT_EQ(cache.length(), 0);
  EXPECT_EQ(cache.bytes().total(), 0);
}

// d loss / d W_k of layer 0 by autograd == central finite differences (double precision).
TEST(LlamaModel, KProjGradientMatchesFiniteDifferences) {
  ModelConfig c = small_config(2);
  LoadOptions opt;
  opt.dtype = at::kDouble;
  LlamaModel m = sharp_model(c, 21, at::kDouble);
  at::Tensor toks = random_tokens(2, 10, c.vocab_size, 4);
  auto loss_fn = [&]() {
    KvCache cache = m.make_full_precision_cache();
    at::Tensor logits = m.forward(toks, cache);
    return at::cross_entropy_loss(logits.narrow(1, 0, 9).reshape({-1, c.vocab_size}),
                                  toks.narrow(1, 1, 9).reshape({-1}));
  };
  for (int64_t layer : {0, 1}) {
    at::Tensor& wk = m.weights().layers[static_cast<size_t>(layer)].k_proj;
    wk.set_requires_grad(true);
    at::Tensor loss = loss_fn();
    loss.backward();
    at::Tensor grad = wk.grad().clone();
    wk.set_requires_grad(false);
    ASSERT_GT(grad.abs().max().item<double>(), 1e-6) << "gradient vanished; test would be vacuous";
    c10::NoGradGuard ng;
    const double eps = 1e-6;
    for (int64_t idx : {0, 5, 37, 100, 255}) {
      double* p = wk.data_ptr<double>() + idx;
      const double orig = *p;
      *p = orig + eps;
      const double up = loss_fn().item<double>();
      *p = orig - eps;
      const double down = loss_fn().item<double>();
      *p = orig;
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(grad.view(-1)[idx].item<double>(), fd, 1e-6 + 1e-5 * std::abs(fd)) << "layer " << layer << " idx " << idx;
    }
  }
}

TEST(LlamaModel, LowPrecisionDtypesTrackFloat32) {
  ModelConfig c = small_config(2);
  LlamaModel ref = LlamaModel::random(c, 8);
  at::Tensor toks = random_tokens(2, 6, c.vocab_size, 5);
  KvCache c0 = ref.make_full_precision_cache();
  at::Tensor want = ref.forward(toks, c0);
  for (auto dt : {at::kBFloat16, at::kHalf}) {
    LoadOptions opt;
    opt.dtype = dt;
    LlamaModel m = LlamaModel::random(c, 8, opt);
    EXPECT_EQ(m.dtype(), dt);
    KvCache cache = m.make_full_precision_cache();
    at::Tensor got = m.forward(toks, cache);
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    EXPECT_LT(max_abs_diff(got, want), dt == at::kHalf ? 5e-3 : 3e-2) << c10::toString(dt);
  }
}

TEST(LlamaModel, SaveLoadRoundTripAndShapeErrors) {
  test::TempDir dir;
  ModelConfig c = small_config(2, "qwen2");
  LlamaModel m = LlamaModel::random(c, 3);
  m.save(dir.str(), at::kFloat);
  LlamaModel back = LlamaModel::load(dir.str());
  EXPECT_EQ(back.config().num_key_value_heads, 2);
  EXPECT_TRUE(back.config().attention_bias);
  // Every weight comes back bit for bit (fp32 saved as fp32)...
  const ModelWeights &w = m.weights(), &wb = back.weights();
  EXPECT_TRUE(at::equal(w.embed, wb.embed));
  EXPECT_TRUE(at::equal(w.final_norm, wb.final_norm));
  EXPECT_TRUE(at::equal(w.lm_head, wb.lm_head));
  ASSERT_EQ(wb.layers.size(), w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights &x = w.layers[l], &y = wb.layers[l];
    for (auto [a, b] : {std::pair{x.input_norm, y.input_norm}, {x.q_proj, y.q_proj}, {x.q_bias, y.q_bias},
                        {x.k_proj, y.k_proj}, {x.k_bias, y.k_bias}, {x.v_proj, y.v_proj}, {x.v_bias, y.v_bias},
                        {x.o_proj, y.o_proj}, {x.post_norm, y.post_norm}, {x.gate_proj, y.gate_proj},
                        {x.up_proj, y.up_proj}, {x.down_proj, y.down_proj}})
      EXPECT_TRUE(at::equal(a, b)) << "layer " << l;
  }
  // ... and the model computes the same logits (to float rounding: BLAS may split a product across
  // a different number of threads from one call to the next on a loaded machine).
  at::Tensor toks = random_tokens(1, 5, c.vocab_size, 2);
  KvCache a = m.make_full_precision_cache(), b = back.make_full_precision_cache();
  EXPECT_LE(max_abs_diff(m.forward(toks, a), back.forward(toks, b)), 1e-5);

  // A config that disagrees with the weights: one clear error naming the tensor.
  ModelConfig wrong = c;
  wrong.intermediate_size = 40;
  {
    std::ofstream out(dir / "config.json");
    out << wrong.to_json().dump();
  }
  try {
    LlamaModel::load(dir.str());
    FAIL() << "shape mismatch not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp.gate_proj.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
  // More layers than the weights hold: refused by the layer count before any layer is looked up.
  ModelConfig more = c;
  more.num_hidden_layers = 3;
  {
    std::ofstream out(dir / "config.json");
    out << more.to_json().dump();
  }
  try {
    LlamaModel::load(dir.str());
    FAIL() << "missing layer not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json has num_hidden_layers 3 but the weights hold 2 layers"),
              std::string::npos)
        << e.what();
  }
}

TEST(LlamaModel, RejectsTokensOutsideVocabulary) {
  LlamaModel m = LlamaModel::random(small_config(), 1);
  KvCache cache = m.make_full_precision_cache();
  EXPECT_THROW(m.forward(at::tensor({int64_t{50}}).view({1, 1}), cache), Error);
}

}  // namespace
}  // namespace kvlab
