// Config names/parsers, CLI value parsers and the error type.
#include <gtest/gtest.h>

#include "runtime/cli_values.h"
#include "runtime/config.h"
#include "runtime/error.h"

namespace ra {
namespace {

TEST(Config, EnumNamesRoundTrip) {
  for (auto m : {HeadMode::kAll, HeadMode::kPartition}) EXPECT_EQ(parse_head_mode(to_string(m)), m);
  for (auto s : {RingStrategy::kRing, RingStrategy::kAllGather})
    EXPECT_EQ(parse_ring_strategy(to_string(s)), s);
  for (auto p : {SparsePattern::kLocalWindow, SparsePattern::kDilated, SparsePattern::kGlobalLocal,
                 SparsePattern::kHierarchical, SparsePattern::kCustom})
    EXPECT_EQ(parse_sparse_pattern(to_string(p)), p);
  for (auto b : {AttentionBackend::kAuto, AttentionBackend::kReference, AttentionBackend::kCudnn,
                 AttentionBackend::kFlash})
    EXPECT_EQ(parse_backend(to_string(b)), b);
}

TEST(Config, UnknownNamesListTheAllowedOnes) {
  try {
    parse_head_mode("heads", "--head-mode");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("--head-mode = 'heads'"), std::string::npos);
    EXPECT_NE(e.message().find("all, partition"), std::string::npos);
  }
  EXPECT_THROW(parse_ring_strategy("star"), Error);
  EXPECT_THROW(parse_sparse_pattern("random"), Error);
  EXPECT_THROW(parse_backend("triton"), Error);
}

TEST(Config, Describe) {
  DilatedAttentionConfig c;
  c.segment_lengths = {2048, 4096};
  c.dilation_rates = {1, 2};
  c.causal = true;
  EXPECT_EQ(describe(c), "w=[2048,4096] r=[1,2] causal head_mode=all");
}

TEST(CliValues, TokenCounts) {
  EXPECT_EQ(parse_token_count("4096", "--seq-len"), 4096);
  EXPECT_EQ(parse_token_count("4K", "--seq-len"), 4096);
  EXPECT_EQ(parse_token_count("1M", "--seq-len"), 1048576);
  EXPECT_EQ(parse_token_count("2G", "--seq-len"), 2147483648LL);
  for (const char* bad : {"", "0", "-1", "1.5M", "1T", "M", "12KB", "99999999999999999999"}) {
    try {
      parse_token_count(bad, "--seq-len");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(e.message().find("--seq-len"), std::string::npos);
    }
  }
}

TEST(CliValues, IntLists) {
  EXPECT_EQ(parse_int_list("2048,4K,8192", "--segment-lengths"),
            (std::vector<int64_t>{2048, 4096, 8192}));
  EXPECT_THROW(parse_int_list("1,,2", "--dilation-rates"), Error);
  EXPECT_THROW(parse_int_list("1,2,", "--dilation-rates"), Error);
  EXPECT_THROW(parse_int_list("a", "--dilation-rates"), Error);
}

TEST(ErrorType, CarriesMessageHintAndLocation) {
  try {
    RA_THROW_HINT("try this", "value = ", 3, " is bad");
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "value = 3 is bad");
    EXPECT_EQ(e.hint(), "try this");
    EXPECT_NE(e.location().find("tests/unit/test_config_and_cli.cpp:"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("hint: try this"), std::string::npos);
  }
  EXPECT_THROW(RA_CHECK(1 == 2, "never"), Error);
  EXPECT_NO_THROW(RA_CHECK(1 == 1, "fine"));
}

}  // namespace
}  // namespace ra
