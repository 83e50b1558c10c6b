#pragma once
// What a KV-cache method decides, per layer, before any token arrives: how K and V are quantized
// (TensorQuantSpec) and when tokens move from the full-precision part to the quantized part
// (FlushRule). The streaming cache (quantized_layer_cache.h) executes a plan; methods only make one.
#include <cstdint>
#include <string>
#include <vector>

#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packed_attention.h"

namespace kvlab {

using kernels::Granularity;
using kernels::ParamType;

std::string granularity_name(Granularity g);  // "per-token" | "per-channel"
Granularity parse_granularity(const std::string& s, const std::string& where);

// How one of K or V is stored. bits == 16 means "not quantized" (kept in the model's dtype).
struct TensorQuantSpec {
  int bits = 16;                            // 1, 2, 3, 4, 8, or 16 (full precision)
  int64_t group = 32;                       // G; -1 = whole head_dim (per-token only)
  Granularity granularity = Granularity::PerToken;
  bool symmetric = false;
  ParamType param = ParamType::F16;         // storage of scales / zeros (METHODS: fp16)
  // Channels kept in the model's dtype, never quantized (MixKVQ's salient channels); sorted,
  // unique, fewer than head_dim. Groups and codes cover the remaining channels in order.
  std::vector<int64_t> exact_channels;
  // The same per kv-head instead (MixKVQ selects per head): one list per head, every list sorted,
  // unique and of the same length, so all heads share one packed layout. Set this or exact_channels.
  std::vector<std::vector<int64_t>> head_exact_channels;  // [kv_heads][n_exact]

  bool quantized() const { return bits < 16; }
  // Exact channels per head (either form).
  int64_t exact_count() const {
    return static_cast<int64_t>(head_exact_channels.empty() ? exact_channels.size() : head_exact_channels[0].size());
  }
  int64_t quantized_dim(int64_t head_dim) const { return head_dim - exact_count(); }
  // G for a head of head_dim channels: -1 means all the quantized channels.
  int64_t resolved_group(int64_t head_dim) const { return group < 0 ? quantized_dim(head_dim) : group; }
  // Nominal bits per element: b + (scale + zero bits) / G over the quantized channels, 16 for the
  // exact ones, averaged over the head; 16 when not quantized.
  double nominal_bits(int64_t head_dim) const;
  std::string describe() const;             // e.g. "2b per-channel G32"
  void validate(int64_t head_dim, const std::string& where) const;  // throws naming `where`
};

// When the oldest full-precision tokens of a stream (K or V of one layer) are quantized. Called after
// every append with n_full = tokens now in the full-precision part; returns how many of the oldest
// to move. `unit` is the stream's flush granularity: G for per-channel streams (whole groups of
// tokens), 1 for per-token streams, unless the rule fixes its own (KVmix: G for both).
struct FlushRule {
  enum class Kind {
    Never,   // stays in full precision (unquantized streams)
    Eager,   // quantize as soon as whole units exist
    Recent,  // keep at least the newest `window` tokens exact: floor(max(0, n - R) / unit) * unit
    Block,   // KIVI keys: when R tokens have gathered, quantize all of them: floor(n / R) * R
    Ratio,   // KVmix: keep floor(r * n), move floor((n - keep) / unit) * unit
  };
  Kind kind = Kind::Eager;
  int64_t window = 0;   // R for Recent / Block
  double ratio = 0.0;   // r for Ratio
  int64_t unit = 0;     // 0: the stream's own unit

  int64_t tokens_to_flush(int64_t n_full, int64_t stream_unit) const;
  std::string describe() const;  // e.g. "recent(128)", "block(128)", "ratio(0.2)"
};

// A rotation of keys and/or values over head_dim before they are quantized (QuaRot / llama.cpp
// style): R = H diag(s) / sqrt(head_dim), H the Walsh-Hadamard matrix (head_dim a power of two), s
// all ones (sign_seed 0) or a fixed +-1 vector drawn from sign_seed. Keys: the cache holds R k and
// sees R q, so q.k = (Rq).(Rk); values: it holds R v and the attention output is rotated back by
// R^T. Everything the cache does (groups, per-channel ranges, MixKVQ's exact channels) is then over
// the rotated channels. A stream kept at 16 bits is not rotated (that would only add rounding).
struct RotationSpec {
  bool keys = false, values = false;
  uint64_t sign_seed = 0;  // 0: no signs (plain normalized Walsh-Hadamard)
  bool any() const { return keys || values; }
  std::string describe() const;  // "" when none, else e.g. "rotate K+V (hadamard, signs 3)"
  bool operator==(const RotationSpec& o) const {
    return keys == o.keys && values == o.values && sign_seed == o.sign_seed;
  }
};

struct LayerPlan {
  TensorQuantSpec k, v;
  FlushRule k_flush, v_flush;
  RotationSpec rotation;
};

// Whether attention over a multi-token forward (prefill) reads the full-precision keys/values of
// the tokens (KIVI, KVmix reference code) or the cache as stored after this forward's flush
// (llama.cpp). Decode steps always read the stored cache.
enum class PrefillAttention { FullPrecision, Quantized };

struct CachePlan {
  std::string method;                     // registry name that made it
  std::vector<LayerPlan> layers;          // one per transformer layer
  PrefillAttention prefill = PrefillAttention::FullPrecision;

  bool any_quantized() const;
  double nominal_bits_k(int64_t head_dim) const;   // mean over layers of nominal_bits
  double nominal_bits_v(int64_t head_dim) const;
  void validate(int64_t num_layers, int64_t head_dim) const;
  std::string describe_layer(size_t l) const;
};

}  // namespace kvlab
