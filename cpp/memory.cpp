#include "memory.h"

#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX  // windows.h would define min and max as macros
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <malloc.h>
#include <windows.h>
#elif defined(__unix__) || defined(__APPLE__)
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
#if defined(_WIN32)
    MEMORYSTATUSEX status;
    status.dwLength = sizeof(status);
    if (GlobalMemoryStatusEx(&status)) return size_t(status.ullTotalPhys);
#elif defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) return saturating_mul(size_t(pages), size_t(page));
#endif
    return SIZE_MAX;  // unknown: let the allocator decide
  }();
  return bytes;
}

void throw_out_of_memory(size_t bytes, const char* purpose) {
  const std::string size = bytes == SIZE_MAX ? std::string("more than 2^64 - 1") : std::to_string(bytes);
  throw OutOfMemory(std::string("cppconv: cannot allocate ") + size + " bytes for " + purpose + " (this machine has " +
                    std::to_string(physical_memory_bytes()) + " bytes of memory)");
}

void check_workspace(size_t bytes, const char* purpose) {
  if (bytes > physical_memory_bytes()) throw_out_of_memory(bytes, purpose);
}

size_t saturating_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

size_t saturating_mul(size_t a, size_t b) { return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * b; }

// By division, not __builtin_mul_overflow (which MSVC lacks), so every compiler runs this code.
bool mul_overflows(int64_t a, int64_t b, int64_t* product) {
  const bool overflows = a > 0 ? (b > 0 ? a > INT64_MAX / b : b < INT64_MIN / a)
                               : (b > 0 ? a < INT64_MIN / b : a != 0 && b < INT64_MAX / a);
  if (!overflows) *product = a * b;
  return overflows;
}

// Windows' C runtime has no aligned_alloc (its free() cannot release aligned blocks).
void* aligned_allocate(size_t alignment, size_t bytes) {
#if defined(_WIN32)
  return _aligned_malloc(bytes, alignment);
#else
  return std::aligned_alloc(alignment, bytes);
#endif
}

void aligned_free(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

}  // namespace cppconv
