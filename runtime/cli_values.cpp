// Strict parsing: the whole text must be consumed, values must be positive and not overflow.
#include "runtime/cli_values.h"

#include <cctype>
#include <limits>

#include "runtime/error.h"

namespace ra {

int64_t parse_token_count(const std::string& text, const std::string& flag) {
  const char* allowed = "a positive integer, optionally with K, M or G (powers of 1024), e.g. 1M";
  RA_CHECK(!text.empty(), flag, " = '': expected ", allowed);
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  RA_CHECK(digits > 0 && digits <= 18, flag, " = '", text, "': expected ", allowed);
  int64_t value = std::stoll(text.substr(0, digits));
  const std::string suffix = text.substr(digits);
  int shift = 0;
  if (suffix == "K" || suffix == "k")
    shift = 10;
  else if (suffix == "M" || suffix == "m")
    shift = 20;
  else if (suffix == "G" || suffix == "g")
    shift = 30;
  else
    RA_CHECK(suffix.empty(), flag, " = '", text, "': expected ", allowed);
  RA_CHECK(value > 0, flag, " = '", text, "': expected ", allowed);
  RA_CHECK(value <= (std::numeric_limits<int64_t>::max() >> shift), flag, " = '", text,
           "': too large");
  return value << shift;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    values.push_back(parse_token_count(text.substr(start, end - start), flag));
    start = end + 1;
  }
  return values;
}

}  // namespace ra
