#include "memory.h"

#include <cstdint>
#include <new>
#include <string>

#if defined(__unix__)
#include <unistd.h>
#endif

namespace cppconv {
namespace {

// std::bad_alloc with a message: pybind11 raises MemoryError(what()).
class OutOfMemory : public std::bad_alloc {
 public:
  explicit OutOfMemory(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

}  // namespace

size_t physical_memory_bytes() {
  // Asked once: sysconf(_SC_PHYS_PAGES) is a sysinfo() system call, and every call checks its
  // workspace against this (the seed's 5x5 call spent a tenth of its time there).
  static const size_t bytes = [] {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) return saturating_mul(size_t(pages), size_t(page));
#endif
    return SIZE_MAX;  // unknown: let the allocator decide
  }();
  return bytes;
}

void throw_out_of_memory(size_t bytes, const char* purpose) {
  const std::string size = bytes == SIZE_MAX ? std::string("more than 2^64 - 1") : std::to_string(bytes);
  throw OutOfMemory(std::string("cppconv: cannot allocate ") + size + " bytes for " + purpose +
                    " (this machine has " + std::to_string(physical_memory_bytes()) + " bytes of memory)");
}

void check_workspace(size_t bytes, const char* purpose) {
  if (bytes > physical_memory_bytes()) throw_out_of_memory(bytes, purpose);
}

size_t saturating_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

size_t saturating_mul(size_t a, size_t b) { return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * b; }

}  // namespace cppconv
