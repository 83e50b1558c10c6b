// kvlab's runtime against Hugging Face transformers' logits, on checkpoints made by
// `kvlab make-model` (llama MHA, llama3-scaled GQA with tied embeddings, mistral MQA, qwen2 with
// q/k/v bias). The fixtures are produced by scripts/make_hf_fixtures.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "kvlab/model/llama_model.h"
#include "kvlab/model/safetensors.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

class HfReference : public ::testing::TestWithParam<std::string> {};

TEST_P(HfReference, LogitsMatchTransformers) {
  const std::string dir = std::string(KVLAB_TEST_DATA) + "/hf_reference/" + GetParam();
  if (!std::filesystem::exists(dir + "/reference.safetensors"))
    GTEST_SKIP() << dir << " missing: run scripts/make_hf_fixtures.py (needs pip torch + transformers)";
  LlamaModel model = LlamaModel::load(dir);
  SafetensorsFile ref(dir + "/reference.safetensors");
  at::Tensor ids = ref.tensor("input_ids").to(at::kLong);  // [B, T]
  at::Tensor want = ref.tensor("logits");                  // [B, T, V]
  ASSERT_GT(want.abs().max().item<double>(), 1.0) << "fixture logits too flat to test anything";

  KvCache cache = model.make_full_precision_cache();
  at::Tensor got = model.forward(ids, cache);
  EXPECT_LE(test::max_abs_diff(got, want), 1e-4);

  KvCache step = model.make_full_precision_cache();
  std::vector<at::Tensor> parts;
  for (int64_t t = 0; t < ids.size(1); ++t) parts.push_back(model.forward(ids.narrow(1, t, 1), step));
  EXPECT_LE(test::max_abs_diff(at::cat(parts, 1), want), 1e-4);

  // The checkpoint is complete: its tokenizer loads and round-trips.
  auto tok = load_tokenizer(dir);
  EXPECT_EQ(tok->decode(tok->encode("a cache of keys and values")), "a cache of keys and values");
}

INSTANTIATE_TEST_SUITE_P(Transformers, HfReference,
                         ::testing::Values("llama_mha", "llama3_gqa_tied", "mistral_gqa", "qwen2_bias"));

}  // namespace
}  // namespace kvlab
