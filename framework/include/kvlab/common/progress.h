#pragma once
// A progress line for long work: "label  done/total unit  rate/s  ETA mm:ss  extra". On a terminal
// it redraws one line; otherwise (logs, CI, Slurm) it prints a line at most every `interval` seconds.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kvlab {

class Progress {
 public:
  // rate_unit names what the rate counts when it is not `unit` (e.g. windows done, tokens/s).
  Progress(std::string label, int64_t total, std::string unit, std::string rate_unit = "",
           double interval_s = 10.0, std::FILE* out = stderr);
  // Advance by n units; `extra` is appended (e.g. "ppl 12.3"). rate_units counts the rate's units
  // when they differ from the progress units (e.g. tokens/s while counting windows).
  void advance(int64_t n = 1, const std::string& extra = "", int64_t rate_units = -1);
  void finish(const std::string& extra = "");
  // Prints the line now and ends it with a newline even on a terminal: a status line (e.g. the
  // experiment runner's "cell 3/12 ... now: <cell>") that inner progress lines must not overwrite.
  void print_now(const std::string& extra = "");
  double elapsed_s() const;
  static std::string format_duration(double seconds);  // "1:02:03" or "02:03"

 private:
  void draw(bool final);
  std::string line(bool final) const;
  std::string label_, unit_, rate_unit_, extra_;
  int64_t total_, done_ = 0, rate_count_ = 0;
  double interval_s_;
  std::FILE* out_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kvlab
