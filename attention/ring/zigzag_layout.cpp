// Zigzag shard / unshard along dim 1 with narrow + cat.
#include "attention/ring/zigzag_layout.h"

#include <ATen/ATen.h>

#include <vector>

#include "runtime/error.h"

namespace ra {
namespace {

int64_t chunk_length(const at::Tensor& t, int world_size) {
  RA_CHECK(world_size > 0, "world size = ", world_size, ": must be positive");
  RA_CHECK(t.dim() >= 2 && t.size(1) % (2 * world_size) == 0,
           "sequence length = ", t.dim() >= 2 ? t.size(1) : 0,
           ": the zigzag layout needs a multiple of 2P = ", 2 * world_size);
  return t.size(1) / (2 * world_size);
}

}  // namespace

at::Tensor zigzag_shard(const at::Tensor& full, int rank, int world_size) {
  const int64_t c = chunk_length(full, world_size);
  RA_CHECK(rank >= 0 && rank < world_size, "rank = ", rank, ": must be in [0, ", world_size, ")");
  return at::cat({full.narrow(1, rank * c, c), full.narrow(1, (2 * world_size - 1 - rank) * c, c)},
                 1);
}

at::Tensor zigzag_unshard(const at::Tensor& gathered, int world_size) {
  const int64_t c = chunk_length(gathered, world_size);
  std::vector<at::Tensor> chunks(2 * world_size);
  for (int p = 0; p < world_size; ++p) {
    chunks[p] = gathered.narrow(1, 2 * p * c, c);
    chunks[2 * world_size - 1 - p] = gathered.narrow(1, (2 * p + 1) * c, c);
  }
  return at::cat(chunks, 1);
}

}  // namespace ra
