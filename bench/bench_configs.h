// The benchmark configurations of issue 3, by name, shared by the C++ benchmarks and mirrored in
// bench/dilated_baselines.py: "longnet-base" (LongNet's branches) and "wide" (long segments);
// and "longnet-1m" (LongNet-base heads with segments up to 1M, docs/USAGE.md's example config),
// whose longest segment spans the shards of a 1M sequence on several GPUs (the ring benchmark).
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
  if (name == "longnet-1m")
    return {name, 12, 64, {2048, 8192, 32768, 131072, 1048576}, {1, 2, 4, 8, 16}};
  RA_THROW("config '", name, "' is not a benchmark config; use longnet-base, wide or longnet-1m");
}

}  // namespace ra::bench
