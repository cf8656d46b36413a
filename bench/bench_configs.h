// The benchmark configurations of issue 3, by name, shared by the C++ benchmark and mirrored in
// bench/dilated_baselines.py: "longnet-base" (LongNet's branches) and "wide" (long segments).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace ra::bench {

struct BenchConfig {
  std::string name;
  int64_t heads, head_dim;
  std::vector<int64_t> segments, rates;
};

inline BenchConfig bench_config(const std::string& name) {
  if (name == "longnet-base")
    return {name, 12, 64, {2048, 4096, 8192, 16384, 32768}, {1, 2, 4, 6, 12}};
  if (name == "wide") return {name, 16, 128, {4096, 16384, 65536}, {1, 4, 16}};
  RA_THROW("--configs: '", name, "' is not a benchmark config; use longnet-base or wide");
}

}  // namespace ra::bench
