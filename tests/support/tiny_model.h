// The small LongNetLM configuration the model and trainer unit tests share: causal, two
// branches, loss and (checkpointed) FFN chunks of 12 tokens, so a 32-token sequence runs
// several chunks with a partial last one and weights get several gradient contributions; and
// the model they build from it.
#pragma once

#include <torch/torch.h>

#include "attention/factory.h"
#include "runtime/model.h"

namespace ra::testing {

inline ModelConfig tiny_model_config(int64_t num_layers, bool checkpointing) {
  ModelConfig c;
  c.vocab_size = 50;
  c.num_layers = num_layers;
  c.embed_dim = 32;
  c.num_heads = 4;
  c.ffn_dim = 64;
  c.attention.segment_lengths = {8, 32};
  c.attention.dilation_rates = {1, 2};
  c.attention.causal = true;
  c.checkpointing = checkpointing;
  c.loss_chunk_tokens = 12;  // several chunks, the last one partial
  c.ffn_chunk_tokens = 12;   // checkpointed blocks run their FFN in chunks too
  return c;
}

// A LongNetLM of `config` on the "standard" attention in training mode, in `dtype`, with the
// same weights for the same config (seed 7).
inline LongNetLM make_standard_model(const ModelConfig& config, at::ScalarType dtype = at::kFloat) {
  torch::manual_seed(7);
  LongNetLM model(config, [&] {
    AttentionSpec spec;
    spec.attention = config.attention;
    return make_attention("standard", spec);
  });
  model->to(dtype);
  model->train();
  return model;
}

}  // namespace ra::testing
