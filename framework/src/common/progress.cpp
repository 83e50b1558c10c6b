#include "kvlab/common/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>

namespace kvlab {

Progress::Progress(std::string label, int64_t total, std::string unit, std::string rate_unit,
                   double interval_s, std::FILE* out)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      rate_unit_(rate_unit.empty() ? unit_ : std::move(rate_unit)),
      total_(total),
      interval_s_(interval_s),
      out_(out),
      tty_(out != nullptr && isatty(fileno(out))),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{:02}:{:02}", t / 60, t % 60);
}

void Progress::advance(int64_t n, const std::string& extra, int64_t rate_units) {
  done_ += n;
  rate_count_ += rate_units >= 0 ? rate_units : n;
  if (!extra.empty()) extra_ = extra;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.2 : interval_s_) || done_ == total_) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish(const std::string& extra) {
  if (!extra.empty()) extra_ = extra;
  draw(true);
}

std::string Progress::line(bool final) const {
  const double el = elapsed_s();
  const double rate = el > 0 ? rate_count_ / el : 0.0;
  const double unit_rate = el > 0 ? done_ / el : 0.0;
  const double eta = (unit_rate > 0 && total_ > 0) ? (total_ - done_) / unit_rate : NAN;
  // Slow work (experiment cells) has rates well below one a second: keep three digits.
  const std::string rate_text = rate > 0 && rate < 1 ? fmt::format("{:.3g}", rate) : fmt::format("{:.1f}", rate);
  std::string text = fmt::format("{}  {}/{} {}  {} {}/s  elapsed {}  ETA {}", label_, done_, total_, unit_,
                                 rate_text, rate_unit_, format_duration(el), final ? "done" : format_duration(eta));
  if (!extra_.empty()) text += "  " + extra_;
  return text;
}

void Progress::draw(bool final) {
  if (out_ == nullptr) return;
  const std::string text = line(final);
  if (tty_) fmt::print(out_, "\r\033[K{}{}", text, final ? "\n" : "");
  else fmt::print(out_, "{}\n", text);
  std::fflush(out_);
}

void Progress::print_now(const std::string& extra) {
  if (!extra.empty()) extra_ = extra;
  if (out_ == nullptr) return;
  last_draw_ = std::chrono::steady_clock::now();
  fmt::print(out_, "{}{}\n", tty_ ? "\r\033[K" : "", line(false));
  std::fflush(out_);
}

}  // namespace kvlab
