// Tests of one SIMD backend (cpp/kernels/simd/), compiled per ISA like the kernels
// (CPPCONV_ISA_NS and the ISA's flags; CMake builds one per backend): the masked and partial
// loads and stores read and write only their lanes, next to inaccessible pages; lane shifts,
// the transpose, deinterleave2, the NaN rules of vmax, vmin and vmax_nan_wins lane by lane, and
// vpow2i and the vector exp, sigmoid and SiLU the kernels apply in their stores.
// Exits 77 (CTest: skipped) when the CPU lacks the ISA, 1 on any mismatch.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/simd.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define CPPCONV_GUARD_PAGES 1
#endif

using namespace cppconv::CPPCONV_ISA_NS;
using namespace cppconv::CPPCONV_ISA_NS::simd;

namespace {

int g_failures = 0;

void expect(bool ok, const char* what, int a, int b) {
  if (!ok && ++g_failures <= 20) std::printf("FAIL %s (%d, %d)\n", what, a, b);
}

bool same(double a, double b) { return a == b || (a != a && b != b); }

template <class T>
void to_array(Vec<T> v, T* out) {
  vstore(out, v);
}

// `bytes` of memory with an inaccessible page right before and right after it (where mmap is
// available; elsewhere plain memory, and the test checks values only).
struct Guarded {
  char* data = nullptr;
  size_t bytes = 0, page = 0;
  std::vector<char> fallback;
  explicit Guarded(size_t n) : bytes(n) {
#if defined(CPPCONV_GUARD_PAGES)
    page = size_t(sysconf(_SC_PAGESIZE));
    char* base =
        static_cast<char*>(mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base != MAP_FAILED && n <= page) {
      mprotect(base, page, PROT_NONE);
      mprotect(base + 2 * page, page, PROT_NONE);
      data = base + page;
      return;
    }
#endif
    fallback.resize(n + 256);
    data = fallback.data() + 128;
  }
  ~Guarded() {
#if defined(CPPCONV_GUARD_PAGES)
    if (fallback.empty()) munmap(data - page, 3 * page);
#endif
  }
  char* begin() const { return data; }
  char* end() const { return data + (page ? page : bytes); }
};

// Lanes [lo, hi) of p, where p + lo is the first accessible element and p + hi - 1 the last
// (lo > 0 or hi < kLanes: the vector straddles a guard page).
template <class T>
void masked_at_edges() {
  constexpr int L = kLanes<T>;
  Guarded mem(4096);
  for (int lo = 0; lo < L; ++lo)
    for (int hi = lo + 1; hi <= L; ++hi) {
      // The valid lanes at the start of the region (lanes below lo lie in the page before it)
      // and at its end (lanes from hi on lie in the page after it).
      T* starts[2] = {reinterpret_cast<T*>(mem.begin()) - lo, reinterpret_cast<T*>(mem.end()) - hi};
      for (T* p : starts) {
        for (int i = lo; i < hi; ++i) p[i] = T(i + 1);
        const Mask<T> m = lane_mask<T>(lo, hi);
        T got[L];
        to_array(vload_mask(p, m), got);
        for (int i = 0; i < L; ++i) expect(same(got[i], i >= lo && i < hi ? T(i + 1) : T(0)), "vload_mask", lo, hi);
        if (lo == 0) {
          to_array(vload_partial(p, hi), got);
          for (int i = 0; i < L; ++i) expect(same(got[i], i < hi ? T(i + 1) : T(0)), "vload_partial", lo, hi);
        }
        T lanes[L];
        for (int i = 0; i < L; ++i) lanes[i] = T(100 + i);
        vstore_mask(p, vload(lanes), m);
        for (int i = lo; i < hi; ++i) expect(same(p[i], T(100 + i)), "vstore_mask", lo, hi);
        if (lo == 0) {
          vstore_partial(p, vset1(T(-1)), hi);
          for (int i = 0; i < hi; ++i) expect(same(p[i], T(-1)), "vstore_partial", lo, hi);
        }
        if constexpr (sizeof(T) == 4) {
          for (int i = lo; i < hi; ++i) p[i] = T(i + 1);
          to_array(vload_mask_or(p, m, vset1(T(-7))), got);
          for (int i = 0; i < L; ++i)
            expect(same(got[i], i >= lo && i < hi ? T(i + 1) : T(-7)), "vload_mask_or", lo, hi);
        }
      }
    }
  // Stores leave the lanes outside the mask alone (inside accessible memory).
  T buf[3 * L];
  for (int lo = 0; lo <= L; ++lo)
    for (int hi = lo; hi <= L; ++hi) {
      for (int i = 0; i < 3 * L; ++i) buf[i] = T(-3);
      vstore_mask(buf + L, vset1(T(5)), lane_mask<T>(lo, hi));
      for (int i = 0; i < 3 * L; ++i)
        expect(same(buf[i], i >= L + lo && i < L + hi ? T(5) : T(-3)), "vstore_mask outside the mask", lo, hi);
    }
}

void shuffles() {
  constexpr int L = kLanes<float>;
  float a[2 * L], got[L];
  for (int i = 0; i < 2 * L; ++i) a[i] = float(i);
  const Vec<float> lo = vload(a), hi = vload(a + L);
  for (int n = 0; n <= L; ++n) {
    to_array(shift_lanes(lo, hi, n), got);
    for (int i = 0; i < L; ++i) expect(got[i] == float(n + i), "shift_lanes", n, i);
  }
  Vec<float> even, odd;
  deinterleave2(lo, hi, even, odd);
  float e[L], o[L];
  to_array(even, e);
  to_array(odd, o);
  for (int i = 0; i < L; ++i) expect(e[i] == float(2 * i) && o[i] == float(2 * i + 1), "deinterleave2", i, 0);
  float square[L * L];
  for (int i = 0; i < L * L; ++i) square[i] = float(i);
  Vec<float> rows[L];
  for (int r = 0; r < L; ++r) rows[r] = vload(square + r * L);
  transpose_square(rows);
  for (int r = 0; r < L; ++r) {
    to_array(rows[r], got);
    for (int c = 0; c < L; ++c) expect(got[c] == square[c * L + r], "transpose_square", r, c);
  }
}

template <class T>
void nan_rules() {
  constexpr int L = kLanes<T>;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  T got[L];
  // vmax and vmin: the second operand when either is NaN (x86's rule, which the kernels'
  // activations rely on to keep a NaN value).
  to_array(vmax(vset1(nan), vset1(T(1))), got);
  expect(got[0] == T(1), "vmax(NaN, 1)", 0, 0);
  to_array(vmax(vset1(T(1)), vset1(nan)), got);
  expect(got[0] != got[0], "vmax(1, NaN)", 0, 0);
  to_array(vmin(vset1(nan), vset1(T(1))), got);
  expect(got[0] == T(1), "vmin(NaN, 1)", 0, 0);
  to_array(vmin(vset1(T(1)), vset1(nan)), got);
  expect(got[0] != got[0], "vmin(1, NaN)", 0, 0);
  to_array(vmax(vset1(T(2)), vset1(T(3))), got);
  expect(got[0] == T(3), "vmax(2, 3)", 0, 0);
  to_array(vleaky(vset1(T(-2)), T(0.2)), got);
  expect(got[0] == T(-2) * T(0.2), "vleaky(-2, 0.2)", 0, 0);
  to_array(vleaky(vset1(T(3)), T(0.2)), got);
  expect(got[0] == T(3), "vleaky(3, 0.2)", 0, 0);
  to_array(vfma(vset1(T(2)), vset1(T(3)), vset1(T(1))), got);
  expect(got[L - 1] == T(7), "vfma", 0, 0);
  if constexpr (sizeof(T) == 4) {
    to_array(vmax_nan_wins(vset1(nan), vset1(T(1))), got);
    expect(got[0] != got[0], "vmax_nan_wins(NaN, 1)", 0, 0);
    to_array(vmax_nan_wins(vset1(T(1)), vset1(nan)), got);
    expect(got[0] != got[0], "vmax_nan_wins(1, NaN)", 0, 0);
    to_array(vmax_nan_wins(vset1(T(1)), vset1(T(2))), got);
    expect(got[0] == T(2), "vmax_nan_wins(1, 2)", 0, 0);
    T lanes[L];
    for (int i = 0; i < L; ++i) lanes[i] = T(i);
    expect(!vany_nan(vload(lanes)), "vany_nan(finite)", 0, 0);
    for (int i = 0; i < L; ++i) {  // a NaN in each lane in turn
      lanes[i] = nan;
      expect(vany_nan(vload(lanes)), "vany_nan(one NaN lane)", i, 0);
      lanes[i] = T(i);
    }
  }
}

// Whether a is within `ulps` units in the last place of float64 b (both NaN count as equal; where b
// rounds to a float infinity, a must be that infinity).
bool near_ulps(float a, double b, double ulps) {
  if (a != a || b != b) return a != a && b != b;
  if (std::isinf(float(b)) || std::isinf(a)) return a == float(b);
  const double ulp = std::max(double(std::numeric_limits<float>::min()),
                              std::ldexp(1.0, std::ilogb(std::max(std::fabs(b), 1e-38)) - 23));
  return std::fabs(double(a) - b) <= ulps * ulp;
}

// vpow2i exactly (0 for 2^-127, inf for 2^128); the vector exp, sigmoid and SiLU (isa_common.h's
// formulas on VecF32Ops) against float64 libm over their range, lane by lane, and at the special
// values the kernels must keep: NaN stays NaN, sigmoid(-inf) 0, silu(-inf) NaN, silu(inf) inf.
void vector_activations() {
  constexpr int L = kLanes<float>;
  float got[L];
  for (int n = -127; n <= 128; ++n) {
    to_array(vpow2i(vset1(float(n))), got);
    const float want = n == -127 ? 0.0f : (n == 128 ? std::numeric_limits<float>::infinity() : std::ldexp(1.0f, n));
    expect(got[L - 1] == want, "vpow2i", n, 0);
  }
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> values = {nan, -inf, inf, -0.0f, 0.0f, -1e30f, 1e30f, -104.5f, 88.9f, 88.7f, -87.3f, 1e-30f};
  for (int i = -2000; i <= 2000; ++i) values.push_back(float(i) * 0.0441f + 0.0013f);  // about [-88.2, 88.2]
  for (size_t i = 0; i < values.size(); ++i) {
    float lane[L];
    for (int l = 0; l < L; ++l) lane[l] = values[(i + size_t(l)) % values.size()];
    const Vec<float> v = vload(lane);
    float e[L], sig[L], silu[L];
    to_array(exp_f32_of(v, VecF32Ops{}), e);
    to_array(sigmoid_f32_of(v, VecF32Ops{}), sig);
    to_array(silu_f32_of(v, VecF32Ops{}), silu);
    for (int l = 0; l < L; ++l) {
      const double x = lane[l], ex = std::exp(x), enx = std::exp(-x);
      // Within the normal floats; inf from 88.38 (2^128), 0 below -87.69 (2^-127), denormals
      // between that and -87.3.
      const bool e_ok = x > 88.38   ? std::isinf(e[l]) && e[l] > 0
                        : x < -87.3 ? (x < -87.69 ? e[l] == 0.0f : std::fabs(double(e[l]) - ex) <= 1e-37)
                                    : near_ulps(e[l], ex, 2);
      expect(e_ok, "exp_f32_of", int(i), l);
      expect(near_ulps(sig[l], 1.0 / (1.0 + enx), 3) || std::fabs(double(sig[l]) - 1.0 / (1.0 + enx)) <= 1e-37,
             "sigmoid_f32_of", int(i), l);
      const double silu_ref = x / (1.0 + enx);
      expect(near_ulps(silu[l], silu_ref, 3) || std::fabs(double(silu[l]) - silu_ref) <= 1e-36, "silu_f32_of", int(i),
             l);
      // The scalar form (activate_row's) computes the same formula.
      expect(near_ulps(silu_f32_of(lane[l], ScalarF32Ops{}), double(silu[l]), 1) ||
                 std::fabs(double(silu[l]) - silu_ref) <= 1e-36,
             "silu_f32_of scalar", int(i), l);
    }
  }
}

bool cpu_runs_this_isa() {
#if defined(CPPCONV_TEST_AVX512)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#elif defined(CPPCONV_TEST_AVX2)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;  // (NEON: every aarch64 CPU)
#endif
}

}  // namespace

int main() {
  if (!cpu_runs_this_isa()) {
    std::printf("skipped: this CPU does not run %s\n", CPPCONV_ISA_NAME);
    return 77;
  }
  masked_at_edges<float>();
  masked_at_edges<double>();
  shuffles();
  nan_rules<float>();
  nan_rules<double>();
  vector_activations();
  std::printf("%s: %s (%d lanes of float)\n", CPPCONV_ISA_NAME, g_failures ? "FAILED" : "all passed", kLanes<float>);
  return g_failures ? 1 : 0;
}
