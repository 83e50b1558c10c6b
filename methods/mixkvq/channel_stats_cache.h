#pragma once
// A full-precision layer cache that also records MixKVQ's channel statistics: every attend() call
// shows it the layer's queries and keys after RoPE, which the model never exposes otherwise.
#include <memory>

#include "channel_salience.h"
#include "kvlab/cache/kv_cache.h"

namespace kvlab::mixkvq {

class ChannelStatsLayerCache : public LayerCache {
 public:
  explicit ChannelStatsLayerCache(ChannelStats& stats) : stats_(stats) {}

  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    stats_.add_queries(q);
    stats_.add_keys(k);
    return inner_.attend(q, k, v);
  }
  int64_t length() const override { return inner_.length(); }
  CacheBytes bytes() const override { return inner_.bytes(); }
  void reset() override { inner_.reset(); }

 private:
  ChannelStats& stats_;
  FullPrecisionLayerCache inner_;
};

}  // namespace kvlab::mixkvq
