// Plain descriptions of pooling calls, shared by the drivers and
// every per-ISA kernel.  Data only (no inline functions), for the same one-definition reason
// as conv_problem.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include "conv_problem.h"

namespace cppconv {

enum class PoolKind : int { Max = 0, Avg = 1 };

// One pooling call.  Regular pools have windows (oh * stride - pad + i * dilation); adaptive
// pools (PyTorch's start = floor(o * I / O), end = ceil((o + 1) * I / O)) have none of
// kernel/stride/padding/dilation and are described by the window maps of PoolCall only.
// The depth axis defaults to one plane, so a 2-D pool is the 3-D pool with D = 1 (and a 1-D
// pool the 2-D one with H = 1); in the layouts depth sits before the height (NCDHW, NDHWC).
struct Pool2dProblem {
  int64_t batch = 0, channels = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t in_d = 1, out_d = 1, kernel_d = 1, stride_d = 1, dilation_d = 1, pad_front = 0, pad_back = 0;
  PoolKind kind = PoolKind::Max;
  bool adaptive = false;
  bool count_include_pad = true;  // avg: see PoolWindows::size
  int64_t divisor_override = 0;   // avg: 0 for none
  DType dtype = DType::Float32;
  Layout layout = Layout::NCHW;   // of input, output and indices
};

// The windows along one axis, resolved once by the driver so that kernels never clip.
// Output o reads the valid input coordinates begin[o] + t * dilation for t < count[o]
// (dilation 1 for adaptive pools).  count is 0 only for a dilated window that covers nothing
// but padding; begin is then the first non-negative tap, as PyTorch's initial max index.
// size[o] is the average's divisor factor: with count_include_pad the window clipped to the
// padded input (PyTorch's rule for ceil_mode windows), else count[o].
struct PoolWindows {
  const int64_t* begin = nullptr;
  const int64_t* count = nullptr;
  const int64_t* size = nullptr;
};

struct PoolCall {
  Pool2dProblem p;
  const void* x = nullptr;    // strides x_stride
  void* y = nullptr;          // strides y_stride
  int64_t* indices = nullptr; // max only, or nullptr: flat (d * in_h + h) * in_w + w per output, strides y_stride
  Strides4 x_stride, y_stride;
  int64_t x_stride_d = 0, y_stride_d = 0;  // one depth plane: in_h * x_stride.h, out_h * y_stride.h
  PoolWindows depths, rows, cols;
  int num_threads = 1;
};

}  // namespace cppconv
