#include "conv_transpose.h"

#include <algorithm>
#include <stdexcept>

#include "conv.h"
#include "conv_transpose_reference.h"
#include "dispatch.h"
#include "memory.h"

namespace cppconv {
namespace {

int transpose_threads(const ConvTransposeProblem& p, int max_threads) {
  return threads_for_work(conv_transpose_flops(p), max_threads);
}

const AlgorithmFamily<ConvTransposeAlgorithm> kConvTransposeFamily = {
    &KernelTable::conv_transpose, &KernelTable::conv_transpose_count, &conv_transpose2d_reference_f32,
    &conv_transpose2d_reference_f64};

}  // namespace

int64_t conv_transpose_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                                   int64_t output_padding, int64_t dilation) {
  // Nothing wraps for any non-negative int64 arguments (UBSan checks this): a term past
  // kMaxIndexExtent gives kMaxIndexExtent, a size that callers refuse as too large.
  int64_t span, reach;
  if (std::max({in, pad_before, pad_after, output_padding}) >= kMaxIndexExtent ||
      mul_overflows(in - 1, stride, &span) || mul_overflows(dilation, kernel - 1, &reach) ||
      std::max(span, reach) >= kMaxIndexExtent)
    return kMaxIndexExtent;
  return span + reach + output_padding + 1 - pad_before - pad_after;  // every term below 2^61
}

double conv_transpose_flops(const ConvTransposeProblem& p) {
  // Every input pixel meets every tap once (taps that land in the cropped padding included).
  return 2.0 * double(p.batch) * double(p.in_channels) * double(p.in_d) * double(p.in_h) * double(p.in_w) *
         double(p.out_channels / p.groups) * double(p.kernel_d) * double(p.kernel_h) * double(p.kernel_w);
}

std::vector<const ConvTransposeAlgorithm*> all_conv_transpose_algorithms() { return kConvTransposeFamily.all(); }

const ConvTransposeAlgorithm* find_conv_transpose_algorithm(const std::string& name) {
  return kConvTransposeFamily.find(name);
}

ConvTransposePlan::ConvTransposePlan(DType dtype, const void* weight, const void* bias, int64_t bias_size,
                                     int64_t in_channels, int64_t group_out_channels, int64_t kernel_d,
                                     int64_t kernel_h, int64_t kernel_w, bool copy, bool shared)
    : dtype_(dtype), in_channels_(in_channels), group_out_(group_out_channels), kernel_d_(kernel_d),
      kernel_h_(kernel_h), kernel_w_(kernel_w), bias_size_(bias ? bias_size : 0),
      weights_(dtype, weight, size_t(in_channels * group_out_channels * kernel_d * kernel_h * kernel_w), bias,
               size_t(bias ? bias_size : 0), copy, shared) {}

ConvTransposeChoice ConvTransposePlan::choose(const ConvTransposeProblem& p, int max_threads) const {
  const KernelTable& table = active_table();
  const int threads = transpose_threads(p, resolve_threads(max_threads));
  const ConvTransposeAlgorithm* chosen = kConvTransposeFamily.choose(table, p);
  return {chosen, table.isa_name, threads, chosen->workspace_bytes(p, threads), chosen->packed_bytes(p)};
}

void ConvTransposePlan::run(const ConvTransposeProblem& p, const void* x, void* y, const ConvTransposeAlgorithm* forced,
                            int max_threads) {
  if (p.dtype != dtype_ || p.in_channels != in_channels_ || p.out_channels != group_out_ * p.groups ||
      p.kernel_d != kernel_d_ || p.kernel_h != kernel_h_ || p.kernel_w != kernel_w_ ||
      (has_bias() && bias_size_ != p.out_channels))
    throw std::invalid_argument("conv_transpose problem does not match the plan's weights");
  if (p.batch == 0 || p.out_channels == 0 || p.out_d < 1 || p.out_h < 1 || p.out_w < 1) return;
  ConvTransposeChoice choice = choose(p, max_threads);
  if (forced) {
    require_accepts(*forced, p);
    choice.algorithm = forced;
  }
  ConvTransposeCall call;
  call.p = p;
  call.x = x;
  const std::shared_ptr<const void> source = weights_.source();  // (a transposed plan keeps its copy)
  call.weight = source.get();
  call.packed = weights_.packed(*choice.algorithm, p, choice.threads);
  call.bias = weights_.bias();
  call.y = y;
  // Depth and height together are the rows of a C-contiguous tensor, in either layout.
  call.x_stride = contiguous_strides(p.layout, p.in_channels, p.in_d * p.in_h, p.in_w);
  call.y_stride = contiguous_strides(p.layout, p.out_channels, p.out_d * p.out_h, p.out_w);
  call.x_stride_d = p.in_h * call.x_stride.h;
  call.y_stride_d = p.out_h * call.y_stride.h;
  call.num_threads = choice.threads;
  choice.algorithm->run(call);
}

}  // namespace cppconv
