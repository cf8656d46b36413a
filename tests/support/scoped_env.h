// ScopedEnv: sets an environment variable (a kernel switch read at every call, runtime/
// env_switch.h) for one scope, restoring the old value (or unsetting it) at the end, also when
// an assertion or exception leaves the scope early.
#pragma once

#include <cstdlib>
#include <string>

namespace ra::testing {

class ScopedEnv {
 public:
  // value null: unset for the scope.
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

}  // namespace ra::testing
