// Memory limits and allocation failures, shared by the drivers and the per-ISA kernels.
// Declarations only, defined once in cpp/memory.cpp: kernel sources are compiled once per ISA,
// and an inline function here could end up in the baseline build compiled with AVX-512 flags.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cppconv {

// Throws std::bad_alloc (MemoryError in Python) whose message names the bytes and their use.
[[noreturn]] void throw_out_of_memory(size_t bytes, const char* purpose);

// Throws as above when `bytes` exceed this machine's physical memory, before anything is
// allocated: with Linux overcommit such an allocation can succeed, and the OOM killer then ends
// the process when the memory is touched.
void check_workspace(size_t bytes, const char* purpose);

// This machine's physical memory in bytes (SIZE_MAX where unknown).
size_t physical_memory_bytes();

// a + b and a * b, saturating at SIZE_MAX (a size that no allocation can satisfy).
size_t saturating_add(size_t a, size_t b);
size_t saturating_mul(size_t a, size_t b);

// a * b into *product; true, with *product unset, where it would overflow int64.
bool mul_overflows(int64_t a, int64_t b, int64_t* product);

// `bytes` (a multiple of `alignment`, a power of two) aligned to `alignment`, nullptr when
// refused; freed by aligned_free.
void* aligned_allocate(size_t alignment, size_t bytes);
void aligned_free(void* p);

}  // namespace cppconv
