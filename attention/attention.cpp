// DilatedAttentionBase: validates the config once, at construction.
#include "attention/attention.h"

#include "runtime/validation.h"

namespace ra {

DilatedAttentionBase::DilatedAttentionBase(DilatedAttentionConfig config)
    : config_(std::move(config)) {
  validate(config_);
}

}  // namespace ra
