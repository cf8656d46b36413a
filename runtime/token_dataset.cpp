// Token file reading and writing (format in token_dataset.h).
#include "runtime/token_dataset.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "runtime/error.h"

namespace ra {
namespace {

constexpr char kMagic[8] = {'R', 'A', 'T', 'O', 'K', 'E', 'N', '1'};

}  // namespace

TokenFileHeader read_token_file_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RA_CHECK(in.good(), "--data = '", path, "': cannot open the token file");
  char raw[kTokenFileHeaderBytes] = {};
  in.read(raw, kTokenFileHeaderBytes);
  RA_CHECK(in.gcount() == kTokenFileHeaderBytes && std::memcmp(raw, kMagic, 8) == 0, "--data = '",
           path,
           "': not a token file (expected the 32-byte header starting "
           "with \"RATOKEN1\", see docs/USAGE.md)");
  TokenFileHeader h;
  std::memcpy(&h.bytes_per_token, raw + 8, 4);
  std::memcpy(&h.vocab_size, raw + 12, 4);
  std::memcpy(&h.num_tokens, raw + 16, 8);
  RA_CHECK(h.bytes_per_token == 2 || h.bytes_per_token == 4, "--data = '", path,
           "': bytes per token = ", h.bytes_per_token, ": allowed 2 (uint16) or 4 (uint32)");
  RA_CHECK(h.vocab_size > 0, "--data = '", path, "': vocabulary size 0 in the header");
  in.seekg(0, std::ios::end);
  const uint64_t file_bytes = uint64_t(in.tellg());
  RA_CHECK(file_bytes == kTokenFileHeaderBytes + h.num_tokens * h.bytes_per_token, "--data = '",
           path, "': the header says ", h.num_tokens, " tokens of ", h.bytes_per_token,
           " bytes but the file has ", file_bytes, " bytes");
  return h;
}

void write_token_file(const std::string& path, const std::vector<uint32_t>& tokens,
                      uint32_t bytes_per_token, uint32_t vocab_size) {
  RA_CHECK(bytes_per_token == 2 || bytes_per_token == 4, "bytes_per_token = ", bytes_per_token,
           ": allowed 2 or 4");
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  RA_CHECK(out.good(), "cannot write token file '", path, "'");
  char raw[kTokenFileHeaderBytes] = {};
  std::memcpy(raw, kMagic, 8);
  const uint64_t n = tokens.size();
  std::memcpy(raw + 8, &bytes_per_token, 4);
  std::memcpy(raw + 12, &vocab_size, 4);
  std::memcpy(raw + 16, &n, 8);
  out.write(raw, kTokenFileHeaderBytes);
  for (uint32_t t : tokens) {
    RA_CHECK(t < vocab_size, "token ", t, " >= vocab_size ", vocab_size);
    if (bytes_per_token == 2) {
      RA_CHECK(t <= 0xFFFF, "token ", t, " does not fit in uint16");
      const uint16_t v = uint16_t(t);
      out.write(reinterpret_cast<const char*>(&v), 2);
    } else {
      out.write(reinterpret_cast<const char*>(&t), 4);
    }
  }
  RA_CHECK(out.good(), "writing token file '", path, "' failed");
}

TokenFileDataset::TokenFileDataset(std::string path, const ShardLayout& layout, uint64_t seed)
    : path_(std::move(path)), header_(read_token_file_header(path_)), layout_(layout), seed_(seed) {
  num_sequences_ = header_.num_tokens > 0 ? int64_t((header_.num_tokens - 1) / layout_.seq_len) : 0;
  RA_CHECK(num_sequences_ >= 1, "--data = '", path_, "' holds ", header_.num_tokens,
           " tokens: fewer than one sequence of --seq-len + 1 = ", layout_.seq_len + 1);
}

std::string TokenFileDataset::describe() const {
  std::ostringstream os;
  os << path_ << " (" << header_.num_tokens << " tokens, uint" << header_.bytes_per_token * 8
     << ", vocab " << header_.vocab_size << ", " << num_sequences_ << " sequences)";
  return os.str();
}

int64_t TokenFileDataset::sequence_index(int64_t step, int64_t row) const {
  const int64_t flat = (step - 1) * layout_.batch_size + row;  // sequences consumed before
  const int64_t epoch = flat / num_sequences_, within = flat % num_sequences_;
  // A Fisher-Yates permutation per epoch (cheap enough: one per call, sequences are long).
  std::vector<int64_t> order(num_sequences_);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed_ * 1000003ull + uint64_t(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order[within];
}

Batch TokenFileDataset::batch(int64_t step) const {
  const int64_t B = layout_.batch_size, n = layout_.shard_len();
  const int bytes = int(header_.bytes_per_token);
  at::Tensor tokens = at::empty({B, n}, at::kLong), targets = at::empty({B, n}, at::kLong);
  std::ifstream in(path_, std::ios::binary);
  RA_CHECK(in.good(), "--data = '", path_, "': cannot open the token file");
  std::vector<char> raw((n + 1) * bytes);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t start = sequence_index(step, b) * layout_.seq_len + layout_.first_position();
    in.seekg(kTokenFileHeaderBytes + start * bytes);
    in.read(raw.data(), std::streamsize(raw.size()));
    RA_CHECK(in.gcount() == std::streamsize(raw.size()), "--data = '", path_,
             "': short read at token ", start);
    auto tok = tokens[b], tgt = targets[b];
    auto t = tok.accessor<int64_t, 1>();
    auto g = tgt.accessor<int64_t, 1>();
    for (int64_t i = 0; i <= n; ++i) {
      uint32_t id = 0;
      if (bytes == 2) {
        uint16_t v;
        std::memcpy(&v, raw.data() + i * 2, 2);
        id = v;
      } else {
        std::memcpy(&id, raw.data() + i * 4, 4);
      }
      RA_CHECK(id < header_.vocab_size, "--data = '", path_, "': token ", id, " at index ",
               start + i, " is not below the vocabulary size ", header_.vocab_size);
      if (i < n) t[i] = id;
      if (i > 0) g[i - 1] = id;
    }
  }
  return {tokens, targets};
}

}  // namespace ra
