// The committed reference model (datasets/kjv-llama, trained with `kvlab train` on the KJV train
// split): its perplexity on held-out test windows must be far below a unigram model's on the very
// same tokens (a unigram fitted to those tokens, the best any context-free model can do), so a
// broken, truncated or untrained file cannot pass. Also: the corpus split is reproducible.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>

#include "kvlab/eval/perplexity.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

const std::string kModel = std::string(KVLAB_SOURCE_DIR) + "/datasets/kjv-llama";
const std::string kTest = std::string(KVLAB_SOURCE_DIR) + "/datasets/kjv/test.txt";

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(ReferenceModel, TestPerplexityIsFarBelowUnigram) {
  ASSERT_TRUE(std::filesystem::exists(kModel + "/model.safetensors")) << "the reference checkpoint is missing";
  auto tok = load_tokenizer(kModel);
  LlamaModel model = LlamaModel::load(kModel);
  EXPECT_GE(model.config().num_hidden_layers, 6);
  EXPECT_LT(model.config().num_key_value_heads, model.config().num_attention_heads);  // GQA

  PerplexityOptions opt;
  opt.ctx = 256;
  opt.max_windows = 8;
  opt.bos_id = *tok->bos_id();
  opt.progress = false;
  const std::vector<int32_t> ids = tok->encode(read(kTest), false);
  const PerplexityResult r = evaluate_perplexity(model, ids, opt);
  ASSERT_EQ(r.windows, 8);

  // Unigram fitted to exactly the predicted tokens: exp(entropy of their empirical distribution).
  std::map<int32_t, int64_t> counts;
  const auto windows = perplexity_windows(ids, opt);
  int64_t n = 0;
  for (const auto& w : windows)
    for (size_t i = 1; i < w.size(); ++i) ++counts[static_cast<int32_t>(w[i])], ++n;
  ASSERT_EQ(n, r.predicted);
  double h = 0;
  for (const auto& [id, c] : counts) h -= static_cast<double>(c) / n * std::log(static_cast<double>(c) / n);
  const double unigram = std::exp(h);
  std::printf("reference model: test ppl %.3f over %lld tokens; unigram (fitted to them) %.3f\n", r.ppl(),
              static_cast<long long>(r.predicted), unigram);
  EXPECT_LT(r.ppl(), unigram / 4);
}

TEST(ReferenceModel, CorpusSplitIsReproducible) {
  if (std::system("command -v bible >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "the 'bible' program (apt: bible-kjv) is not installed; cannot regenerate the split";
  test::TempDir tmp;
  const std::string cmd = "/usr/bin/python3 " + std::string(KVLAB_SOURCE_DIR) + "/datasets/kjv/prepare.py " +
                          tmp.str() + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(read(tmp / "test.txt"), read(kTest)) << "prepare.py no longer reproduces the committed test split";
  EXPECT_GT(read(tmp / "train.txt").size(), 15 * read(kTest).size());
}

}  // namespace
}  // namespace kvlab
