#include "kvlab/model/llama2c_import.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvlab/common/checked.h"
#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/model/safetensors.h"
#include "kvlab/tokenizer/llama2c_tokenizer.h"

namespace kvlab {
namespace {

constexpr int64_t kHeaderBytes = 7 * 4;

// Float count of every array after the header, in file order. The header's fields are any int32 a
// file holds, so every product is checked (a hostile header overflows 64 bits otherwise).
int64_t expected_floats(const Llama2cHeader& h, const std::string& path) {
  const std::string what = path + ": the header's array sizes";
  const int64_t d = h.dim, hd = h.dim / h.n_heads, L = h.n_layers;
  const int64_t q = product_or_fail({h.n_heads, hd}, what), kv = product_or_fail({h.n_kv_heads, hd}, what);
  const int64_t terms[] = {
      product_or_fail({h.vocab_size, d}, what),          // token embedding
      product_or_fail({L, d}, what),                     // attention norms
      product_or_fail({L, d, q}, what),                  // wq
      product_or_fail({2, L, kv, d}, what),              // wk, wv
      product_or_fail({L, q, d}, what),                  // wo
      product_or_fail({L, d}, what),                     // ffn norms
      product_or_fail({3, L, h.hidden_dim, d}, what),    // w1, w2, w3
      d,                                                 // final norm
      product_or_fail({h.seq_len, hd}, what),            // RoPE cos + sin tables (unused)
      h.shared_classifier ? 0 : product_or_fail({h.vocab_size, d}, what)};
  int64_t n = 0;
  for (int64_t t : terms) n = sum_or_fail(n, t, what);
  return n;
}

// llama2.c rotates adjacent pairs (2i, 2i+1) of each head; HF rotates (i, i + D/2). Reorder the
// output rows of wq / wk within each head so that HF's rotation computes the same thing.
at::Tensor pairs_to_halves(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1), D = rows / heads;
  return w.view({heads, D / 2, 2, cols}).transpose(1, 2).reshape({rows, cols}).contiguous();
}

}  // namespace

Llama2cHeader read_llama2c_header(const std::string& path) {
  check_input_file(path, "llama2.c model");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("{}: cannot open llama2.c model", path);
  const int64_t size = static_cast<int64_t>(in.tellg());
  if (size < kHeaderBytes) fail("{}: truncated ({} bytes; the header alone is {})", path, size, kHeaderBytes);
  in.seekg(0);
  int32_t v[7];
  in.read(reinterpret_cast<char*>(v), sizeof v);
  const char* names[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i)  // vocab_size is negative when the classifier is separate; -2^31 has no |.|
    if (v[i] == 0 || (i != 5 && v[i] < 0) || v[i] == INT32_MIN)
      fail("{}: header field {} = {} must be positive", path, names[i], v[i]);
  Llama2cHeader h{v[0], v[1], v[2], v[3], v[4], std::abs(v[5]), v[6], v[5] > 0};
  if (h.dim % h.n_heads != 0) fail("{}: dim {} is not a multiple of n_heads {}", path, h.dim, h.n_heads);
  if (h.n_heads % h.n_kv_heads != 0)
    fail("{}: n_heads {} is not a multiple of n_kv_heads {}", path, h.n_heads, h.n_kv_heads);
  if ((h.dim / h.n_heads) % 2 != 0) fail("{}: head size {} must be even", path, h.dim / h.n_heads);
  const int64_t want =
      sum_or_fail(kHeaderBytes, product_or_fail({4, expected_floats(h, path)}, path + ": the header's byte size"),
                  path + ": the header's byte size");
  if (size != want)
    fail("{}: {} bytes, but the header's dims (dim {}, hidden {}, layers {}, heads {}/{}, vocab {}{}, seq {}) "
         "imply {} bytes ({})",
         path, size, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size,
         h.shared_classifier ? " shared" : " separate", h.seq_len, want, size < want ? "truncated" : "trailing data");
  return h;
}

ModelConfig convert_llama2c(const std::string& model_path, const std::string& tokenizer_path,
                            const std::string& out_dir) {
  const Llama2cHeader h = read_llama2c_header(model_path);
  Llama2cTokenizer tok(tokenizer_path, h.vocab_size);  // validates the tokenizer against the vocab

  std::ifstream in(model_path, std::ios::binary);
  in.seekg(kHeaderBytes);
  auto take = [&](std::vector<int64_t> shape) {
    at::Tensor t = at::empty(shape, at::kFloat);
    in.read(reinterpret_cast<char*>(t.data_ptr<float>()), static_cast<std::streamsize>(t.nbytes()));
    if (!in) fail("{}: read failed", model_path);
    return t;
  };
  const int64_t d = h.dim, hd = h.dim / h.n_heads, kv = h.n_kv_heads * hd, L = h.n_layers, F = h.hidden_dim;
  at::Tensor embed = take({h.vocab_size, d});
  at::Tensor att_norm = take({L, d});
  at::Tensor wq = take({L, h.n_heads * hd, d});
  at::Tensor wk = take({L, kv, d});
  at::Tensor wv = take({L, kv, d});
  at::Tensor wo = take({L, d, h.n_heads * hd});
  at::Tensor ffn_norm = take({L, d});
  at::Tensor w1 = take({L, F, d});
  at::Tensor w2 = take({L, d, F});
  at::Tensor w3 = take({L, F, d});
  at::Tensor final_norm = take({d});
  take({h.seq_len, hd});  // freq_cis tables: unused (RoPE is recomputed)
  at::Tensor classifier = h.shared_classifier ? embed : take({h.vocab_size, d});

  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = h.vocab_size, c.hidden_size = d, c.intermediate_size = F, c.num_hidden_layers = L;
  c.num_attention_heads = h.n_heads, c.num_key_value_heads = h.n_kv_heads, c.head_dim = hd;
  c.max_position_embeddings = h.seq_len, c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0;
  c.tie_word_embeddings = h.shared_classifier;
  c.bos_token_id = 1, c.eos_token_ids = {2};
  c.validate(model_path);

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  tensors.push_back({"model.embed_tokens.weight", embed});
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    tensors.push_back({p + "input_layernorm.weight", att_norm[l]});
    tensors.push_back({p + "self_attn.q_proj.weight", pairs_to_halves(wq[l], h.n_heads)});
    tensors.push_back({p + "self_attn.k_proj.weight", pairs_to_halves(wk[l], h.n_kv_heads)});
    tensors.push_back({p + "self_attn.v_proj.weight", wv[l]});
    tensors.push_back({p + "self_attn.o_proj.weight", wo[l]});
    tensors.push_back({p + "post_attention_layernorm.weight", ffn_norm[l]});
    tensors.push_back({p + "mlp.gate_proj.weight", w1[l]});
    tensors.push_back({p + "mlp.down_proj.weight", w2[l]});
    tensors.push_back({p + "mlp.up_proj.weight", w3[l]});
  }
  tensors.push_back({"model.norm.weight", final_norm});
  if (!h.shared_classifier) tensors.push_back({"lm_head.weight", classifier});

  std::filesystem::create_directories(out_dir);
  write_safetensors(out_dir + "/model.safetensors", tensors, {{"format", "pt"}, {"source", "llama2.c"}});
  {
    std::ofstream out(out_dir + "/config.json");
    nlohmann::json j = c.to_json();
    out << j.dump(2) << "\n";
    if (!out) fail("{}/config.json: write failed", out_dir);
  }
  std::filesystem::copy_file(tokenizer_path, out_dir + "/llama2c_tokenizer.bin",
                             std::filesystem::copy_options::overwrite_existing);
  return c;
}

}  // namespace kvlab
