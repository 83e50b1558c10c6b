#include "kvlab/runner/slurm_script.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <utility>
#include <vector>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"
#include "kvlab/results/results_store.h"

namespace kvlab {
namespace fs = std::filesystem;

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

namespace {

// A value for an #SBATCH line, read back by sbatch as one argument equal to `text`. sbatch splits
// the line at white space outside quotes (a backslash does not keep a space), ends it at an unquoted
// '#', and inside quotes takes the character after a backslash literally: a value with anything but
// plainly safe characters goes in double quotes, its '"' and backslashes escaped.
std::string sbatch_quote(const std::string& text) {
  const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("/._-:=,+@%").find(c) != std::string_view::npos;
  });
  if (plain) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A folder for Slurm's --output, whose file names expand %a, %j, ...: '%' doubled so the folder's
// own name is taken as it is.
std::string slurm_pattern_literal(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '%' ? std::string("%%") : std::string(1, c);
  return out;
}

// `text` as one line with its control characters written as \n, \t, \xNN (for error messages).
std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}

// Every path and value goes into a script quoted, but a control character would still end a
// comment or an #SBATCH line and start a command: refused.
void check_script_value(const std::string& what, const std::string& value) {
  for (unsigned char c : value)
    if (c < 0x20 || c == 0x7f)
      fail("kvlab slurm: {} '{}' holds a control character, which cannot go into a job script", what, printable(value));
}

void write_script(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) fail("{}: cannot write", path);
  out << text;
  out.close();
  chmod(path.c_str(), 0755);
}

std::string sbatch_lines(const SlurmOptions& o) {
  std::string s = fmt::format("#SBATCH --cpus-per-task={}\n", o.cpus_per_task);
  if (!o.partition.empty()) s += fmt::format("#SBATCH --partition={}\n", sbatch_quote(o.partition));
  if (!o.time.empty()) s += fmt::format("#SBATCH --time={}\n", sbatch_quote(o.time));
  if (!o.mem.empty()) s += fmt::format("#SBATCH --mem={}\n", sbatch_quote(o.mem));
  if (!o.gres.empty()) s += fmt::format("#SBATCH --gres={}\n", sbatch_quote(o.gres));
  for (const auto& e : o.extra) s += fmt::format("#SBATCH {}\n", sbatch_quote(e));
  return s;
}

}  // namespace

SlurmFiles write_slurm_scripts(const ExperimentSpec& spec, const SlurmOptions& o) {
  if (o.array < 1) fail("--array {}: need at least 1 shard", o.array);
  const fs::path out = fs::absolute(o.out_dir).lexically_normal();
  const std::string spec_path = fs::absolute(spec.file).lexically_normal().string();
  for (const auto& [what, value] : std::vector<std::pair<std::string, std::string>>{
           {"--out", out.string()}, {"the spec path", spec_path}, {"--store", o.store}, {"--cache", o.cache},
           {"--kvlab", o.kvlab_binary}, {"--partition", o.partition}, {"--time", o.time}, {"--mem", o.mem},
           {"--gres", o.gres}})
    check_script_value(what, value);
  for (const auto& e : o.extra) check_script_value("--sbatch", e);
  // sbatch reads "hetjob" or "packjob" anywhere in an #SBATCH line as the start of another job component.
  for (const auto& [what, value] : std::vector<std::pair<std::string, std::string>>{
           {"--out", out.string()}, {"--partition", o.partition}, {"--time", o.time}, {"--mem", o.mem},
           {"--gres", o.gres}, {"--sbatch", join(o.extra, " ")}}) {
    std::string lower = value;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("hetjob") != std::string::npos || lower.find("packjob") != std::string::npos)
      fail("kvlab slurm: {} '{}' holds 'hetjob' or 'packjob', which sbatch reads as a job separator in an #SBATCH "
           "line", what, value);
  }
  // Slurm takes a log name holding a '\' as it is, without expanding %a: the shards' logs would collide.
  if (out.string().find('\\') != std::string::npos)
    fail("kvlab slurm: --out '{}' holds a '\\', which makes Slurm ignore the %a in the shards' log names", out.string());
  fs::create_directories(out / "logs");
  fs::create_directories(out / "shards");
  const std::string stamp = utc_now_iso8601();

  SlurmFiles files;
  files.array_script = (out / "array.sbatch").string();
  files.merge_script = (out / "merge.sbatch").string();
  files.submit_script = (out / "submit.sh").string();
  for (int64_t i = 0; i < o.array; ++i)
    files.shard_stores.push_back((out / "shards" / fmt::format("shard-{}.sqlite", i)).string());

  // The shard's store: the folder single-quoted, the task id expanded by bash.
  const std::string shard_store = shell_quote((out / "shards").string()) + "/shard-\"${SLURM_ARRAY_TASK_ID}\".sqlite";
  const std::string logs = sbatch_quote(slurm_pattern_literal((out / "logs").string()));
  write_script(files.array_script, fmt::format(
      "#!/bin/bash\n"
      "# kvlab experiment '{name}' as a Slurm array: task i runs shard i/{n} of the grid into its own store.\n"
      "# Written by 'kvlab slurm' at {stamp}; submit with {submit}.\n"
      "#SBATCH --job-name=kvlab-{name}\n"
      "#SBATCH --array=0-{last}\n"
      "#SBATCH --output={logs}/shard-%a.out\n"
      "{sbatch}"
      "set -euo pipefail\n"
      "exec {kvlab} run {spec} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\" --store {shard_store} \\\n"
      "  --cache {cache} --skip-done-in {store} --threads \"${{SLURM_CPUS_PER_TASK:-0}}\" --no-table\n",
      fmt::arg("name", spec.name), fmt::arg("n", o.array), fmt::arg("last", o.array - 1), fmt::arg("stamp", stamp),
      fmt::arg("submit", shell_quote(files.submit_script)), fmt::arg("logs", logs),
      fmt::arg("sbatch", sbatch_lines(o)), fmt::arg("kvlab", shell_quote(o.kvlab_binary)),
      fmt::arg("spec", shell_quote(spec_path)), fmt::arg("shard_store", shard_store),
      fmt::arg("cache", shell_quote(o.cache)), fmt::arg("store", shell_quote(o.store))));

  std::string stores;
  for (const auto& s : files.shard_stores) stores += " " + shell_quote(s);
  write_script(files.merge_script, fmt::format(
      "#!/bin/bash\n"
      "# Joins the {n} shard stores of experiment '{name}' into {store} (cells already there are kept).\n"
      "#SBATCH --job-name=kvlab-{name}-merge\n"
      "#SBATCH --output={logs}/merge.out\n"
      "#SBATCH --cpus-per-task=1\n"
      "{extra}"
      "set -euo pipefail\n"
      "exec {kvlab} results merge{stores} --out {store}\n",
      fmt::arg("n", o.array), fmt::arg("name", spec.name), fmt::arg("store", shell_quote(o.store)),
      fmt::arg("logs", logs), fmt::arg("extra", [&] {
        std::string s;
        if (!o.partition.empty()) s += fmt::format("#SBATCH --partition={}\n", sbatch_quote(o.partition));
        for (const auto& e : o.extra) s += fmt::format("#SBATCH {}\n", sbatch_quote(e));
        return s;
      }()),
      fmt::arg("kvlab", shell_quote(o.kvlab_binary)), fmt::arg("stores", stores)));

  write_script(files.submit_script, fmt::format(
      "#!/bin/bash\n"
      "# Submits experiment '{name}': the shard array, then the merge once every shard succeeded.\n"
      "# Arguments go to the merge job's sbatch (e.g. --wait: return when the merged store is written).\n"
      "set -euo pipefail\n"
      "array=$(sbatch --parsable {array})\n"
      "array=${{array%%;*}}\n"
      "echo \"submitted shard array job $array ({n} tasks)\"\n"
      "merge=$(sbatch --parsable --dependency=afterok:$array --kill-on-invalid-dep=yes \"$@\" {merge})\n"
      "echo \"merge job ${{merge%%;*}} writes \"{store}\n",
      fmt::arg("name", spec.name), fmt::arg("array", shell_quote(files.array_script)), fmt::arg("n", o.array),
      fmt::arg("merge", shell_quote(files.merge_script)), fmt::arg("store", shell_quote(o.store))));
  return files;
}

}  // namespace kvlab
