// Creates any attention variant by name from one spec. The names are the --attention values
// of ring_train: "standard" (one device), and the sequence-parallel / sparse variants as they
// are registered in factory.cpp. An unknown name is an error that lists the valid ones.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "runtime/config.h"

namespace ra {

class Communicator;  // comm/communicator.h

struct AttentionSpec {
  DilatedAttentionConfig attention;
  RingConfig ring;
  SparseConfig sparse;
  std::shared_ptr<Communicator> comm;  // required by the sequence-parallel variants
};

std::shared_ptr<DilatedAttentionBase> make_attention(const std::string& name,
                                                     const AttentionSpec& spec);

// The names make_attention accepts, in registration order.
std::vector<std::string> attention_names();

}  // namespace ra
