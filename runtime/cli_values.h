// Parsers for command-line values shared by the executables: token counts with K/M/G suffixes
// (powers of 1024: 1K = 1024, 1M = 1048576) and comma-separated integer lists. Errors name the
// flag, the text and what is allowed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ra {

int64_t parse_token_count(const std::string& text, const std::string& flag);
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag);

}  // namespace ra
