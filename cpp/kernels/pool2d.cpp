// Max and average pooling, regular and adaptive, in 2-D and 3-D.  Compiled once per ISA.
// A 3-D window loops over its depth taps around the 2-D row machinery below, and the parallel
// units are (n, c, od) planes of output rows; a 2-D problem is the 3-D one with D = 1.
//   pool2d_rows_nchw:     regular windows in NCHW, one output row at a time, vectorised along
//                         the output width; each tap column runs over the output range it
//                         covers, so padding is skipped instead of copied.  Float rows at
//                         stride 1 or 2 without indices hold blocks of outputs in registers
//                         across the window, a stride-2 window's input rows split into even
//                         and odd columns first (contiguous loads); the rest loop over the
//                         output row in memory (strided loads at other strides).
//   pool2d_plane_nchw:    one output per plane covering it all (global pooling): a reduction
//                         over the contiguous plane.
//   pool2d_maps_nchw:     any NCHW problem (adaptive windows), scalar through the window maps.
//   pool2d_channels_nhwc: any NHWC problem, vectorised across channels; float global averages
//                         sum blocks of channels over every pixel in registers.
// Inputs and outputs are C-contiguous in p.layout (unit stride along w for NCHW, along c for
// NHWC).  Max follows PyTorch: the first tap inside the input is the initial argmax, a
// strictly larger value or a NaN replaces it; padding never wins.
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/isa_common.h"
#include "kernels/pool2d.h"

#if CPPCONV_SIMD
#include "kernels/simd.h"
#define CPPCONV_POOL_SIMD 1
#else
#define CPPCONV_POOL_SIMD 0
#endif

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

template <class T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

template <class T>
T avg_divisor(const PoolCall& call, int64_t od, int64_t oh, int64_t ow) {
  const Pool2dProblem& p = call.p;
  if (p.divisor_override != 0) return T(p.divisor_override);
  // In T: a product of sizes can pass 2^63.  (A depth of one multiplies exactly.)
  return T(call.depths.size[od]) * T(call.rows.size[oh]) * T(call.cols.size[ow]);
}

// ---------------------------------------------------------------------------------------
// pool2d_rows_nchw

#if CPPCONV_POOL_SIMD
// Float rows at stride 1 or 2, no indices: see the top.  Output columns [lo[j], hi[j]) see
// tap column j inside the input.  (A loop over the row in memory, one tap at a time, ran the
// 3x3 stride-2 max pool of a 64@112 plane at 16 GB/s: strided gathers, and a load and store
// of the output row per tap.)
template <bool kMax>
void run_rows_nchw_f32(const PoolCall& call, const std::vector<int64_t>& lo, const std::vector<int64_t>& hi) {
  using namespace simd;
  using V = Vec<float>;
  constexpr int L = kLanes<float>;
  constexpr int kChunk = 4;  // output vectors in registers
  const Pool2dProblem& p = call.p;
  const float* x = static_cast<const float*>(call.x);
  const float* x_end =
      x + (p.batch - 1) * call.x_stride.n + (p.channels - 1) * call.x_stride.c + p.in_d * call.x_stride_d;
  float* y = static_cast<float*>(call.y);
  const int64_t OW = p.out_w, S = p.stride_w, W = p.in_w;
  const V identity = vset1(kMax ? neg_inf<float>() : 0.0f);
  const auto combine = [](V acc, V v) { return kMax ? vmax_nan_wins(acc, v) : acc + v; };
  // An item is a band of output rows of one (n, c, od) plane.  At stride 2 the band's input
  // rows, from the first its windows read to the last, of each depth tap are split once each
  // into the thread's buffer, [depth tap][row][even, odd][phase_w] (the last split of a row
  // writes up to a vector past its half).
  constexpr int64_t kBandRows = 8;
  const int64_t planes = p.batch * p.channels * p.out_d;
  int64_t depth_taps = 0;
  for (int64_t od = 0; od < p.out_d; ++od) depth_taps = std::max(depth_taps, call.depths.count[od]);
  int64_t band_rows = kBandRows;
  while (band_rows > 1 && planes * ceil_div(p.out_h, band_rows) < 4 * int64_t(call.num_threads)) band_rows /= 2;
  const int64_t bands = ceil_div(p.out_h, band_rows);
  // Input rows [first, end) that band b's windows read (none when every window is padding).
  auto band_input = [&](int64_t b, int64_t& first, int64_t& end) {
    first = p.in_h, end = 0;
    for (int64_t oh = b * band_rows; oh < std::min(p.out_h, (b + 1) * band_rows); ++oh)
      if (call.rows.count[oh] > 0) {
        first = std::min(first, call.rows.begin[oh]);
        end = std::max(end, call.rows.begin[oh] + (call.rows.count[oh] - 1) * p.dilation_h + 1);
      }
  };
  int64_t max_rows = 0;
  for (int64_t b = 0; S == 2 && b < bands; ++b) {
    int64_t first, end;
    band_input(b, first, end);
    max_rows = std::max(max_rows, end - first);
  }
  // (Each thread's part starts on its own cache lines: two threads writing one line were no
  // faster than one; docs/tuning.md, "Memory traffic".)
  constexpr int64_t kLine = 64 / sizeof(float);
  const int64_t phase_w = ceil_div(W, 2 * L) * L;
  const int64_t thread_elems = ceil_div(depth_taps * max_rows * 2 * phase_w, kLine) * kLine;
  // Average: the columns' divisor factors as floats (their product with the row's, in float,
  // is the generic path's divisor).
  const int64_t col_elems = kMax || p.divisor_override != 0 ? 0 : ceil_div(OW, kLine) * kLine;
  float* buf = scratch<float>(size_t(col_elems + call.num_threads * thread_elems));
  for (int64_t ow = 0; ow < std::min(col_elems, OW); ++ow) buf[ow] = float(call.cols.size[ow]);

  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
    float* phases = buf + col_elems + thread_id() * thread_elems;  // [depth tap][h - first][even, odd]
#pragma omp for schedule(static)
    for (int64_t item = 0; item < planes * bands; ++item) {
      const int64_t band = item % bands, plane = item / bands;
      const int64_t od = plane % p.out_d, n = plane / p.out_d / p.channels, c = plane / p.out_d % p.channels;
      const int64_t d0 = call.depths.begin[od], taps_d = call.depths.count[od];
      const float* xp = x + n * call.x_stride.n + c * call.x_stride.c;
      int64_t first = 0, end = 0;
      if (S == 2) band_input(band, first, end);
      const int64_t rows = end - first;
      for (int64_t td = 0; td < taps_d; ++td)
        for (int64_t h = first; h < end; ++h) {
          const float* xr = xp + (d0 + td * p.dilation_d) * call.x_stride_d + h * call.x_stride.h;
          float* even = phases + (td * rows + h - first) * 2 * phase_w;
          for (int64_t q = 0; q < W; q += 2 * L) {
            // Past the row's end, the next row's values land in phase slots no tap reads; only
            // the input's very end needs masked loads (which were slow on lines still in memory).
            const int64_t left = xr + q + 2 * L <= x_end ? 2 * L : W - q;
            const V v0 = left >= L ? vload(xr + q) : vload_partial(xr + q, int(left));
            const V v1 = left >= 2 * L ? vload(xr + q + L)
                         : left > L    ? vload_partial(xr + q + L, int(left - L))
                                       : vzero();
            V e, o;
            deinterleave2(v0, v1, e, o);
            vstore(even + q / 2, e);
            vstore(even + phase_w + q / 2, o);
          }
        }
      for (int64_t oh = band * band_rows; oh < std::min(p.out_h, (band + 1) * band_rows); ++oh) {
        float* yr = y + n * call.y_stride.n + c * call.y_stride.c + od * call.y_stride_d + oh * call.y_stride.h;
        const int64_t h0 = call.rows.begin[oh], taps_h = call.rows.count[oh];
        for (int64_t c0 = 0; c0 < OW; c0 += kChunk * L) {
          V acc[kChunk];
          for (int v = 0; v < kChunk; ++v) acc[v] = identity;
          for (int64_t td = 0; td < taps_d; ++td)
            for (int64_t t = 0; t < taps_h; ++t) {
              const int64_t h = h0 + t * p.dilation_h;
              for (int64_t j = 0; j < p.kernel_w; ++j) {
                const int64_t l = lo[size_t(j)], e = hi[size_t(j)];
                if (e <= c0 || l >= c0 + kChunk * L) continue;
                // Output ow reads base[ow]: input column ow * S + off of row h.
                const int64_t off = j * p.dilation_w - p.pad_left;
                const float* base;
                if (S == 1) {
                  base = xp + (d0 + td * p.dilation_d) * call.x_stride_d + h * call.x_stride.h + off;
                } else {
                  const int64_t odd = off & 1;  // column 2 ow + off is in phase odd, at ow + (off - odd) / 2
                  base = phases + (2 * (td * rows + h - first) + odd) * phase_w + (off - odd) / 2;
                }
#pragma GCC unroll 4
                for (int v = 0; v < kChunk; ++v) {
                  const int64_t o = c0 + v * L;
                  V xv;
                  if (o >= l && o + L <= e) {
                    xv = vload(base + o);
                  } else {
                    const int64_t lane_lo = std::max<int64_t>(l - o, 0), lane_hi = std::min<int64_t>(e - o, L);
                    if (lane_hi <= lane_lo) continue;
                    xv = vload_mask_or(base + o, lane_mask(lane_lo, lane_hi), identity);
                  }
                  acc[v] = combine(acc[v], xv);
                }
              }
            }
          for (int v = 0; v < kChunk; ++v) {
            const int64_t o = c0 + v * L;
            if (o >= OW) break;
            const int count = int(std::min<int64_t>(L, OW - o));
            V r = acc[v];
            if (!kMax) {
              if (p.divisor_override != 0) {
                r = r / vset1(float(p.divisor_override));
              } else {
                const V cols = count == L ? vload(buf + o) : vload_partial(buf + o, count);
                r = r / (vset1(float(call.depths.size[od]) * float(call.rows.size[oh])) * cols);
              }
            }
            if (count == L) vstore(yr + o, r);
            else vstore_partial(yr + o, r, count);
          }
        }
      }
    }
  });
}
#endif

template <class T>
void run_rows_nchw(const PoolCall& call) {
  const Pool2dProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  T* y = static_cast<T*>(call.y);
  const int64_t OW = p.out_w, S = p.stride_w, W = p.in_w;
  // Output columns [lo[j], hi[j]) see tap column j inside the input.
  std::vector<int64_t> lo(size_t(p.kernel_w)), hi(size_t(p.kernel_w));
  for (int64_t j = 0; j < p.kernel_w; ++j) {
    const int64_t off = j * p.dilation_w - p.pad_left;  // input column of output 0
    int64_t l = off >= 0 ? 0 : ceil_div(-off, S);
    int64_t h = (W - 1 - off) < 0 ? 0 : (W - 1 - off) / S + 1;
    lo[size_t(j)] = std::min(l, OW);
    hi[size_t(j)] = std::max(std::min(h, OW), lo[size_t(j)]);
  }
#if CPPCONV_POOL_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (!call.indices && (S == 1 || S == 2)) {
      if (p.kind == PoolKind::Max) run_rows_nchw_f32<true>(call, lo, hi);
      else run_rows_nchw_f32<false>(call, lo, hi);
      return;
    }
  }
#endif
  const int64_t planes = p.batch * p.channels * p.out_d, items = planes * p.out_h;
  const bool is_max = p.kind == PoolKind::Max;

  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t oh = item % p.out_h, plane = item / p.out_h;
      const int64_t od = plane % p.out_d, n = plane / p.out_d / p.channels, c = plane / p.out_d % p.channels;
      const T* xp = x + n * call.x_stride.n + c * call.x_stride.c;
      const int64_t yo = n * call.y_stride.n + c * call.y_stride.c + od * call.y_stride_d + oh * call.y_stride.h;
      T* a = y + yo;
      const int64_t d0 = call.depths.begin[od], taps_d = call.depths.count[od];
      const int64_t h0 = call.rows.begin[oh], taps_h = call.rows.count[oh];
      if (is_max) {
        int64_t* idx = call.indices ? call.indices + yo : nullptr;
        for (int64_t ow = 0; ow < OW; ++ow) a[ow] = neg_inf<T>();
        if (idx)
          for (int64_t ow = 0; ow < OW; ++ow) idx[ow] = (d0 * p.in_h + h0) * W + call.cols.begin[ow];
        for (int64_t td = 0; td < taps_d; ++td)
          for (int64_t t = 0; t < taps_h; ++t) {
            const int64_t d = d0 + td * p.dilation_d, h = h0 + t * p.dilation_h;
            const T* xr = xp + d * call.x_stride_d + h * call.x_stride.h;
            for (int64_t j = 0; j < p.kernel_w; ++j) {
              const int64_t off = j * p.dilation_w - p.pad_left;
              const int64_t l = lo[size_t(j)], e = hi[size_t(j)];
              if (idx) {
                const int64_t base = (d * p.in_h + h) * W + off;
                for (int64_t ow = l; ow < e; ++ow) {
                  const T v = xr[ow * S + off];
                  if (v > a[ow] || v != v) {
                    a[ow] = v;
                    idx[ow] = base + ow * S;
                  }
                }
              } else if (S == 1) {
                const T* s = xr + off + l;
                T* d = a + l;
                const int64_t m = e - l;
#pragma omp simd
                for (int64_t q = 0; q < m; ++q) d[q] = (s[q] > d[q] || s[q] != s[q]) ? s[q] : d[q];
              } else {
#pragma omp simd
                for (int64_t ow = l; ow < e; ++ow) {
                  const T v = xr[ow * S + off];
                  a[ow] = (v > a[ow] || v != v) ? v : a[ow];
                }
              }
            }
          }
      } else {
        for (int64_t ow = 0; ow < OW; ++ow) a[ow] = T(0);
        for (int64_t td = 0; td < taps_d; ++td)
          for (int64_t t = 0; t < taps_h; ++t) {
            const T* xr = xp + (d0 + td * p.dilation_d) * call.x_stride_d + (h0 + t * p.dilation_h) * call.x_stride.h;
            for (int64_t j = 0; j < p.kernel_w; ++j) {
              const int64_t off = j * p.dilation_w - p.pad_left;
              const int64_t l = lo[size_t(j)], e = hi[size_t(j)];
              if (S == 1) {
                const T* s = xr + off + l;
                T* d = a + l;
                const int64_t m = e - l;
#pragma omp simd
                for (int64_t q = 0; q < m; ++q) d[q] += s[q];
              } else {
#pragma omp simd
                for (int64_t ow = l; ow < e; ++ow) a[ow] += xr[ow * S + off];
              }
            }
          }
        if (p.divisor_override != 0) {
          const T d = T(p.divisor_override);
          for (int64_t ow = 0; ow < OW; ++ow) a[ow] /= d;
        } else {
          const T rs = T(call.depths.size[od]) * T(call.rows.size[oh]);  // exact for a depth of one
          const int64_t* cs = call.cols.size;
#pragma omp simd
          for (int64_t ow = 0; ow < OW; ++ow) a[ow] /= rs * T(cs[ow]);
        }
      }
    }
  });
}

// Its per-tap column tables and loops cost O(kernel_w) per row, so windows wider than the
// input (all but W of their taps in the padding) go to the per-window maps instead: a
// kernel_size of 2^40 must not allocate or loop 2^40 times.
bool accepts_rows_nchw(const Pool2dProblem& p) {
  return p.layout == Layout::NCHW && !p.adaptive && p.kernel_w <= p.in_w;
}

// ---------------------------------------------------------------------------------------
// pool2d_plane_nchw

template <class T>
void run_plane_nchw(const PoolCall& call) {
  const Pool2dProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  T* y = static_cast<T*>(call.y);
  const int64_t planes = p.batch * p.channels, HW = p.in_d * p.in_h * p.in_w;
  const bool is_max = p.kind == PoolKind::Max;
  constexpr int L = 16;  // independent partial results, so the reduction vectorises

  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      const int64_t n = plane / p.channels, c = plane % p.channels;
      const T* xp = x + n * call.x_stride.n + c * call.x_stride.c;  // contiguous d, h, w
      const int64_t yo = n * call.y_stride.n + c * call.y_stride.c;
      const int64_t full = HW / L * L;
      if (is_max && call.indices) {
        T best = neg_inf<T>();
        int64_t arg = 0;
        for (int64_t i = 0; i < HW; ++i)
          if (xp[i] > best || xp[i] != xp[i]) {
            best = xp[i];
            arg = i;
          }
        y[yo] = best;
        call.indices[yo] = arg;
      } else if (is_max) {
        T part[L];
        for (int l = 0; l < L; ++l) part[l] = neg_inf<T>();
        for (int64_t i = 0; i < full; i += L)
#pragma omp simd
          for (int l = 0; l < L; ++l) {
            const T v = xp[i + l];
            part[l] = (v > part[l] || v != v) ? v : part[l];
          }
        T best = neg_inf<T>();
        for (int l = 0; l < L; ++l) best = (part[l] > best || part[l] != part[l]) ? part[l] : best;
        for (int64_t i = full; i < HW; ++i) best = (xp[i] > best || xp[i] != xp[i]) ? xp[i] : best;
        y[yo] = best;
      } else {
        T part[L] = {};
        for (int64_t i = 0; i < full; i += L)
#pragma omp simd
          for (int l = 0; l < L; ++l) part[l] += xp[i + l];
        T sum = 0;
        for (int l = 0; l < L; ++l) sum += part[l];
        for (int64_t i = full; i < HW; ++i) sum += xp[i];
        y[yo] = sum / avg_divisor<T>(call, 0, 0, 0);
      }
    }
  });
}

bool accepts_plane_nchw(const Pool2dProblem& p) {
  return p.layout == Layout::NCHW && p.adaptive && p.out_d == 1 && p.out_h == 1 && p.out_w == 1;
}

// ---------------------------------------------------------------------------------------
// pool2d_maps_nchw

template <class T>
void run_maps_nchw(const PoolCall& call) {
  const Pool2dProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  T* y = static_cast<T*>(call.y);
  const int64_t planes = p.batch * p.channels * p.out_d;
  const bool is_max = p.kind == PoolKind::Max;

  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      const int64_t od = plane % p.out_d, n = plane / p.out_d / p.channels, c = plane / p.out_d % p.channels;
      const int64_t d0 = call.depths.begin[od], td = call.depths.count[od];
      const T* xp = x + n * call.x_stride.n + c * call.x_stride.c;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        const int64_t h0 = call.rows.begin[oh], th = call.rows.count[oh];
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          const int64_t w0 = call.cols.begin[ow], tw = call.cols.count[ow];
          const int64_t yo = n * call.y_stride.n + c * call.y_stride.c + od * call.y_stride_d + oh * call.y_stride.h +
                             ow * call.y_stride.w;
          if (is_max) {
            T best = neg_inf<T>();
            int64_t arg = (d0 * p.in_h + h0) * p.in_w + w0;
            for (int64_t k = 0; k < td; ++k)
              for (int64_t t = 0; t < th; ++t) {
                const int64_t d = d0 + k * p.dilation_d, h = h0 + t * p.dilation_h;
                const T* xr = xp + d * call.x_stride_d + h * call.x_stride.h;
                for (int64_t u = 0; u < tw; ++u) {
                  const int64_t w = w0 + u * p.dilation_w;
                  const T v = xr[w];
                  if (v > best || v != v) {
                    best = v;
                    arg = (d * p.in_h + h) * p.in_w + w;
                  }
                }
              }
            y[yo] = best;
            if (call.indices) call.indices[yo] = arg;
          } else {
            T sum = 0;
            for (int64_t k = 0; k < td; ++k)
              for (int64_t t = 0; t < th; ++t) {
                const T* xr =
                    xp + (d0 + k * p.dilation_d) * call.x_stride_d + (h0 + t * p.dilation_h) * call.x_stride.h + w0;
                for (int64_t u = 0; u < tw; ++u) sum += xr[u * p.dilation_w];
              }
            y[yo] = sum / avg_divisor<T>(call, od, oh, ow);
          }
        }
      }
    }
  });
}

bool accepts_nchw(const Pool2dProblem& p) { return p.layout == Layout::NCHW; }

// ---------------------------------------------------------------------------------------
// pool2d_channels_nhwc

#if CPPCONV_POOL_SIMD
// Global average pooling of channels-last float images (a squeeze-and-excitation block's pool):
// each item sums a block of channels over every pixel in registers, two pixels at a time.  The
// general loop below adds each pixel into the output in memory, about a value a cycle, and ran
// these pools at half ONNX Runtime's speed (docs/tuning.md, "Whole networks").
void run_global_average_nhwc_f32(const PoolCall& call) {
  using namespace simd;
  using V = Vec<float>;
  constexpr int L = kLanes<float>, kVecs = 4;  // a block: kVecs vectors of channels
  const Pool2dProblem& p = call.p;
  const float* x = static_cast<const float*>(call.x);
  float* y = static_cast<float*>(call.y);
  const int64_t C = p.channels, pixels = p.in_d * p.in_h * p.in_w;
  const int64_t cblocks = ceil_div(C, int64_t(kVecs * L)), items = p.batch * cblocks;
  const V divisor = vset1(avg_divisor<float>(call, 0, 0, 0));
  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / cblocks, c0 = item % cblocks * kVecs * L;
      const float* xn = x + n * call.x_stride.n + c0;  // pixel q at xn + q * C (C-contiguous)
      int valid[kVecs];
      Mask<float> masks[kVecs];
      for (int v = 0; v < kVecs; ++v) {
        valid[v] = int(std::clamp<int64_t>(C - c0 - v * L, 0, L));
        masks[v] = lane_mask(0, valid[v]);
      }
      const auto load = [&](int64_t q, int v) {
        const float* s = xn + q * C + v * L;
        return valid[v] == L ? vload(s) : vload_mask(s, masks[v]);
      };
      V even[kVecs], odd[kVecs];
      for (int v = 0; v < kVecs; ++v) even[v] = odd[v] = vzero<float>();
      int64_t q = 0;
      for (; q + 1 < pixels; q += 2)
#pragma GCC unroll 4
        for (int v = 0; v < kVecs; ++v)
          if (valid[v] > 0) even[v] = vadd(even[v], load(q, v)), odd[v] = vadd(odd[v], load(q + 1, v));
      if (q < pixels)
        for (int v = 0; v < kVecs; ++v)
          if (valid[v] > 0) even[v] = vadd(even[v], load(q, v));
      float* yn = y + n * call.y_stride.n + c0;
      for (int v = 0; v < kVecs; ++v) {
        const V mean = vdiv(vadd(even[v], odd[v]), divisor);  // (as the general loop: a division)
        if (valid[v] == L) vstore(yn + v * L, mean);
        else if (valid[v] > 0) vstore_mask(yn + v * L, mean, masks[v]);
      }
    }
  });
}

// One float output pixel's max over its window, cn channels from xn (the window's image, its
// first channel) into a: 4 vectors of channels held in registers across the taps, stored once
// (the generic loop below loads, compares and stores every output vector at each tap).  The
// last channels, fewer than 4 vectors, go one vector at a time: a loop over a run-time count of
// the 4 accumulators kept them all on the stack, a store and reload per tap.
// kExact: each tap through vmax_nan_wins.  Else a plain vmax (v > acc ? v : acc: PyTorch's
// order, a NaN v dropped) and v * 0 summed on the side, NaN where a NaN or infinity was read;
// returns false then, and the caller runs the exact loop (the compare-and-blend chain held the
// pool at a third of the loads' speed).
template <bool kExact>
bool max_window_nhwc_f32(const PoolCall& call, const float* xn, int64_t d0, int64_t td, int64_t h0, int64_t th,
                         int64_t w0, int64_t tw, int64_t cn, float* a) {
  using namespace simd;
  using V = Vec<float>;
  constexpr int L = kLanes<float>;
  constexpr int kChunk = 4;  // vectors in registers
  const Pool2dProblem& p = call.p;
  const auto each_tap = [&](auto&& take) {  // take(s): s the tap's first channel
    for (int64_t k = 0; k < td; ++k)
      for (int64_t t = 0; t < th; ++t) {
        const float* xr = xn + (d0 + k * p.dilation_d) * call.x_stride_d + (h0 + t * p.dilation_h) * call.x_stride.h;
        for (int64_t u = 0; u < tw; ++u) take(xr + (w0 + u * p.dilation_w) * call.x_stride.w);
      }
  };
  const V zero = vzero<float>();
  V probe[kChunk] = {zero, zero, zero, zero};
  const auto take = [&](V& acc, V& pr, V v) {
    if constexpr (kExact) {
      acc = vmax_nan_wins(acc, v);
    } else {
      acc = vmax(v, acc);
      pr = vfma(v, zero, pr);
    }
  };
  int64_t c0 = 0;
  for (; c0 + kChunk * L <= cn; c0 += kChunk * L) {
    V acc[kChunk];
#pragma GCC unroll 4
    for (int v = 0; v < kChunk; ++v) acc[v] = vset1(neg_inf<float>());
    each_tap([&](const float* s) {
#pragma GCC unroll 4
      for (int v = 0; v < kChunk; ++v) take(acc[v], probe[v], vload(s + c0 + v * L));
    });
#pragma GCC unroll 4
    for (int v = 0; v < kChunk; ++v) vstore(a + c0 + v * L, acc[v]);
  }
  for (; c0 < cn; c0 += L) {
    const int m = int(std::min<int64_t>(L, cn - c0));
    V acc = vset1(neg_inf<float>());
    if (m == L) each_tap([&](const float* s) { take(acc, probe[0], vload(s + c0)); });
    else each_tap([&](const float* s) { take(acc, probe[0], vload_partial(s + c0, m)); });
    if (m == L) vstore(a + c0, acc);
    else vstore_partial(a + c0, acc, m);
  }
  if constexpr (kExact) {
    return true;
  } else {
    return !vany_nan(vadd(vadd(probe[0], probe[1]), vadd(probe[2], probe[3])));
  }
}
#endif

template <class T>
void run_channels_nhwc(const PoolCall& call) {
  const Pool2dProblem& p = call.p;
#if CPPCONV_POOL_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (p.kind == PoolKind::Avg && p.adaptive && p.out_d == 1 && p.out_h == 1 && p.out_w == 1) {
      run_global_average_nhwc_f32(call);
      return;
    }
  }
#endif
  const T* x = static_cast<const T*>(call.x);
  T* y = static_cast<T*>(call.y);
  const int64_t C = p.channels;
  // Channel blocks keep a few items per pixel for global pooling of small batches.
  const int64_t cblock = std::min<int64_t>(C, 256);
  const int64_t cblocks = ceil_div(C, cblock);
  const int64_t items = p.batch * p.out_d * p.out_h * p.out_w * cblocks;
  const bool is_max = p.kind == PoolKind::Max;

  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      int64_t rest = item;
      const int64_t cb = rest % cblocks;
      rest /= cblocks;
      const int64_t ow = rest % p.out_w;
      rest /= p.out_w;
      const int64_t oh = rest % p.out_h;
      rest /= p.out_h;
      // (No division for 2-D problems: items of few channels are a handful of loads each.)
      const int64_t od = p.out_d == 1 ? 0 : rest % p.out_d;
      const int64_t n = p.out_d == 1 ? rest : rest / p.out_d;
      const int64_t c0 = cb * cblock, cn = std::min(cblock, C - c0);
      int exponent = 0;
      const int64_t d0 = call.depths.begin[od], td = call.depths.count[od];
      const int64_t h0 = call.rows.begin[oh], th = call.rows.count[oh];
      const int64_t w0 = call.cols.begin[ow], tw = call.cols.count[ow];
      const T* xn = x + n * call.x_stride.n + c0;
      const int64_t yo = n * call.y_stride.n + od * call.y_stride_d + oh * call.y_stride.h + ow * call.y_stride.w + c0;
      T* a = y + yo;
#if CPPCONV_POOL_SIMD
      if constexpr (std::is_same_v<T, float>) {
        if (is_max && !call.indices) {
          if (!max_window_nhwc_f32<false>(call, xn, d0, td, h0, th, w0, tw, cn, a))
            max_window_nhwc_f32<true>(call, xn, d0, td, h0, th, w0, tw, cn, a);
          continue;
        }
      }
#endif
      if (is_max) {
        for (int64_t c = 0; c < cn; ++c) a[c] = neg_inf<T>();
        int64_t* idx = call.indices ? call.indices + yo : nullptr;
        if (idx)
          for (int64_t c = 0; c < cn; ++c) idx[c] = (d0 * p.in_h + h0) * p.in_w + w0;
        for (int64_t k = 0; k < td; ++k)
          for (int64_t t = 0; t < th; ++t) {
            const int64_t d = d0 + k * p.dilation_d, h = h0 + t * p.dilation_h;
            for (int64_t u = 0; u < tw; ++u) {
              const int64_t w = w0 + u * p.dilation_w;
              const T* s = xn + d * call.x_stride_d + h * call.x_stride.h + w * call.x_stride.w;
              if (idx) {
                const int64_t here = (d * p.in_h + h) * p.in_w + w;
#pragma omp simd
                for (int64_t c = 0; c < cn; ++c) {
                  const bool take = s[c] > a[c] || s[c] != s[c];
                  a[c] = take ? s[c] : a[c];
                  idx[c] = take ? here : idx[c];
                }
              } else {
#pragma omp simd
                for (int64_t c = 0; c < cn; ++c) a[c] = (s[c] > a[c] || s[c] != s[c]) ? s[c] : a[c];
              }
            }
          }
      } else {
        for (int64_t c = 0; c < cn; ++c) a[c] = T(0);
        for (int64_t k = 0; k < td; ++k)
          for (int64_t t = 0; t < th; ++t) {
            const int64_t h = h0 + t * p.dilation_h;
            const T* xd = xn + (d0 + k * p.dilation_d) * call.x_stride_d;
            for (int64_t u = 0; u < tw; ++u) {
              const T* s = xd + h * call.x_stride.h + (w0 + u * p.dilation_w) * call.x_stride.w;
#pragma omp simd
              for (int64_t c = 0; c < cn; ++c) a[c] += s[c];
            }
          }
        const T d = avg_divisor<T>(call, od, oh, ow);
        const T r = T(1) / d;
        if (r * d == T(1) && std::frexp(d, &exponent) == T(0.5)) {
          // A power of two: multiplying by the exact reciprocal rounds as dividing does.
#pragma omp simd
          for (int64_t c = 0; c < cn; ++c) a[c] *= r;
        } else {
#pragma omp simd
          for (int64_t c = 0; c < cn; ++c) a[c] /= d;
        }
      }
    }
  });
}

bool accepts_nhwc(const Pool2dProblem& p) { return p.layout == Layout::NHWC; }

}  // namespace

#define CPPCONV_POOL(name, accepts, run)                                                                   \
  const PoolAlgorithm name##_f32 = {#name "_f32__" CPPCONV_ISA_NAME, DType::Float32, accepts, run<float>}; \
  const PoolAlgorithm name##_f64 = {#name "_f64__" CPPCONV_ISA_NAME, DType::Float64, accepts, run<double>};

CPPCONV_POOL(pool2d_rows_nchw, accepts_rows_nchw, run_rows_nchw)
CPPCONV_POOL(pool2d_plane_nchw, accepts_plane_nchw, run_plane_nchw)
CPPCONV_POOL(pool2d_maps_nchw, accepts_nchw, run_maps_nchw)
CPPCONV_POOL(pool2d_channels_nhwc, accepts_nhwc, run_channels_nhwc)
#undef CPPCONV_POOL

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
