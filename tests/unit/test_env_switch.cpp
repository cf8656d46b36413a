// env_switch (runtime/env_switch.h): unset and empty give the default, allowed values come back,
// anything else throws ra::Error naming the variable, the value and the allowed values.
#include "runtime/env_switch.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/error.h"
#include "tests/support/scoped_env.h"

namespace ra {
namespace {

constexpr const char* kVariable = "RA_TEST_ENV_SWITCH";

TEST(EnvSwitch, UnsetAndEmptyMeanTheDefault) {
  {
    testing::ScopedEnv env(kVariable, nullptr);
    EXPECT_EQ(env_switch(kVariable, {"flat", "loop"}), nullptr);
  }
  testing::ScopedEnv env(kVariable, "");
  EXPECT_EQ(env_switch(kVariable, {"flat", "loop"}), nullptr);
}

TEST(EnvSwitch, ReturnsAnAllowedValue) {
  for (const char* value : {"flat", "loop"}) {
    testing::ScopedEnv env(kVariable, value);
    const char* got = env_switch(kVariable, {"flat", "loop"});
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(std::string(got), value);
  }
}

TEST(EnvSwitch, AnyOtherValueIsAnErrorNamingVariableValueAndChoices) {
  for (const char* value : {"Flat", "flatt", " flat", "0"}) {
    testing::ScopedEnv env(kVariable, value);
    try {
      env_switch(kVariable, {"flat", "loop"});
      ADD_FAILURE() << "'" << value << "' was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.message(),
                std::string(kVariable) + " = '" + value + "' is not allowed; allowed: flat, loop");
      EXPECT_FALSE(e.hint().empty());
    }
  }
}

}  // namespace
}  // namespace ra
