// ra::Error: formats "message (hint) [file:line]" once, so what() is cheap and complete.
#include "runtime/error.h"

namespace ra {
namespace {

std::string short_path(const char* file) {
  // Keep the path from the project's top folders on, e.g. "runtime/validation.cpp".
  std::string path(file);
  for (const char* top : {"runtime/", "comm/", "attention/", "launch/", "tests/", "bench/"}) {
    auto pos = path.rfind(top);
    if (pos != std::string::npos) return path.substr(pos);
  }
  return path;
}

std::string format(const std::string& message, const std::string& hint,
                   const std::string& location) {
  std::string text = message;
  if (!hint.empty()) text += "\n  hint: " + hint;
  text += "\n  at " + location;
  return text;
}

}  // namespace

Error::Error(std::string message, std::string hint, const char* file, int line)
    : std::runtime_error(format(message, hint, short_path(file) + ":" + std::to_string(line))),
      message_(std::move(message)),
      hint_(std::move(hint)),
      location_(short_path(file) + ":" + std::to_string(line)) {}

namespace detail {

void throw_error(const char* file, int line, const std::string& message, const std::string& hint) {
  throw Error(message, hint, file, line);
}

}  // namespace detail
}  // namespace ra
