// Names of the config enums, their parsers and a printable description.
#include "runtime/config.h"

#include <sstream>

#include "runtime/error.h"

namespace ra {
namespace {

template <typename T>
std::string join(const std::vector<T>& values) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < values.size(); ++i) os << (i ? "," : "") << values[i];
  os << "]";
  return os.str();
}

}  // namespace

std::string to_string(HeadMode mode) { return mode == HeadMode::kAll ? "all" : "partition"; }

std::string to_string(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::kAuto:
      return "auto";
    case AttentionBackend::kReference:
      return "reference";
    case AttentionBackend::kCudnn:
      return "cudnn";
    case AttentionBackend::kFlash:
      return "flash";
  }
  return "?";
}

std::string to_string(RingStrategy strategy) {
  return strategy == RingStrategy::kRing ? "ring" : "allgather";
}

std::string to_string(SparsePattern pattern) {
  switch (pattern) {
    case SparsePattern::kLocalWindow:
      return "local_window";
    case SparsePattern::kDilated:
      return "dilated";
    case SparsePattern::kGlobalLocal:
      return "global_local";
    case SparsePattern::kHierarchical:
      return "hierarchical";
    case SparsePattern::kCustom:
      return "custom";
  }
  return "?";
}

HeadMode parse_head_mode(const std::string& text, const std::string& arg) {
  if (text == "all") return HeadMode::kAll;
  if (text == "partition") return HeadMode::kPartition;
  RA_THROW(arg, " = '", text, "' is not a head mode; allowed: all, partition");
}

AttentionBackend parse_backend(const std::string& text, const std::string& arg) {
  for (auto b : {AttentionBackend::kAuto, AttentionBackend::kReference, AttentionBackend::kCudnn,
                 AttentionBackend::kFlash}) {
    if (text == to_string(b)) return b;
  }
  RA_THROW(arg, " = '", text,
           "' is not an attention backend; allowed: auto, reference, cudnn, flash");
}

RingStrategy parse_ring_strategy(const std::string& text, const std::string& arg) {
  if (text == "ring") return RingStrategy::kRing;
  if (text == "allgather") return RingStrategy::kAllGather;
  RA_THROW(arg, " = '", text, "' is not a ring strategy; allowed: ring, allgather");
}

SparsePattern parse_sparse_pattern(const std::string& text, const std::string& arg) {
  for (auto p : {SparsePattern::kLocalWindow, SparsePattern::kDilated, SparsePattern::kGlobalLocal,
                 SparsePattern::kHierarchical, SparsePattern::kCustom}) {
    if (text == to_string(p)) return p;
  }
  RA_THROW(arg, " = '", text,
           "' is not a sparse pattern; allowed: local_window, dilated, global_local, "
           "hierarchical, custom");
}

std::string describe(const DilatedAttentionConfig& config) {
  std::ostringstream os;
  os << "w=" << join(config.segment_lengths) << " r=" << join(config.dilation_rates)
     << (config.causal ? " causal" : " non-causal") << " head_mode=" << to_string(config.head_mode);
  if (config.softmax_scale) os << " scale=" << *config.softmax_scale;
  if (config.dropout > 0) os << " dropout=" << config.dropout;
  if (config.backend != AttentionBackend::kAuto) os << " backend=" << to_string(config.backend);
  return os.str();
}

}  // namespace ra
