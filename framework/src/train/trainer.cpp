#include "kvlab/train/trainer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/progress.h"
#include "kvlab/eval/perplexity.h"
#include "kvlab/model/dtype.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/model/safetensors.h"
#include "kvlab/tokenizer/sentencepiece_tokenizer.h"
#include "kvlab/train/adamw.h"

namespace kvlab {
namespace fs = std::filesystem;
namespace {

std::string read_text(const std::string& path, const char* what) {
  check_input_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read the {}", path, what);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The trainable tensors of a model, in a fixed order, each once (a tied LM head is the embedding).
struct Parameters {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  std::vector<bool> decay;  // matrices decay, norms do not
};

Parameters collect(ModelWeights& w) {
  Parameters p;
  auto add = [&](const std::string& name, at::Tensor& t, bool decay) {
    if (!t.defined()) return;
    for (const auto& seen : p.tensors)
      if (seen.is_same(t)) return;
    p.names.push_back(name);
    p.tensors.push_back(t);
    p.decay.push_back(decay);
  };
  add("embed", w.embed, true);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& lw = w.layers[l];
    const std::string pre = fmt::format("layers.{}.", l);
    add(pre + "input_norm", lw.input_norm, false);
    add(pre + "q_proj", lw.q_proj, true);
    add(pre + "k_proj", lw.k_proj, true);
    add(pre + "v_proj", lw.v_proj, true);
    add(pre + "o_proj", lw.o_proj, true);
    add(pre + "post_norm", lw.post_norm, false);
    add(pre + "gate_proj", lw.gate_proj, true);
    add(pre + "up_proj", lw.up_proj, true);
    add(pre + "down_proj", lw.down_proj, true);
  }
  add("final_norm", w.final_norm, false);
  add("lm_head", w.lm_head, true);
  return p;
}

struct Checkpoint {
  int64_t step = 0, tokens = 0;
  double seconds = 0;
};

// <out>/checkpoint holds the last complete one; while a new one is written the previous one is
// kept as checkpoint.old, so there is always a complete checkpoint on disk.
std::string find_checkpoint(const std::string& out) {
  for (const char* name : {"checkpoint", "checkpoint.old"})
    if (fs::exists(fs::path(out) / name / "state.json")) return (fs::path(out) / name).string();
  return "";
}

void write_checkpoint(const std::string& out, const Parameters& p, AdamW& opt, const Checkpoint& c,
                      const nlohmann::json& config) {
  const fs::path dir = fs::path(out) / "checkpoint", tmp = fs::path(out) / "checkpoint.tmp",
                 old = fs::path(out) / "checkpoint.old";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    tensors.push_back({"param." + p.names[i], p.tensors[i].detach()});
    tensors.push_back({"exp_avg." + p.names[i], opt.exp_avg()[i]});
    tensors.push_back({"exp_avg_sq." + p.names[i], opt.exp_avg_sq()[i]});
  }
  write_safetensors((tmp / "state.safetensors").string(), tensors);
  nlohmann::json state = {{"step", c.step}, {"tokens", c.tokens}, {"seconds", c.seconds}, {"config", config}};
  std::ofstream((tmp / "state.json").string()) << state.dump(1) << "\n";
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

Checkpoint read_checkpoint(const std::string& dir, Parameters& p, AdamW& opt, const nlohmann::json& config) {
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_text(dir + "/state.json", "checkpoint state"));
  } catch (const nlohmann::json::exception& e) {
    fail("{}/state.json: corrupt checkpoint state ({})", dir, e.what());
  }
  if (state.value("config", nlohmann::json()) != config)
    fail("{}: the checkpoint was made with a different config; use another --out or delete the folder", dir);
  SafetensorsFile f(dir + "/state.safetensors");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    p.tensors[i].copy_(f.tensor("param." + p.names[i]));
    opt.exp_avg()[i].copy_(f.tensor("exp_avg." + p.names[i]));
    opt.exp_avg_sq()[i].copy_(f.tensor("exp_avg_sq." + p.names[i]));
  }
  Checkpoint c;
  c.step = state["step"].get<int64_t>();
  c.tokens = state["tokens"].get<int64_t>();
  c.seconds = state["seconds"].get<double>();
  opt.set_steps(c.step);
  return c;
}

// Keeps the log lines of steps <= step (a resumed run redoes the steps after its checkpoint).
void truncate_log(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  check_input_file(path, "training log");
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      break;  // a line cut by a kill: everything after it is redone
    }
  }
  std::ofstream(path, std::ios::trunc) << kept;
}

}  // namespace

TrainSummary train_model(const TrainConfig& config_in, const TrainRun& run) {
  TrainConfig cfg = config_in;
  const ParamSet& tp = cfg.train;
  set_threads(static_cast<int>(std::clamp<int64_t>(tp.integer("threads"), -1, 1 << 20)), "train.threads");
  fs::create_directories(run.out);

  // Tokenizer: trained on the training text once; a resumed run reuses it.
  const std::string tok_path = run.out + "/tokenizer.model";
  if (!fs::exists(tok_path)) {
    train_sentencepiece(run.text, run.out + "/tokenizer", cfg.tokenizer_vocab);
    fs::remove(run.out + "/tokenizer.vocab");
  }
  SentencePieceTokenizer tok(tok_path);
  if (!tok.bos_id()) fail("{}: the tokenizer has no BOS piece", tok_path);
  cfg.model.vocab_size = tok.vocab_size();
  cfg.model.bos_token_id = tok.bos_id();
  cfg.model.eos_token_ids = {*tok.eos_id()};
  const nlohmann::json resolved = cfg.to_json();

  const std::vector<int32_t> ids = tok.encode(read_text(run.text, "training text"), false);
  const int64_t T = tp.integer("seq_len"), B = tp.integer("batch_size"), steps = tp.integer("steps");
  if (static_cast<int64_t>(ids.size()) < T)
    fail("{}: {} tokens, fewer than one training sequence of {}", run.text, ids.size(), T);
  const at::Tensor data = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong);  // [N]

  const uint64_t seed = static_cast<uint64_t>(tp.integer("seed"));
  LlamaModel model = LlamaModel::random(cfg.model, seed, {}, tp.real("init_std"));
  Parameters params = collect(model.weights());
  {
    // Residual projections start smaller (GPT-2's 1/sqrt(2 * layers)) so the stream's variance
    // does not grow with depth at initialisation.
    at::NoGradGuard no_grad;
    const double s = 1.0 / std::sqrt(2.0 * static_cast<double>(cfg.model.num_hidden_layers));
    for (auto& lw : model.weights().layers) {
      lw.o_proj.mul_(s);
      lw.down_proj.mul_(s);
    }
  }
  for (auto& t : params.tensors) t.requires_grad_(true);
  int64_t n_params = 0;
  for (const auto& t : params.tensors) n_params += t.numel();

  AdamWOptions ao;
  ao.beta1 = tp.real("beta1");
  ao.beta2 = tp.real("beta2");
  ao.weight_decay = tp.real("weight_decay");
  AdamW opt(params.tensors, params.decay, ao);

  TrainSummary sum;
  sum.parameters = n_params;
  Checkpoint ck;
  const std::string log_path = run.out + "/train_log.jsonl";
  if (const std::string dir = find_checkpoint(run.out); !dir.empty()) {
    ck = read_checkpoint(dir, params, opt, resolved);
    sum.resumed = true;
    truncate_log(log_path, ck.step);
    if (run.progress) fmt::print(stderr, "train: resuming {} at step {}/{}\n", dir, ck.step, steps);
  } else {
    std::ofstream(log_path, std::ios::trunc);
  }
  std::ofstream log(log_path, std::ios::app);

  const int64_t bos = *tok.bos_id();
  const int64_t N = data.size(0);
  std::vector<double> recent;
  const int64_t stop_at = run.stop_after >= 0 ? std::min(steps, run.stop_after) : steps;
  Progress progress("train", steps, "steps", "tok", 10.0);
  progress.advance(ck.step, "", 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (int64_t step = ck.step; step < stop_at; ++step) {
    // Batch of step `step`: BOS + T-1 text tokens from offsets drawn by a generator seeded by (seed, step).
    std::mt19937_64 gen(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step) + 1);
    std::uniform_int_distribution<int64_t> offset(0, N - (T - 1));
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < B; ++b) rows.push_back(data.narrow(0, offset(gen), T - 1));
    const at::Tensor targets = at::stack(rows);                                                  // [B, T-1]
    const at::Tensor inputs = at::cat({at::full({B, 1}, bos, at::kLong), targets.narrow(1, 0, T - 2)}, 1);  // [B, T-1]

    KvCache cache = model.make_full_precision_cache();
    const at::Tensor logits = model.forward(inputs, cache);                                      // [B, T-1, V]
    const at::Tensor loss = at::nll_loss(at::log_softmax(logits.reshape({-1, logits.size(-1)}), -1),
                                         targets.reshape({-1}));
    loss.backward();
    const double grad_norm = clip_grad_norm(params.tensors, tp.real("grad_clip"));
    const double lr = warmup_cosine_lr(step, tp.integer("warmup_steps"), steps, tp.real("lr"), tp.real("min_lr"));
    opt.step(lr);
    opt.zero_grad();

    const double l = loss.item<double>();
    if (!std::isfinite(l)) fail("train: the loss became {} at step {} (lower lr or raise warmup_steps)", l, step + 1);
    recent.push_back(l);
    if (recent.size() > 20) recent.erase(recent.begin());
    ck.step = step + 1;
    ck.tokens += B * (T - 1);
    log << nlohmann::json{{"step", ck.step}, {"loss", l}, {"lr", lr}, {"grad_norm", grad_norm}, {"tokens", ck.tokens},
                          {"seconds", ck.seconds + elapsed()}}.dump()
        << "\n" << std::flush;
    if (run.progress) progress.advance(1, fmt::format("loss {:.4f} lr {:.2e}", l, lr), B * (T - 1));
    if (ck.step % tp.integer("checkpoint_every") == 0 || ck.step == stop_at) {
      Checkpoint save = ck;
      save.seconds += elapsed();
      write_checkpoint(run.out, params, opt, save, resolved);
    }
  }
  sum.seconds = elapsed();
  sum.total_seconds = ck.seconds + sum.seconds;
  sum.steps_done = ck.step;
  sum.tokens_seen = ck.tokens;
  for (double l : recent) sum.final_train_loss += l / static_cast<double>(recent.size());
  if (run.progress) progress.finish(fmt::format("loss {:.4f}", sum.final_train_loss));
  if (ck.step < steps) return sum;  // stopped early on purpose (stop_after): resumable

  // The checkpoint other commands load, then its perplexity on the held-out text, measured from
  // the saved (e.g. fp16) weights.
  for (auto& t : params.tensors) t.requires_grad_(false);
  model.save(run.out, parse_dtype(tp.string("save_dtype")));
  sum.finished = true;
  nlohmann::json summary = {{"config", resolved}, {"text", run.text}, {"steps", ck.step}, {"tokens", ck.tokens},
                            {"parameters", n_params}, {"final_train_loss", sum.final_train_loss},
                            {"wall_seconds", sum.total_seconds}};
  if (!run.test.empty()) {
    LlamaModel saved = LlamaModel::load(run.out);
    PerplexityOptions po;
    po.ctx = T;
    po.max_windows = cfg.eval.integer("windows");
    po.bos_id = static_cast<int32_t>(bos);
    po.progress = run.progress;
    const auto r = evaluate_perplexity(saved, tok.encode(read_text(run.test, "test text"), false), po);
    sum.test_ppl = r.ppl();
    sum.test_tokens = r.predicted;
    summary["test"] = {{"text", run.test}, {"ppl", r.ppl()}, {"predicted_tokens", r.predicted},
                       {"windows", r.windows}, {"ctx", T}, {"bos", "window"}};
  }
  std::ofstream(run.out + "/training.json") << summary.dump(1) << "\n";
  return sum;
}

}  // namespace kvlab
