// ringattn's error type and check macros.
// Every failure the library reports is an ra::Error carrying the message, the file:line that
// raised it and, where one helps, a hint. The macros do not depend on LibTorch, so CUDA, NCCL
// and MPI code use them too (see runtime/cuda_check.h, comm/nccl_check.h, comm/mpi_check.h).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ra {

class Error : public std::runtime_error {
 public:
  Error(std::string message, std::string hint, const char* file, int line);

  const std::string& message() const { return message_; }  // without location or hint
  const std::string& hint() const { return hint_; }
  const std::string& location() const { return location_; }  // "file:line"

 private:
  std::string message_;
  std::string hint_;
  std::string location_;
};

namespace detail {

template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& message,
                              const std::string& hint = "");

}  // namespace detail
}  // namespace ra

// RA_CHECK(cond, parts...): throws ra::Error("parts...") when cond is false.
#define RA_CHECK(cond, ...)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      ::ra::detail::throw_error(__FILE__, __LINE__, ::ra::detail::concat(__VA_ARGS__)); \
    }                                                                                   \
  } while (0)

// RA_THROW(parts...): unconditional ra::Error.
#define RA_THROW(...) \
  ::ra::detail::throw_error(__FILE__, __LINE__, ::ra::detail::concat(__VA_ARGS__))

// RA_THROW_HINT(hint, parts...): ra::Error with a hint on what to do about it.
#define RA_THROW_HINT(hint, ...) \
  ::ra::detail::throw_error(__FILE__, __LINE__, ::ra::detail::concat(__VA_ARGS__), (hint))
