// env_switch: one checked reading of a kernel switch (env_switch.h).
#include "runtime/env_switch.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/error.h"

namespace ra {

const char* env_switch(const char* variable, std::initializer_list<const char*> allowed) {
  const char* value = std::getenv(variable);
  if (value == nullptr || value[0] == '\0') return nullptr;
  std::string names;
  for (const char* name : allowed) {
    if (std::strcmp(value, name) == 0) return value;
    names += names.empty() ? name : std::string(", ") + name;
  }
  RA_THROW_HINT("unset it for the default (docs/USAGE.md lists the switches)", variable, " = '",
                value, "' is not allowed; allowed: ", names);
}

}  // namespace ra
