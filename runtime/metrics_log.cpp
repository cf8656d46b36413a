// Console and JSON-lines rendering of StepMetrics (see metrics_log.h).
#include "runtime/metrics_log.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace ra {

MetricsLog::MetricsLog(const std::string& path, bool append) {
  if (path.empty()) return;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  out_.open(path, append ? std::ios::app : std::ios::trunc);
  RA_CHECK(out_.good(), "--metrics-file = '", path, "': cannot open for writing");
}

std::string to_json(const StepMetrics& m) {
  nlohmann::json j;
  j["event"] = "step";
  j["step"] = m.step;
  j["loss"] = m.loss;
  j["grad_norm"] = m.grad_norm;
  j["lr"] = m.lr;
  j["step_ms"] = m.step_ms;
  j["tokens_per_s"] = m.tokens_per_s;
  j["tokens_per_s_per_gpu"] = m.tokens_per_s_per_gpu;
  j["tflops_per_gpu"] = m.tflops_per_gpu;
  j["mfu"] = m.mfu ? nlohmann::json(*m.mfu) : nlohmann::json(nullptr);
  j["peak_memory_gib"] = m.peak_memory_gib;
  if (m.accuracy) j["accuracy"] = *m.accuracy;
  return j.dump();
}

std::string MetricsLog::format(const StepMetrics& m, const std::string& memory_label) {
  char mfu[32] = "n/a", acc[48] = "";
  if (m.mfu) std::snprintf(mfu, sizeof mfu, "%.1f%%", 100.0 * *m.mfu);
  if (m.accuracy) std::snprintf(acc, sizeof acc, " | acc %.3f", *m.accuracy);
  char line[512];
  std::snprintf(line, sizeof line,
                "step %6ld | loss %.4f | grad norm %.3f | lr %.3e | %.1f ms | %.0f tok/s "
                "(%.0f/GPU) | %.3g TFLOP/s/GPU | MFU %s | peak %s %.2f GiB%s",
                long(m.step), m.loss, m.grad_norm, m.lr, m.step_ms, m.tokens_per_s,
                m.tokens_per_s_per_gpu, m.tflops_per_gpu, mfu, memory_label.c_str(),
                m.peak_memory_gib, acc);
  return line;
}

void MetricsLog::write(const StepMetrics& m) { write_json_line(to_json(m)); }

void MetricsLog::write_json_line(const std::string& json) {
  if (!out_.is_open()) return;
  out_ << json << "\n";
  out_.flush();
}

}  // namespace ra
