#include "pool_reference.h"
#include "reference.h"

#include <cmath>
#include <limits>

namespace cppconv {
namespace {

// One output's window along an axis: the taps at start + t * step for t < taps, and for the
// average (regular pools) PyTorch's hend = min(start + K, I + pad_after) before clipping.
struct Window {
  int64_t start, taps, step, padded_end;
};

Window window(bool adaptive, int64_t o, int64_t in, int64_t out, int64_t k, int64_t s, int64_t d, int64_t pad_before,
              int64_t pad_after) {
  if (adaptive) {
    const int64_t start = (o * in) / out, end = ((o + 1) * in + out - 1) / out;
    return {start, end - start, 1, end};
  }
  const int64_t start = o * s - pad_before;
  return {start, k, d, std::min(start + k, in + pad_after)};
}

// y[n, c, od, oh, ow] = max or mean of x[n, c, d, h, w] over the window's taps inside the input.
template <class T>
void run_pool_reference(const PoolCall& call) {
  const Pool2dProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  T* y = static_cast<T*>(call.y);
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t c = 0; c < p.channels; ++c)
      for (int64_t od = 0; od < p.out_d; ++od)
        for (int64_t oh = 0; oh < p.out_h; ++oh)
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            const Window wd =
                window(p.adaptive, od, p.in_d, p.out_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front, p.pad_back);
            const Window wh =
                window(p.adaptive, oh, p.in_h, p.out_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, p.pad_bottom);
            const Window ww =
                window(p.adaptive, ow, p.in_w, p.out_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, p.pad_right);
            const T* xp = x + n * call.x_stride.n + c * call.x_stride.c;
            const int64_t yo = n * call.y_stride.n + c * call.y_stride.c + od * call.y_stride_d + oh * call.y_stride.h +
                               ow * call.y_stride.w;
            double sum = 0;
            int64_t inside = 0;
            // PyTorch's max: the first tap inside the input is the initial argmax, a strictly
            // larger value or any NaN replaces it (so the last NaN of the window wins).
            int64_t d0 = wd.start, h0 = wh.start, w0 = ww.start;
            while (d0 < 0) d0 += wd.step;
            while (h0 < 0) h0 += wh.step;
            while (w0 < 0) w0 += ww.step;
            T best = -std::numeric_limits<T>::infinity();
            int64_t arg = (d0 * p.in_h + h0) * p.in_w + w0;
            for (int64_t k = 0; k < wd.taps; ++k) {
              const int64_t d = wd.start + k * wd.step;
              if (d < 0 || d >= p.in_d) continue;
              for (int64_t i = 0; i < wh.taps; ++i) {
                const int64_t h = wh.start + i * wh.step;
                if (h < 0 || h >= p.in_h) continue;
                for (int64_t j = 0; j < ww.taps; ++j) {
                  const int64_t w = ww.start + j * ww.step;
                  if (w < 0 || w >= p.in_w) continue;
                  const T v = xp[d * call.x_stride_d + h * call.x_stride.h + w * call.x_stride.w];
                  if (v > best || std::isnan(v)) {
                    best = v;
                    arg = (d * p.in_h + h) * p.in_w + w;
                  }
                  sum += double(v);
                  ++inside;
                }
              }
            }
            if (p.kind == PoolKind::Max) {
              y[yo] = best;
              if (call.indices) call.indices[yo] = arg;
              continue;
            }
            double divisor = double(inside);  // a double: the product of sizes can pass 2^63
            if (p.divisor_override != 0) {
              divisor = double(p.divisor_override);
            } else if (!p.adaptive && p.count_include_pad) {
              divisor = double(wd.padded_end - wd.start) * double(wh.padded_end - wh.start) *
                        double(ww.padded_end - ww.start);
            }
            y[yo] = T(sum / divisor);
          }
}

bool pool_accepts_any(const Pool2dProblem&) { return true; }

}  // namespace

const PoolAlgorithm pool2d_reference_f32 = {"pool2d_reference_f32", DType::Float32, pool_accepts_any,
                                            run_pool_reference<float>};
const PoolAlgorithm pool2d_reference_f64 = {"pool2d_reference_f64", DType::Float64, pool_accepts_any,
                                            run_pool_reference<double>};

}  // namespace cppconv
