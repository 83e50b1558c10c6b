// The method registry: a method defined only here (no file outside tests/ touched) registers
// itself, is listed and built; unknown names and parameters are clear errors listing valid ones.
#include <gtest/gtest.h>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/quant/kv_method.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

// A method only the tests know: 8-bit per-token keys, full-precision values.
class KeysOnlyTestMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;
  static MethodInfo info() {
    return {"test-keys-only", "test method: 8-bit keys, exact values",
            {ParamSpec::integer("k_bits", 8, "key bits", {}, {}, {"2", "4", "8"})},
            [](const ParamSet& p) { return std::make_unique<KeysOnlyTestMethod>(p); }};
  }
  CachePlan plan(const ModelConfig& c) const override {
    LayerPlan lp;
    lp.k.bits = static_cast<int>(params().integer("k_bits"));
    lp.k.group = -1;
    lp.v_flush.kind = FlushRule::Kind::Never;
    CachePlan plan;
    plan.method = "test-keys-only";
    plan.layers.assign(static_cast<size_t>(c.num_hidden_layers), lp);
    return plan;
  }
};
KVLAB_REGISTER_METHOD(KeysOnlyTestMethod)

// Every error here must also be one line.
std::string error_of(const std::function<void()>& f) { return test::error_of(f, true); }

TEST(MethodRegistry, BuiltinsAndTestMethodAreListed) {
  const auto names = MethodRegistry::instance().names();
  for (const char* n : {"fp16", "uniform", "kivi", "test-keys-only"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

TEST(MethodRegistry, TestMethodRunsThroughTheCache) {
  auto m = MethodRegistry::instance().create("test-keys-only", YAML::Load("{k_bits: 4}"));
  ModelConfig c = test::small_config();
  CachePlan plan = m->plan(c);
  plan.validate(c.num_hidden_layers, c.head_dim);
  KvCache cache = make_cache(plan, MultiTokenMode::FullPrecision);
  at::Tensor q = at::randn({1, 4, 5, 8}), k = at::randn({1, 4, 5, 8}), v = at::randn({1, 4, 5, 8});
  cache.layer(0).attend(q, k, v);
  const CacheBytes b = cache.layer(0).bytes();
  EXPECT_EQ(b.keys.full_precision, 0);        // keys packed at once (per-token, eager)
  EXPECT_EQ(b.keys.packed_codes, 4 * 5 * 4);  // 8 codes of 4 bits = one word per token and head
  EXPECT_EQ(b.values.full_precision, 4 * 5 * 8 * 4);
}

TEST(MethodRegistry, UnknownNamesAndParametersAreClear) {
  auto& reg = MethodRegistry::instance();
  std::string e = error_of([&] { reg.create("kiwi", YAML::Node()); });
  EXPECT_NE(e.find("did you mean 'kivi'"), std::string::npos) << e;
  EXPECT_NE(e.find("uniform"), std::string::npos) << e;  // lists the valid names
  e = error_of([&] { reg.create("kivi", YAML::Load("{resdual: 64}")); });
  EXPECT_NE(e.find("resdual"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'residual'"), std::string::npos) << e;
  e = error_of([&] { reg.create("kivi", YAML::Load("{bits: 5}")); });
  EXPECT_NE(e.find("bits"), std::string::npos) << e;
  e = error_of([&] { reg.create("kivi", YAML::Load("{residual: lots}")); });
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
  e = error_of([&] { reg.create("uniform", YAML::Load("{k_axis: sideways}")); });
  EXPECT_NE(e.find("per-token"), std::string::npos) << e;
  // A group that does not fit the model is caught when the plan is validated.
  ModelConfig c = test::small_config();  // head_dim 8
  e = error_of([&] { reg.create("kivi", YAML::Load("{group: 32}"))->plan(c).validate(c.num_hidden_layers, c.head_dim); });
  EXPECT_NE(e.find("head_dim 8"), std::string::npos) << e;
  e = error_of([&] {
    reg.create("kivi", YAML::Load("{group: 4, residual: 6}"))->plan(c).validate(c.num_hidden_layers, c.head_dim);
  });
  EXPECT_NE(e.find("multiple of the group size"), std::string::npos) << e;
  e = error_of([&] { reg.add(KeysOnlyTestMethod::info()); });
  EXPECT_NE(e.find("twice"), std::string::npos) << e;
}

TEST(MethodRegistry, ParameterDefaultsAndSlug) {
  auto m = MethodRegistry::instance().create("kivi", YAML::Load("{bits: 4}"));
  EXPECT_EQ(m->params().integer("bits"), 4);
  EXPECT_EQ(m->params().integer("residual"), 128);
  EXPECT_TRUE(m->params().was_given("bits"));
  EXPECT_FALSE(m->params().was_given("group"));
  EXPECT_EQ(m->params().slug(),
            "bits=4,group=32,residual=128,param_dtype=float16,prefill=full-precision,rotate=none,rotate_signs=0");
  YAML::Node assigned = parse_assignments({"bits=2", "group=16"});
  auto m2 = MethodRegistry::instance().create("kivi", assigned);
  EXPECT_EQ(m2->params().integer("group"), 16);
  EXPECT_THROW(parse_assignments({"bits"}), Error);
}

}  // namespace
}  // namespace kvlab
