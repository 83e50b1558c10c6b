// kvlab bench throughput: generation throughput and memory per (method, batch), through each
// method's own cache (kvlab/eval/throughput.h), as a table, CSV and JSON. With --batch max, the
// largest batch whose run fits --memory-budget, found by running batches.
#include <fmt/format.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/common/process_usage.h"
#include "kvlab/common/sha256.h"
#include "kvlab/common/strings.h"
#include "kvlab/eval/throughput.h"
#include "kvlab/eval/throughput_methods.h"
#include "kvlab/kernels/cpu_features.h"
#include "kvlab/model/dtype.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::cli {
namespace {

namespace fs = std::filesystem;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0, kMiB = 1024.0 * 1024.0;

std::vector<std::string> split_list(const std::string& text, const std::string& option) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i)
    if (i == text.size() || text[i] == ',') {
      std::string item = text.substr(start, i - start);
      item.erase(0, item.find_first_not_of(' '));
      item.erase(item.find_last_not_of(' ') + 1);
      if (item.empty()) fail("{} '{}': an empty item in the list", option, text);
      out.push_back(item);
      start = i + 1;
    }
  return out;
}

// "1,8,32" and "max": 0 stands for max.
std::vector<int64_t> parse_batches(const std::string& text) {
  std::vector<int64_t> out;
  for (const auto& item : split_list(text, "--batch")) {
    if (item == "max") {
      out.push_back(0);
      continue;
    }
    try {
      size_t used = 0;
      const int64_t b = std::stoll(item, &used);
      if (used == item.size() && b >= 1) {
        out.push_back(b);
        continue;
      }
    } catch (const std::exception&) {
    }
    fail("--batch '{}': '{}' is not a positive integer or max", text, item);
  }
  return out;
}

// A preset's calibration step (KVmix's profile, ...) run once per inputs on this checkpoint; its
// plan is cached under plans_dir. Returns the plan's path.
std::string calibrate_preset(const MethodChoice& choice, LlamaModel& model, const std::string& model_dir,
                             const std::string& plans_dir) {
  const CalibrationInfo* step = CalibrationRegistry::instance().for_method(choice.method);
  if (!step) fail("--methods {}: the preset has calibration inputs but method '{}' has no calibration step",
                  choice.label, choice.method);
  const ParamSet params = ParamSet::resolve(step->params, choice.calibration, "--methods " + choice.label + " calibration");
  const std::string key = sha256_hex(fmt::format("{}\n{}\n{}\n{}", fs::weakly_canonical(model_dir).string(),
                                                 dtype_name(model.dtype()), choice.method, params.to_json().dump()))
                              .substr(0, 16);
  const fs::path dir = fs::path(plans_dir) / (choice.method + "-" + key);
  const fs::path record = dir / "plan_path.txt";
  if (fs::exists(record)) {
    std::ifstream in(record);
    std::string plan;
    std::getline(in, plan);
    if (fs::exists(plan)) return plan;
  }
  fs::create_directories(dir);
  auto tok = load_tokenizer(model_dir);
  fmt::print(stderr, "{} {} for preset {} (cached in {})\n", step->verb, choice.method, choice.label, dir.string());
  CalibrationContext ctx{model, *tok, model_dir, params, (dir / "plan.yaml").string(), true};
  const std::string plan = step->run(ctx);
  std::ofstream(record) << plan << "\n";
  return plan;
}

double load_average() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

struct Row {
  std::string label, batch_spec;  // batch_spec: "8" or "max"
  ThroughputPoint point;
  int64_t max_batch = -1;         // with max
  nlohmann::json probes = nlohmann::json::array();
};

}  // namespace

int bench_throughput(const Args& args) {
  po::options_description desc("bench throughput options");
  desc.add_options()
    ("model", po::value<std::string>(), "checkpoint directory (config.json, safetensors, tokenizer)")
    ("shape", po::value<std::string>(), ("a named shape with random weights (with --random): " +
                                          join(ModelConfig::shape_names())).c_str())
    ("random", "random weights for --shape (the only kind a shape has; accepted for clarity)")
    ("seed", po::value<uint64_t>()->default_value(0), "seed of random weights, prompts and synthetic K/V")
    ("dtype", po::value<std::string>()->default_value("float16"),
     "weights' and cache's dtype: float16 | bfloat16 | float32 (16-bit computes in fp32 on the CPU)")
    ("device", po::value<std::string>()->default_value("cpu"), "cpu | cuda | cuda:N")
    ("threads", po::value<int>()->default_value(0), "CPU threads (0: all cores)")
    ("prompt-len", po::value<int64_t>()->default_value(688), "prompt tokens per sequence (random ids)")
    ("gen-len", po::value<int64_t>()->default_value(1024), "generated tokens per sequence (no early stop)")
    ("batch", po::value<std::string>()->default_value("1"), "comma list of batches and/or max, e.g. 1,8,32,max")
    ("memory-budget", po::value<double>()->default_value(0.0), "GiB; --batch max searches under it")
    ("budget", po::value<std::string>()->default_value("process"),
     "what the budget bounds: process (peak memory of the run: weights + KV + activations + runtime; a "
     "device's allocator peak on CUDA) | dynamic (that peak minus the memory in use before the run, i.e. "
     "KV + activations: KVmix's memory figure) | kv (the KV cache's bytes at the end)")
    ("max-batch-limit", po::value<int64_t>()->default_value(1024), "--batch max searches up to this batch")
    ("methods", po::value<std::string>()->default_value("fp16,kivi-2"),
     "comma list of presets (from --presets) and/or registered methods")
    ("set", po::value<std::vector<std::string>>()->composing(),
     "[method.]key=value for the listed methods (repeatable)")
    ("presets", po::value<std::string>()->default_value(std::string(KVLAB_SOURCE_DIR) + "/experiments/presets/paper.yaml"),
     "presets file for --methods names")
    ("plans", po::value<std::string>()->default_value("results/throughput-plans"),
     "where presets' calibration plans are cached (checkpoints only)")
    ("fill", po::value<std::string>(),
     "prefill | synthetic (default: synthetic for --shape, prefill for --model)")
    ("no-warmup", "skip the untimed warm-up generation before each run")
    ("csv", po::value<std::string>(), "write one row per (method, batch) here")
    ("json", po::value<std::string>(), "write every number (per-step times included) here")
    ("quiet", "no progress lines");
  auto vm = parse(args, desc,
                  "kvlab bench throughput (--model DIR | --shape NAME --random) [--dtype float16] [--prompt-len 688] "
                  "[--gen-len 1024] [--batch 1,8,max] [--memory-budget GiB] [--methods fp16,kivi-2,...]");
  if (!vm) return 0;

  // Everything is checked before the model loads.
  const bool from_dir = vm->count("model") > 0;
  if (from_dir == (vm->count("shape") > 0)) fail("give exactly one of --model DIR and --shape NAME --random");
  const std::vector<int64_t> batches = parse_batches((*vm)["batch"].as<std::string>());
  MemoryBudget budget;
  budget.kind = parse_budget_kind((*vm)["budget"].as<std::string>(), "--budget");
  const double budget_gib = (*vm)["memory-budget"].as<double>();
  if (budget_gib < 0) fail("--memory-budget must be >= 0 GiB, got {}", budget_gib);
  budget.bytes = static_cast<int64_t>(budget_gib * kGiB);
  if (std::count(batches.begin(), batches.end(), 0) > 0 && !budget.active())
    fail("--batch max needs --memory-budget GiB to search under");
  const std::vector<std::string> sets =
      vm->count("set") ? (*vm)["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  std::vector<MethodChoice> choices = resolve_method_choices(split_list((*vm)["methods"].as<std::string>(), "--methods"),
                                                             sets, (*vm)["presets"].as<std::string>());
  ThroughputOptions opt;
  opt.prompt_len = (*vm)["prompt-len"].as<int64_t>();
  opt.gen_len = (*vm)["gen-len"].as<int64_t>();
  if (opt.prompt_len < 1 || opt.gen_len < 1) fail("--prompt-len and --gen-len must be >= 1");
  opt.fill = vm->count("fill") ? parse_cache_fill((*vm)["fill"].as<std::string>(), "--fill")
                               : (from_dir ? CacheFill::Prefill : CacheFill::Synthetic);
  opt.seed = (*vm)["seed"].as<uint64_t>();
  opt.warmup = !vm->count("no-warmup");
  opt.progress = vm->count("quiet") ? nullptr : stderr;
  const int64_t limit = (*vm)["max-batch-limit"].as<int64_t>();
  if (limit < 1) fail("--max-batch-limit must be >= 1");

  set_threads((*vm)["threads"].as<int>());
  LoadOptions load;
  load.dtype = parse_dtype((*vm)["dtype"].as<std::string>());
  load.device = parse_device((*vm)["device"].as<std::string>());
  std::string model_name;
  std::optional<LlamaModel> model;
  if (from_dir) {
    model_name = (*vm)["model"].as<std::string>();
    model.emplace(LlamaModel::load(model_name, load));
  } else {
    model_name = (*vm)["shape"].as<std::string>();
    model.emplace(LlamaModel::random(ModelConfig::named_shape(model_name), opt.seed, load));
  }
  const ModelConfig& c = model->config();
  if (opt.prompt_len + opt.gen_len > c.max_position_embeddings)
    fail("--prompt-len {} + --gen-len {} exceed the model's {} positions", opt.prompt_len, opt.gen_len,
         c.max_position_embeddings);

  const int64_t weights = model->weight_bytes();
  const std::string machine = fmt::format("{}, {} threads, kernels {}", load.device.str(), at::get_num_threads(),
                                          kernels::kernel_isa());
  fmt::print("model {} ({}{}, {:.1f}M parameters, weights {:.1f} MiB {}); {}\n", model_name,
             from_dir ? "checkpoint" : "random weights", from_dir ? "" : fmt::format(", seed {}", opt.seed),
             c.parameter_count() / 1e6, weights / kMiB, dtype_name(model->dtype()), machine);
  fmt::print("prompt {} + {} generated tokens per sequence; cache fill: {}; budget: {}\n", opt.prompt_len, opt.gen_len,
             opt.fill == CacheFill::Prefill ? "real prefill of random prompt ids"
                                            : "synthetic K/V through each method's quantizer, then the last prompt token",
             budget.describe());
  fmt::print("tok/s: prefill = B*P/prefill s; decode = B*(N-1)/decode s; dec/cpu-s = the same per CPU-second of the "
             "process (all threads; a loaded machine's waits excluded); steady = B/median step; generate = B*N/total s; "
             "kvmix = B*(P+N)/total s (KVmix's script counts prompt tokens)\n");
  const double load_start = load_average();
  fmt::print("load average {:.2f} at start\n\n", load_start);

  std::vector<Row> rows;
  for (auto& choice : choices) {
    const CalibrationInfo* step = CalibrationRegistry::instance().for_method(choice.method);
    const YAML::Node& given = choice.params;
    if (choice.calibration.size() > 0 && step && !given[step->plan_param]) {
      if (!from_dir)
        fail("--methods {}: the preset needs '{} {}' on a checkpoint with a tokenizer; with --shape use a preset "
             "without calibration (e.g. kvmix-random-k2.19v2.38) or --set {}.{}=FILE",
             choice.label, step->verb, choice.method, choice.label, step->plan_param);
      choice.params[step->plan_param] = calibrate_preset(choice, *model, model_name, (*vm)["plans"].as<std::string>());
    }
    auto method = MethodRegistry::instance().create(choice.method, choice.params, "--methods " + choice.label);
    method->calibrate(*model);
    CachePlan plan = method->plan(c);
    plan.method = choice.label;
    plan.validate(c.num_hidden_layers, c.head_dim);
    std::map<int64_t, ThroughputPoint> explicit_runs;  // a listed batch is not run again as a max-batch probe
    for (int64_t b : batches) {
      Row row;
      row.label = choice.label;
      row.batch_spec = b == 0 ? "max" : std::to_string(b);
      if (b > 0) {
        row.point = run_throughput_point(*model, plan, b, opt, budget);
        explicit_runs[b] = row.point;
      } else {
        std::map<int64_t, ThroughputPoint> fitted;
        const MaxBatchSearch s = search_max_batch(
            [&](int64_t bb) {
              ThroughputPoint pt = explicit_runs.count(bb) ? explicit_runs.at(bb)
                                                           : run_throughput_point(*model, plan, bb, opt, budget);
              const BatchProbe out{!pt.over_budget && pt.measured(budget) <= budget.bytes, pt.measured(budget)};
              if (opt.progress)
                fmt::print(stderr, "  {} batch {}: {} ({:.3f} GiB measured)\n", choice.label, bb,
                           out.fits ? "fits" : "over budget", out.measured / kGiB);
              row.probes.push_back({{"batch", bb}, {"fits", out.fits}, {"measured_gib", out.measured / kGiB},
                                    {"decode_tok_s", pt.decode_tok_s()}});
              if (out.fits) fitted[bb] = std::move(pt);
              return out;
            },
            budget.bytes, limit);
        row.max_batch = s.max_batch;
        if (s.max_batch == 0) {
          fmt::print(stderr, "{}: batch 1 does not fit the budget ({})\n", choice.label, budget.describe());
          row.point.method = choice.label;
        } else {
          row.point = fitted.at(s.max_batch);
        }
      }
      rows.push_back(std::move(row));
    }
  }

  // Relative to fp16 at the same batch spec (the first method whose cache is full precision).
  auto baseline = [&](const Row& r) -> const Row* {
    for (const auto& o : rows)
      if (o.batch_spec == r.batch_spec && o.point.batch > 0 && std::abs(o.point.memory_ratio() - 1.0) < 1e-9)
        return &o;
    return nullptr;
  };
  fmt::print("{:<22} {:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>6} {:>6} {:>6} {:>9} {:>9} {:>7}\n",
             "method", "batch", "max", "prefill/s", "decode/s", "dec/cpu-s", "steady/s", "generate/s", "kvmix/s", "KV MiB",
             "bitsK", "bitsV", "ratio", "peak MiB", "dyn MiB", "x fp16");
  for (const auto& r : rows) {
    const ThroughputPoint& p = r.point;
    const Row* base = baseline(r);
    const std::string rel = base && base->point.decode_tok_s() > 0
                                ? fmt::format("{:.2f}", p.decode_tok_s() / base->point.decode_tok_s())
                                : "-";
    fmt::print("{:<22} {:>5} {:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>9.1f} {:>6.3f} "
               "{:>6.3f} {:>6.4f} {:>9.1f} {:>9.1f} {:>7}{}\n",
               r.label, p.batch, r.max_batch >= 0 ? std::to_string(r.max_batch) : "-", p.prefill_tok_s(),
               p.decode_tok_s(), p.decode_tok_per_cpu_s(), p.steady_decode_tok_s(), p.generate_tok_s(), p.kvmix_tok_s(), p.bytes.total() / kMiB,
               p.bits_k(), p.bits_v(), p.memory_ratio(), p.peak_memory() / kMiB, p.dynamic_memory() / kMiB, rel,
               p.over_budget ? "  (over budget: stopped)" : "");
  }

  nlohmann::json config = {{"model", model_name},
                           {"random_weights", !from_dir},
                           {"seed", opt.seed},
                           {"dtype", dtype_name(model->dtype())},
                           {"device", load.device.str()},
                           {"threads", at::get_num_threads()},
                           {"kernels", kernels::kernel_isa()},
                           {"parameters", c.parameter_count()},
                           {"weight_bytes", weights},
                           {"prompt_len", opt.prompt_len},
                           {"gen_len", opt.gen_len},
                           {"fill", cache_fill_name(opt.fill)},
                           {"budget", budget.describe()},
                           {"budget_kind", budget_kind_name(budget.kind)},
                           {"budget_bytes", budget.bytes},
                           {"load_average_at_start", load_start},
                           {"load_average_at_end", load_average()}};
  if (vm->count("csv")) {
    const std::string path = (*vm)["csv"].as<std::string>();
    std::ofstream out(path);
    if (!out) fail("--csv {}: cannot write", path);
    out << "model,dtype,fill,prompt_len,gen_len,method,batch_spec,batch,max_batch,prefill_tok_s,decode_tok_s,"
           "decode_tok_per_cpu_s,steady_decode_tok_s,generate_tok_s,kvmix_tok_s,kv_bytes,bits_k,bits_v,memory_ratio,rss_before_bytes,"
           "peak_rss_bytes,peak_device_bytes,dynamic_memory_bytes,over_budget,decode_vs_fp16\n";
    for (const auto& r : rows) {
      const ThroughputPoint& p = r.point;
      const Row* base = baseline(r);
      out << fmt::format("{},{},{},{},{},{},{},{},{},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{},{:.4f},{:.4f},{:.5f},{},{},{},{},{},{}\n",
                         model_name, dtype_name(model->dtype()), cache_fill_name(opt.fill), opt.prompt_len,
                         opt.gen_len, r.label, r.batch_spec, p.batch, r.max_batch, p.prefill_tok_s(), p.decode_tok_s(),
                         p.decode_tok_per_cpu_s(),
                         p.steady_decode_tok_s(), p.generate_tok_s(), p.kvmix_tok_s(), p.bytes.total(), p.bits_k(),
                         p.bits_v(), p.memory_ratio(), p.rss_before, p.peak_rss, p.peak_device, p.dynamic_memory(),
                         p.over_budget ? 1 : 0,
                         base && base->point.decode_tok_s() > 0
                             ? fmt::format("{:.4f}", p.decode_tok_s() / base->point.decode_tok_s())
                             : "");
    }
    if (!out) fail("--csv {}: write failed", path);
  }
  if (vm->count("json")) {
    const std::string path = (*vm)["json"].as<std::string>();
    nlohmann::json j = {{"config", config}, {"points", nlohmann::json::array()}};
    for (const auto& r : rows) {
      nlohmann::json pj = r.point.to_json(/*with_steps=*/true);
      pj["label"] = r.label;
      pj["batch_spec"] = r.batch_spec;
      if (r.max_batch >= 0) pj["max_batch"] = r.max_batch, pj["probes"] = r.probes;
      j["points"].push_back(pj);
    }
    std::ofstream out(path);
    if (!out) fail("--json {}: cannot write", path);
    out << j.dump(1) << "\n";
    if (!out) fail("--json {}: write failed", path);
  }
  return 0;
}

int bench(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("usage: kvlab bench <what> [options]\n\n  throughput  generation tokens/s and memory per (method, batch); "
               "max batch under a memory budget\n");
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "throughput") return bench_throughput(Args(args.begin() + 1, args.end()));
  fail("unknown bench '{}' (valid: throughput)", args[0]);
}

}  // namespace kvlab::cli
