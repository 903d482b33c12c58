// Helpers for kernel sources that are compiled once per ISA.  Everything is declared inside
// cppconv::CPPCONV_ISA_NS so that each ISA build gets its own copy (no ODR clash between an
// AVX-512 and a baseline instantiation of the same inline function).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "conv_problem.h"
#include "memory.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

#ifndef CPPCONV_ISA_NS
#error "isa_common.h is only for per-ISA kernel sources"
#endif
#define CPPCONV_STRINGIFY_(x) #x
#define CPPCONV_STRINGIFY(x) CPPCONV_STRINGIFY_(x)
// The ISA's name, for algorithm names of the form <op>_<params>__<isa>_<tile>.
#define CPPCONV_ISA_NAME CPPCONV_STRINGIFY(CPPCONV_ISA_NS)
// CPPCONV_VEC_BYTES, the ISA's vector width in bytes, for portable vector code (VecOf below),
// which the baseline build runs too; CPPCONV_SIMD, whether the SIMD kernels are built.
#include "kernels/simd/backend.h"

// Function attributes for the intrinsics of one CPU feature (kernel_table.h's CpuFeature),
// used by the feature-guarded entries of the avx512 build: only the functions so marked may
// hold those instructions, so nothing shared with the rest of the build (inline functions,
// templates) is compiled for a feature the CPU may lack.  Every function that uses the
// intrinsics needs the attribute, always-inline helpers included.  MSVC needs none.
#if defined(__GNUC__) || defined(__clang__)
#define CPPCONV_TARGET_AVX512VNNI __attribute__((target("avx512vnni")))
#define CPPCONV_TARGET_AVX512BF16 __attribute__((target("avx512bf16")))
// (GCC 11 and clang 12 first know the AMX targets: only kernels under CPPCONV_AMX_COMPILES use it.)
#define CPPCONV_TARGET_AMX __attribute__((target("amx-tile,amx-bf16,amx-int8")))
#else
#define CPPCONV_TARGET_AVX512VNNI
#define CPPCONV_TARGET_AVX512BF16
#define CPPCONV_TARGET_AMX
#endif

// Inlined whatever the compiler's size estimate: for helpers whose arguments (counts, masks)
// are constants at a hot call site and fold only once inlined.
#if defined(__GNUC__) || defined(__clang__)
#define CPPCONV_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CPPCONV_ALWAYS_INLINE __forceinline
#endif
// Never inlined: a cold path whose memory traffic would otherwise spill a hot loop's registers.
#if defined(__GNUC__) || defined(__clang__)
#define CPPCONV_NOINLINE __attribute__((noinline))
#else
#define CPPCONV_NOINLINE __declspec(noinline)
#endif

namespace cppconv {
namespace CPPCONV_ISA_NS {

// VecOf<T>::type: CPPCONV_VEC_BYTES of T as one value, with lane-wise +, += and * (a scalar
// operand counts as a vector of it) and [] for a lane.  GCC's and clang's vector extensions,
// which become the ISA's vector instructions; for other compilers (MSVC), or with
// CPPCONV_PLAIN_VECTORS (tools/compile_check.sh), an array with the same operators, whose loops
// the compiler may vectorise.
#if (defined(__GNUC__) || defined(__clang__)) && !defined(CPPCONV_PLAIN_VECTORS)
template <class T>
struct VecOf {
  typedef T type __attribute__((vector_size(CPPCONV_VEC_BYTES)));
};
#else
template <class T>
struct VecOf {
  struct type {
    static constexpr int kLanes = CPPCONV_VEC_BYTES / int(sizeof(T));
    T lane[kLanes];
    T& operator[](int i) { return lane[i]; }
    T operator[](int i) const { return lane[i]; }
    type& operator+=(const type& b) {
      for (int i = 0; i < kLanes; ++i) lane[i] += b.lane[i];
      return *this;
    }
    friend type operator+(type a, const type& b) { return a += b; }
    friend type operator+(type a, T s) {
      for (int i = 0; i < kLanes; ++i) a.lane[i] += s;
      return a;
    }
    friend type operator*(type a, const type& b) {
      for (int i = 0; i < kLanes; ++i) a.lane[i] *= b.lane[i];
      return a;
    }
    friend type operator*(T s, type a) {
      for (int i = 0; i < kLanes; ++i) a.lane[i] *= s;
      return a;
    }
  };
};
#endif

// PyTorch's and ONNX's (alpha 1/6, beta 1/2): min(max(x/6 + 1/2, 0), 1); NaN stays NaN.
template <class T>
static inline T hard_sigmoid(T v) {
  return v != v ? v : std::min(std::max(v * T(1.0 / 6) + T(0.5), T(0)), T(1));
}

template <class T>
static inline T activate(T v, Activation a, T negative_slope) {
  switch (a) {
    case Activation::None: return v;
    case Activation::Relu: return v > T(0) ? v : (v != v ? v : T(0));
    case Activation::Relu6: return v != v ? v : std::min(std::max(v, T(0)), T(6));
    case Activation::LeakyRelu: return v >= T(0) ? v : v * negative_slope;
    case Activation::Sigmoid: return T(1) / (T(1) + std::exp(-v));
    case Activation::Tanh: return std::tanh(v);
    case Activation::Silu: return v / (T(1) + std::exp(-v));
    case Activation::HardSigmoid: return hard_sigmoid(v);
    case Activation::HardSwish: return v * hard_sigmoid(v);
  }
  return v;
}

// The lane operations exp_f32_of and the activations built on it take, for one float
// (ScalarF32Ops, here) or a SIMD vector of them (simd::VecF32Ops, simd.h): splat, add, sub, mul,
// div, fma, min and max (x86's NaN rule: the second operand when either is NaN) and pow2i (2^n
// for an integral n in [-126, 127]; 0 for -127, inf for 128).  One formula for both, so that the activations the SIMD
// kernels apply in registers and the ones activate_row applies after the stores agree.
struct ScalarF32Ops {
  static float splat(float c) { return c; }
  static float add(float a, float b) { return a + b; }
  static float sub(float a, float b) { return a - b; }
  static float mul(float a, float b) { return a * b; }
  static float div(float a, float b) { return a / b; }
  static float fma(float a, float b, float c) { return a * b + c; }  // (std::fma is a libm call without FMA)
  static float min(float a, float b) { return a < b ? a : b; }
  static float max(float a, float b) { return a > b ? a : b; }
  static float pow2i(float n) {
    const int32_t bits = (int32_t(n == n ? n : 0.0f) + 127) << 23;  // (NaN: exp_f32_of's p is NaN anyway)
    float s;
    std::memcpy(&s, &bits, 4);
    return s;
  }
};

// e^v in float32, branch-free, for a float or a vector of them (a libm call per value made a
// fused SiLU cost more than the convolution: EfficientNet's 1x1 16->96 layer).
// 2^n p(r), n = round(v log2 e) in [-127, 128], r = v - n ln 2 in [-ln2/2, ln2/2] (ln 2 in two
// parts), p Cephes' degree-6 polynomial of expf (about 1 ulp).  2^n is one factor, the exponent
// field itself: 2^128 is inf and 2^-127 is 0, so e^v is inf from v = 88.38 (n = 128; the true
// value overflows at 88.72) and 0 below -87.69, with denormals between: what sigmoid and SiLU,
// which add it to 1, need (one factor instead of two is a fifth faster; docs/tuning.md).
// NaN stays NaN (the clamp keeps it, as the value goes second, and it reaches p).
template <class V, class Ops>
static inline V exp_f32_of(V v, Ops o) {
  const V c = o.min(o.splat(88.8f), o.max(o.splat(-88.0f), v));
  const V magic = o.splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V n = o.sub(o.fma(c, o.splat(1.44269504088896341f), magic), magic);
  const V r = o.fma(n, o.splat(2.12194440e-4f), o.fma(n, o.splat(-0.693359375f), c));
  V p = o.splat(1.9875691500e-4f);
  p = o.fma(p, r, o.splat(1.3981999507e-3f));
  p = o.fma(p, r, o.splat(8.3334519073e-3f));
  p = o.fma(p, r, o.splat(4.1665795894e-2f));
  p = o.fma(p, r, o.splat(1.6666665459e-1f));
  p = o.fma(p, r, o.splat(5.0000001201e-1f));
  p = o.add(o.fma(o.mul(p, r), r, r), o.splat(1.0f));
  return o.mul(p, o.pow2i(n));
}

// 1 / (1 + e^-v) and v / (1 + e^-v), as the reference computes them: sigmoid(-inf) 0,
// silu(-inf) NaN (-inf / inf), silu(inf) inf.
template <class V, class Ops>
static inline V sigmoid_f32_of(V v, Ops o) {
  return o.div(o.splat(1.0f), o.add(o.splat(1.0f), exp_f32_of(o.sub(o.splat(0.0f), v), o)));
}
template <class V, class Ops>
static inline V silu_f32_of(V v, Ops o) {
  return o.div(v, o.add(o.splat(1.0f), exp_f32_of(o.sub(o.splat(0.0f), v), o)));
}

static inline float exp_f32(float v) { return exp_f32_of(v, ScalarF32Ops{}); }

// tanh in float32 like exp_f32: Cephes' odd polynomial below |v| = 0.625 (where 1 - 2/(e^2v + 1)
// would cancel), that form above; the sign put back.
static inline float tanh_f32(float v) {
  const float a = std::fabs(v), z = v * v;
  float small = -5.70498872745e-3f;
  small = small * z + 2.06390887954e-2f;
  small = small * z - 5.37397155531e-2f;
  small = small * z + 1.33314422036e-1f;
  small = small * z - 3.33332819422e-1f;
  small = small * z * v + v;
  const float large = 1.0f - 2.0f / (exp_f32(2.0f * a) + 1.0f);
  return a < 0.625f ? small : (v < 0 ? -large : large);  // NaN: large is NaN
}

// A problem's activation (ConvProblem, ConvTransposeProblem) with its parameter.
template <class Problem>
static inline FusedActivation fused_activation(const Problem& p) {
  return {p.activation, p.negative_slope};
}

// Applies the activation to n contiguous values in place; every case vectorises for float.
template <class T>
static inline void activate_row(T* v, int64_t n, FusedActivation a) {
  const T slope = T(a.negative_slope);
  if constexpr (std::is_same<T, float>::value) {
    switch (a.kind) {
      case Activation::Sigmoid:
        for (int64_t i = 0; i < n; ++i) v[i] = sigmoid_f32_of(v[i], ScalarF32Ops{});
        return;
      case Activation::Silu:
        for (int64_t i = 0; i < n; ++i) v[i] = silu_f32_of(v[i], ScalarF32Ops{});
        return;
      case Activation::Tanh:
        for (int64_t i = 0; i < n; ++i) v[i] = tanh_f32(v[i]);
        return;
      default: break;
    }
  }
  switch (a.kind) {
    case Activation::None: return;
    case Activation::Relu:
      for (int64_t i = 0; i < n; ++i) v[i] = v[i] < T(0) ? T(0) : v[i];  // NaN stays NaN
      return;
    case Activation::Relu6:
      for (int64_t i = 0; i < n; ++i) v[i] = v[i] < T(0) ? T(0) : (v[i] > T(6) ? T(6) : v[i]);
      return;
    case Activation::LeakyRelu:
      for (int64_t i = 0; i < n; ++i) v[i] = v[i] < T(0) ? v[i] * slope : v[i];
      return;
    case Activation::HardSigmoid:
      for (int64_t i = 0; i < n; ++i) v[i] = hard_sigmoid(v[i]);
      return;
    case Activation::HardSwish:
      for (int64_t i = 0; i < n; ++i) v[i] *= hard_sigmoid(v[i]);
      return;
    default:
      for (int64_t i = 0; i < n; ++i) v[i] = activate(v[i], a.kind, slope);
  }
}

// Flush denormals to zero inside the kernels (they cost hundreds of cycles per operation on
// many cores) and restore the caller's floating-point state on the way out.
class DenormalGuard {
 public:
  DenormalGuard() {
#if defined(__SSE__) || defined(__x86_64__)
    saved_ = _mm_getcsr();
    _mm_setcsr(unsigned(saved_ | 0x8040));  // FTZ | DAZ
#elif defined(__aarch64__) && defined(__GNUC__)
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_ | (uint64_t(1) << 24)));  // FZ: inputs and results
#endif
  }
  ~DenormalGuard() {
#if defined(__SSE__) || defined(__x86_64__)
    _mm_setcsr(unsigned(saved_));
#elif defined(__aarch64__) && defined(__GNUC__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
  }
  DenormalGuard(const DenormalGuard&) = delete;
  DenormalGuard& operator=(const DenormalGuard&) = delete;

 private:
  uint64_t saved_ = 0;
};

// Runs body() on a team of `threads`, or straight on the calling thread when that is all it
// gets: opening an OpenMP parallel region costs about a microsecond even for a team of one,
// as much as a small call's arithmetic.  Worksharing loops inside body() then run orphaned,
// all on the calling thread.  Called on a thread of another team (a transposed convolution's
// phases run one a thread), a team of one all the same: an orphaned loop would bind to the outer
// team, and thread_id(), which indexes the kernels' per-thread scratch, would be that team's.
template <class Body>
static inline void parallel_region(int threads, Body&& body) {
#if defined(_OPENMP)
  if (threads > 1 || omp_in_parallel()) {
#pragma omp parallel num_threads(threads > 1 ? threads : 1)
    body();
    return;
  }
#endif
  (void)threads;
  body();
}

// An algorithm's name, prefix (<op>__<isa>) + "_<rows>x<cols>", built at compile time from the
// tile constants it names, so a constant (no static initializer).
struct AlgorithmName {
  char text[96] = {};
};
static constexpr AlgorithmName algorithm_name(const char* prefix, int rows, int cols) {
  AlgorithmName name;
  int n = 0;
  while (*prefix) name.text[n++] = *prefix++;
  const int numbers[2] = {rows, cols};
  for (int i = 0; i < 2; ++i) {
    name.text[n++] = i == 0 ? '_' : 'x';
    int scale = 1;
    while (numbers[i] / scale >= 10) scale *= 10;
    for (; scale > 0; scale /= 10) name.text[n++] = char('0' + numbers[i] / scale % 10);
  }
  return name;
}

// ConvAlgorithm::packed_bytes of the algorithms that read the weights as they are.
static inline size_t no_packing(const ConvProblem&) { return 0; }

static inline int thread_id() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// This thread's index in a parallel_region of `threads` threads: 0 in a one-thread region, which
// runs on the caller's thread, whose OpenMP number may be an outer team's.
static inline int region_thread(int threads) { return threads > 1 ? thread_id() : 0; }

// Scratch memory reused across calls from the same calling thread: a fresh, zero-filled
// allocation per call costs page faults that can exceed the arithmetic of a small layer.
// Grows to the largest request and is never shrunk; its contents are not initialised.
// Only ever called before a parallel region, for every thread of it (each then takes its own
// part): a failed allocation throws, and an exception that leaves an OpenMP region ends the
// process instead of raising MemoryError.
static inline void* scratch_bytes(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { aligned_free(data); }
  };
  thread_local Buffer buffer;
  if (bytes > buffer.size) {
    aligned_free(buffer.data);
    buffer.data = nullptr;
    buffer.size = 0;
    const size_t rounded = ((bytes + 63) / 64) * 64;
    buffer.data = aligned_allocate(64, rounded);
    if (!buffer.data) throw_out_of_memory(rounded, "kernel scratch");
    buffer.size = bytes;
  }
  return buffer.data;
}

template <class T>
static inline T* scratch(size_t count) {
  if (count > size_t(-1) / 2 / sizeof(T)) throw_out_of_memory(SIZE_MAX, "kernel scratch");  // would wrap
  return static_cast<T*>(scratch_bytes(count * sizeof(T)));
}

// The padded input rows (columns) that `out` consecutive output rows (columns) read.
static inline int64_t input_rows_for(const ConvProblem& p, int64_t out) {
  return (out - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
}
static inline int64_t input_cols_for(const ConvProblem& p, int64_t out) {
  return (out - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
}

// ceil(a / b) for b > 0 and any a (division truncates toward zero, which is the ceiling for
// a < 0), without the a + b - 1 that wraps for a stride near 2^63.
static inline int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b > 0); }

// Whether a kernel that copies `copied` values of padded input per call (into tiles, or a padded
// copy of x) stays in proportion to the call's own cost: its multiply-adds plus its input and
// output values.  Kernels decline problems where it does not, and the reference kernels, which
// work out the source of each tap and cost in proportion to the multiply-adds, take them:
// problems whose windows skip most of what they span (a 3x3 depthwise kernel padded and
// dilated 300 on 1x1 planes copies 601 x 601 values per channel for 9 multiply-adds).
static inline bool copies_in_proportion(double copied, double macs, double values) {
  // A copied value costs a fraction of a reference multiply-add (most are zeros, set in bulk),
  // so up to this many per unit of the call's cost the copying kernel is still the faster one.
  constexpr double kCopiedPerUnit = 16;
  return copied <= kCopiedPerUnit * (macs + values);
}

// The same for a convolution kernel that copies the padded input of `tiled_channels` channels
// into tiles, tile_values() of them per call.
template <class TileValues>
static inline bool tiles_in_proportion(const ConvProblem& p, int64_t tiled_channels, TileValues&& tile_values) {
  const double outputs = double(p.batch) * double(p.out_channels) * double(p.out_h) * double(p.out_w);
  const double macs = outputs * double(p.in_channels / p.groups) * double(p.kernel_h) * double(p.kernel_w);
  const double values = double(p.batch) * double(p.in_channels) * double(p.in_h) * double(p.in_w) + outputs;
  // The tiles hold about the padded input from the first window to the last, checked first (in
  // floating point): the kernel's plan is then only worked out for spans its sizes can hold.
  const double spanned = double(p.batch) * double(tiled_channels) * double(input_rows_for(p, p.out_h)) *
                         double(input_cols_for(p, p.out_w));
  return copies_in_proportion(spanned, macs, values) && copies_in_proportion(double(tile_values()), macs, values);
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
