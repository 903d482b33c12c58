#include "pool.h"

#include <algorithm>
#include <stdexcept>

#include "conv.h"
#include "dispatch.h"
#include "memory.h"
#include "pool_reference.h"

namespace cppconv {
namespace {

const AlgorithmFamily<PoolAlgorithm> kPoolFamily = {&KernelTable::pool, &KernelTable::pool_count, &pool2d_reference_f32,
                                                    &pool2d_reference_f64};

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

int pool_threads(const Pool2dProblem& p, int max_threads) {
  // Elements touched: every output's window, at least the whole input.  Pooling streams
  // memory, so a second thread pays off from about 50,000 elements (a touched element counts
  // as twenty flops of a convolution).
  const double out_plane = double(p.out_d) * double(p.out_h) * double(p.out_w);
  const double in_plane = double(p.in_d) * double(p.in_h) * double(p.in_w);
  const double taps =
      p.adaptive ? in_plane / out_plane + 1.0 : double(p.kernel_d) * double(p.kernel_h) * double(p.kernel_w);
  const double outputs = double(p.batch) * double(p.channels) * out_plane;
  const double inputs = double(p.batch) * double(p.channels) * in_plane;
  return threads_for_work(20.0 * std::max(outputs * taps, inputs), max_threads);
}

}  // namespace

int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                         int64_t dilation, bool ceil_mode) {
  // PyTorch's pooling_output_shape, written so that nothing wraps for any non-negative int64
  // arguments (UBSan checks this): sizes past kMaxIndexExtent give 0, which callers refuse.
  int64_t reach, last_start;
  if (std::max({in, pad_before, pad_after}) >= kMaxIndexExtent || mul_overflows(dilation, kernel - 1, &reach)) return 0;
  const int64_t extent = in + pad_before + pad_after;  // below 3 * 2^61
  int64_t steps;
  if (reach < extent) {
    const int64_t span = extent - 1 - reach;
    steps = ceil_mode ? (span == 0 ? 0 : (span - 1) / stride + 1) : span / stride;
  } else {
    // The window is longer than the padded input: span < 0 floors to fewer than 0 steps, but
    // in ceil_mode rounds up to 0 (one window, hanging past the padding) while the overhang
    // -span = reach - extent + 1 is shorter than the stride.
    if (!ceil_mode || reach - extent >= stride - 1) return 0;
    steps = 0;
  }
  // ceil_mode: the last window must start inside the input or the left padding.
  if (ceil_mode && (mul_overflows(steps, stride, &last_start) || last_start >= in + pad_before)) return steps;
  return steps + 1;
}

PoolAxisMaps pool_axis_maps(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t dilation,
                            int64_t pad_before, int64_t pad_after, bool adaptive, bool count_include_pad) {
  PoolAxisMaps m;
  m.begin.resize(size_t(out));
  m.count.resize(size_t(out));
  m.size.resize(size_t(out));
  for (int64_t o = 0; o < out; ++o) {
    int64_t begin, count, size;
    if (adaptive) {
      begin = (o * in) / out;
      count = ((o + 1) * in + out - 1) / out - begin;
      size = count;
    } else {
      const int64_t start = o * stride - pad_before;
      const int64_t first = start < 0 ? (-start + dilation - 1) / dilation : 0;
      const int64_t last = std::min(kernel - 1, floor_div(in - 1 - start, dilation));
      begin = start + first * dilation;
      count = std::max<int64_t>(0, last - first + 1);
      // min(start + kernel, in + pad_after) - start, without the sum that can wrap.
      size = count_include_pad ? std::min(kernel, in + pad_after - start) : count;
    }
    m.begin[size_t(o)] = begin;
    m.count[size_t(o)] = count;
    m.size[size_t(o)] = size;
  }
  return m;
}

std::vector<const PoolAlgorithm*> all_pool_algorithms() { return kPoolFamily.all(); }

const PoolAlgorithm* find_pool_algorithm(const std::string& name) { return kPoolFamily.find(name); }

PoolChoice choose_pool(const Pool2dProblem& p, int max_threads) {
  const KernelTable& table = active_table();
  return {kPoolFamily.choose(table, p), table.isa_name, pool_threads(p, resolve_threads(max_threads))};
}

void pool2d(const Pool2dProblem& p, const void* x, void* y, int64_t* indices, const PoolAlgorithm* forced,
            int max_threads) {
  if (p.batch == 0 || p.channels == 0 || p.out_d == 0 || p.out_h == 0 || p.out_w == 0) return;
  PoolChoice choice = choose_pool(p, max_threads);
  if (forced) {
    require_accepts(*forced, p);
    choice.algorithm = forced;
  }
  const PoolAxisMaps depths = pool_axis_maps(p.in_d, p.out_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front,
                                             p.pad_back, p.adaptive, p.count_include_pad);
  const PoolAxisMaps rows = pool_axis_maps(p.in_h, p.out_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top,
                                           p.pad_bottom, p.adaptive, p.count_include_pad);
  const PoolAxisMaps cols = pool_axis_maps(p.in_w, p.out_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left,
                                           p.pad_right, p.adaptive, p.count_include_pad);
  PoolCall call;
  call.p = p;
  call.x = x;
  call.y = y;
  call.indices = p.kind == PoolKind::Max ? indices : nullptr;
  // Depth planes stack along the height: (D * H, W) has the strides of n, c, h and w.
  call.x_stride = contiguous_strides(p.layout, p.channels, p.in_d * p.in_h, p.in_w);
  call.y_stride = contiguous_strides(p.layout, p.channels, p.out_d * p.out_h, p.out_w);
  call.x_stride_d = p.in_h * call.x_stride.h;
  call.y_stride_d = p.out_h * call.y_stride.h;
  call.depths = {depths.begin.data(), depths.count.data(), depths.size.data()};
  call.rows = {rows.begin.data(), rows.count.data(), rows.size.data()};
  call.cols = {cols.begin.data(), cols.count.data(), cols.size.data()};
  call.num_threads = choice.threads;
  choice.algorithm->run(call);
}

}  // namespace cppconv
