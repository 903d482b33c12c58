#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(_MSC_VER) && defined(_M_X64)
#include <intrin.h>
#elif defined(__x86_64__)
#include <cpuid.h>
#endif

namespace cppconv {
namespace {

struct IsaEntry {
  const char* name;
  const KernelTable& (*table)();
  bool (*supported)();
};

#if defined(__x86_64__) || defined(_M_X64)
// CPUID leaf `leaf`, sub-leaf `sub`, into a, b, c, d; false for a leaf the CPU does not have.
bool cpuid(unsigned leaf, unsigned sub, unsigned& a, unsigned& b, unsigned& c, unsigned& d) {
#if defined(_MSC_VER)
  int r[4];
  __cpuid(r, 0);  // r[0]: the highest basic leaf
  if (unsigned(r[0]) < leaf) return false;
  __cpuidex(r, int(leaf), int(sub));
  a = unsigned(r[0]), b = unsigned(r[1]), c = unsigned(r[2]), d = unsigned(r[3]);
  return true;
#else
  return __get_cpuid_count(leaf, sub, &a, &b, &c, &d) != 0;
#endif
}

unsigned long long xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
#endif
}

bool os_saves_ymm() {
  unsigned a, b, c, d;
  if (!cpuid(1, 0, a, b, c, d)) return false;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  return osxsave && avx && (xgetbv0() & 0x6) == 0x6;
}

bool cpu_has_avx2() {
  unsigned a, b, c, d;
  if (!os_saves_ymm() || !cpuid(1, 0, a, b, c, d)) return false;
  const bool fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!cpuid(7, 0, a, b, c, d)) return false;
  return fma && f16c && (b & (1u << 5));
}

bool cpu_has_avx512() {
  unsigned a, b, c, d;
  if (!cpu_has_avx2()) return false;
  // The OS must save opmask and both halves of the 32 zmm registers (XCR0 bits 5-7).
  if ((xgetbv0() & 0xe6) != 0xe6) return false;
  if (!cpuid(7, 0, a, b, c, d)) return false;
  const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  return f && dq && bw && vl;
}

// Linux hands out the AMX tile state (XTILEDATA, XCR0 bit 18) only to processes that ask.
bool os_grants_amx_tiles() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

// The extensions the feature-guarded AVX-512 entries use, as this CPU and OS support them.
unsigned detected_cpu_features() {
  unsigned a, b, c, d, features = 0;
  if (!cpu_has_avx512() || !cpuid(7, 0, a, b, c, d)) return 0;
  const unsigned edx7 = d;
  if (c & (1u << 11)) features |= kCpuAvx512Vnni;
  if (cpuid(7, 1, a, b, c, d) && (a & (1u << 5))) features |= kCpuAvx512Bf16;
  const bool tiles = (edx7 & (1u << 24)) && (xgetbv0() & 0x60000) == 0x60000;
  if (tiles && ((edx7 & (1u << 25)) || (edx7 & (1u << 22))) && os_grants_amx_tiles()) {
    if (edx7 & (1u << 25)) features |= kCpuAmxInt8;
    if (edx7 & (1u << 22)) features |= kCpuAmxBf16;
  }
  return features;
}
#else
unsigned detected_cpu_features() { return 0; }
#endif

bool always() { return true; }

// Weakest first; only ISAs this build compiled.
const IsaEntry kIsas[] = {
#ifdef CPPCONV_HAVE_baseline
    {"baseline", baseline::kernel_table, always},
#endif
#ifdef CPPCONV_HAVE_neon
    {"neon", neon::kernel_table, always},
#endif
#ifdef CPPCONV_HAVE_avx2
    {"avx2", avx2::kernel_table, cpu_has_avx2},
#endif
#ifdef CPPCONV_HAVE_avx512
    {"avx512", avx512::kernel_table, cpu_has_avx512},
#endif
};

constexpr size_t kIsaCount = sizeof(kIsas) / sizeof(kIsas[0]);

// The caps above the strongest ISA, weakest first: each allows the features of those before it.
struct FeatureLevel {
  const char* name;
  unsigned features;  // its own; the level allows these and every earlier level's
};
const FeatureLevel kFeatureLevels[] = {
    {"avx512_vnni", kCpuAvx512Vnni},
    {"avx512_bf16", kCpuAvx512Bf16},
    {"amx", kCpuAmxInt8 | kCpuAmxBf16},
};
const char* const kFeatureNames[] = {"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"};

struct Capabilities {
  std::vector<bool> isa;  // by kIsas index
  unsigned features = 0;
  unsigned detected_features = 0;  // before the cap
};

// What this process may use: what the CPU and OS support (CPUID is asked once: under a
// hypervisor every CPUID traps and costs microseconds), up to the ISA or feature level that
// CPPCONV_MAX_ISA names, so that a capped process behaves as on a machine without the stronger
// ISAs and features (tests, benchmarks and kernel selection alike).  An unknown name caps
// nothing.
const Capabilities& capabilities() {
  static const Capabilities caps = [] {
    const char* env = std::getenv("CPPCONV_MAX_ISA");
    const std::string cap = env ? env : "";
    Capabilities c;
    c.detected_features = detected_cpu_features();
    size_t limit = kIsaCount;
    unsigned allowed = ~0u;
    for (size_t i = 0; i < kIsaCount; ++i)
      if (cap == kIsas[i].name) limit = i + 1, allowed = 0;
    unsigned below = 0;
    for (const FeatureLevel& level : kFeatureLevels) {
      below |= level.features;
      if (cap == level.name) allowed = below;
    }
    for (size_t i = 0; i < kIsaCount; ++i) c.isa.push_back(i < limit && kIsas[i].supported());
    c.features = c.detected_features & allowed;
    return c;
  }();
  return caps;
}

bool is_supported(size_t index) { return capabilities().isa[index]; }

const IsaEntry* find_available(const std::string& name) {
  for (size_t i = 0; i < kIsaCount; ++i)
    if (name == kIsas[i].name && is_supported(i)) return &kIsas[i];
  return nullptr;
}

// The strongest available ISA.
const IsaEntry* pick_default() {
  const IsaEntry* best = nullptr;
  for (size_t i = 0; i < kIsaCount; ++i)
    if (is_supported(i)) best = &kIsas[i];
  return best;
}

const IsaEntry* default_entry() {
  static const IsaEntry* entry = pick_default();
  return entry;
}

std::atomic<const IsaEntry*>& active_entry() {
  static std::atomic<const IsaEntry*> entry{default_entry()};
  return entry;
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (size_t i = 0; i < kIsaCount; ++i)
    if (is_supported(i)) names.emplace_back(kIsas[i].name);
  return names;
}

std::string default_isa() { return default_entry()->name; }

const KernelTable& active_table() { return active_entry().load()->table(); }

const KernelTable& table_for_isa(const std::string& name) {
  const IsaEntry* e = find_available(name);
  if (!e) throw std::invalid_argument("ISA '" + name + "' is not available on this machine");
  return e->table();
}

unsigned cpu_features() { return capabilities().features; }

bool has_cpu_features(unsigned needed) { return (cpu_features() & needed) == needed; }

std::vector<std::string> cpu_feature_names(unsigned features) {
  std::vector<std::string> names;
  for (size_t i = 0; i < sizeof(kFeatureNames) / sizeof(kFeatureNames[0]); ++i)
    if (features & (1u << i)) names.emplace_back(kFeatureNames[i]);
  return names;
}

std::vector<std::string> max_isa_levels() {
  std::vector<std::string> names;
  for (size_t i = 0; i < kIsaCount; ++i)
    if (kIsas[i].supported()) names.emplace_back(kIsas[i].name);
  unsigned below = 0;
  for (const FeatureLevel& level : kFeatureLevels) {
    below |= level.features;
    // A level is there when the CPU has at least one of its own features and all earlier ones.
    const unsigned earlier = below & ~level.features;
    if ((capabilities().detected_features & level.features) && (capabilities().detected_features & earlier) == earlier)
      names.emplace_back(level.name);
  }
  return names;
}

void select_isa(const std::string& name) {
  const IsaEntry* e = find_available(name);
  if (!e) throw std::invalid_argument("ISA '" + name + "' is not available on this machine");
  active_entry().store(e);
}

}  // namespace cppconv
