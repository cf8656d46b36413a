// Per-step training metrics: one human-readable line on rank 0's stdout and the same fields as
// one JSON object per line in the metrics file (JSON lines: easy to tail, grep and plot).
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

namespace ra {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0;       // mean over every scored token of every rank
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
  double step_ms = 0;
  double tokens_per_s = 0;          // global
  double tokens_per_s_per_gpu = 0;  // per rank
  double tflops_per_gpu = 0;        // model FLOPs (no recompute) per rank per second / 1e12
  std::optional<double> mfu;        // tflops_per_gpu / peak bf16 dense; none on CPU
  double peak_memory_gib = 0;
  std::optional<double> accuracy;  // synthetic tasks: accuracy on the scored positions
};

class MetricsLog {
 public:
  // path empty = no file. Only the process that should write (rank 0) creates one.
  explicit MetricsLog(const std::string& path, bool append);

  // Console line for rank 0.
  static std::string format(const StepMetrics& m, const std::string& memory_label);
  void write(const StepMetrics& m);
  // Free-form JSON object (e.g. {"event":"start",...}) as a line of the file.
  void write_json_line(const std::string& json);

 private:
  std::ofstream out_;
};

std::string to_json(const StepMetrics& m);

}  // namespace ra
