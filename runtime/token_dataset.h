// TokenFileDataset: language-model data from a flat binary token file. Each rank reads only
// its own S/P (+1 for the last target) tokens of each sequence with one seek + read.
//
// File format (little-endian), a 32-byte header then the tokens:
//   bytes 0-7   magic "RATOKEN1"
//   bytes 8-11  uint32 bytes per token: 2 (uint16 ids) or 4 (uint32 ids)
//   bytes 12-15 uint32 vocabulary size (every id must be below it)
//   bytes 16-23 uint64 number of tokens N
//   bytes 24-31 reserved, 0
// Sequence j covers tokens [j*S, j*S + S] (S + 1 tokens: inputs and shifted targets), so the
// file holds (N - 1) / S sequences. The batch of a step takes sequences in an order shuffled
// per epoch by the seed: a pure function of (seed, step).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/training_data.h"

namespace ra {

struct TokenFileHeader {
  uint32_t bytes_per_token = 0;
  uint32_t vocab_size = 0;
  uint64_t num_tokens = 0;
};

inline constexpr int64_t kTokenFileHeaderBytes = 32;

TokenFileHeader read_token_file_header(const std::string& path);
// Writes a token file (tests, conversion tools). bytes_per_token 2 or 4.
void write_token_file(const std::string& path, const std::vector<uint32_t>& tokens,
                      uint32_t bytes_per_token, uint32_t vocab_size);

class TokenFileDataset : public TrainingData {
 public:
  TokenFileDataset(std::string path, const ShardLayout& layout, uint64_t seed);

  int64_t vocab_size() const override { return header_.vocab_size; }
  Batch batch(int64_t step) const override;
  bool reports_accuracy() const override { return false; }
  std::string describe() const override;
  int64_t num_sequences() const { return num_sequences_; }
  // Index of the sequence used for batch row b of `step`.
  int64_t sequence_index(int64_t step, int64_t row) const;

 private:
  std::string path_;
  TokenFileHeader header_;
  ShardLayout layout_;
  uint64_t seed_;
  int64_t num_sequences_ = 0;
};

}  // namespace ra
