// Environment switches: the kernels' A/B and debugging knobs (RA_MERGE_KERNEL, RA_MERGE_VEC,
// RA_STACK_GROUPS, RA_SPARSE_FORWARD, RA_SPARSE_BACKWARD; docs/USAGE.md), read at every call so
// that a test or benchmark can flip them between calls. A value that is not one of the allowed
// ones is an error naming the variable, the value and what is allowed: a typo must not silently
// time or test the default instead.
#pragma once

#include <initializer_list>

namespace ra {

// The value of environment variable `variable` when it is set, not empty and one of `allowed`;
// nullptr when it is unset or empty (the caller's default); throws ra::Error otherwise.
const char* env_switch(const char* variable, std::initializer_list<const char*> allowed);

}  // namespace ra
