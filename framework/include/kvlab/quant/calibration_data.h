#pragma once
// Calibration text for the offline steps (KVTuner's sensitivity search, MixKVQ's channel
// statistics, KVmix's profile): the parameters every step declares the same way (calib, samples,
// max_len, bos) and the token windows they describe.
//   - a plain text file: tokenized once and cut into `samples` consecutive windows of `max_len`
//     tokens (BOS included with bos: window), as the perplexity protocol cuts its windows;
//   - a .jsonl file: one sample per record (its "text" field, or LongBench's "context" + "input"),
//     truncated to max_len tokens; records shorter than 2 tokens are skipped.
#include <cstdint>
#include <string>
#include <vector>

#include "kvlab/quant/params.h"

namespace kvlab {

class Tokenizer;

// calib (required), samples, max_len, bos: declared once for every step.
std::vector<ParamSpec> calibration_data_params(int64_t default_samples = 8, int64_t default_max_len = 512);

// The windows (token ids, BOS first when asked) the parameters describe. Errors name the file.
std::vector<std::vector<int64_t>> load_calibration_windows(const ParamSet& params, const Tokenizer& tokenizer);

}  // namespace kvlab
