#include "conv_transpose.h"

#include <algorithm>
#include <stdexcept>

#include "conv.h"
#include "dispatch.h"
#include "pool_reference.h"

namespace cppconv {
namespace {

Strides4 contiguous_strides(Layout layout, int64_t c, int64_t h, int64_t w) {
  if (layout == Layout::NCHW) return {c * h * w, h * w, w, 1};
  return {h * w * c, 1, w * c, c};
}

const ConvTransposeAlgorithm& reference_for(DType dtype) {
  return dtype == DType::Float32 ? conv_transpose2d_reference_f32 : conv_transpose2d_reference_f64;
}

size_t dtype_size(DType d) { return d == DType::Float32 ? 4 : 8; }

int transpose_threads(const ConvTranspose2dProblem& p, int max_threads) {
#if defined(_OPENMP)
  // As conv2d: about 20 us of single-threaded work per extra thread.
  const double useful = std::max(1.0, conv_transpose2d_flops(p) / 1.0e6);
  return int(std::max(1.0, std::min<double>(max_threads, useful)));
#else
  (void)p;
  (void)max_threads;
  return 1;
#endif
}

}  // namespace

int64_t conv_transpose_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before,
                                   int64_t pad_after, int64_t output_padding, int64_t dilation) {
  return (in - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_padding + 1;
}

double conv_transpose2d_flops(const ConvTranspose2dProblem& p) {
  // Every input pixel meets every tap once (taps that land in the cropped padding included).
  return 2.0 * double(p.batch) * double(p.in_channels) * double(p.in_h) * double(p.in_w) *
         double(p.out_channels / p.groups) * double(p.kernel_h) * double(p.kernel_w);
}

std::vector<const ConvTransposeAlgorithm*> all_conv_transpose_algorithms() {
  std::vector<const ConvTransposeAlgorithm*> all;
  for (const std::string& isa : available_isas()) {
    const KernelTable& t = table_for_isa(isa);
    for (int i = 0; i < t.conv_transpose_count; ++i) all.push_back(&t.conv_transpose[i]);
  }
  all.push_back(&conv_transpose2d_reference_f32);
  all.push_back(&conv_transpose2d_reference_f64);
  return all;
}

const ConvTransposeAlgorithm* find_conv_transpose_algorithm(const std::string& name) {
  for (const ConvTransposeAlgorithm* a : all_conv_transpose_algorithms())
    if (name == a->name) return a;
  return nullptr;
}

ConvTranspose2dPlan::ConvTranspose2dPlan(DType dtype, const void* weight, const void* bias, int64_t bias_size,
                                         int64_t in_channels, int64_t group_out_channels, int64_t kernel_h,
                                         int64_t kernel_w, bool copy)
    : dtype_(dtype), in_channels_(in_channels), group_out_(group_out_channels), kernel_h_(kernel_h),
      kernel_w_(kernel_w), bias_size_(bias ? bias_size : 0), weight_(weight), bias_(bias) {
  if (copy) {
    const size_t wbytes = size_t(in_channels * group_out_channels * kernel_h * kernel_w) * dtype_size(dtype);
    owned_weight_.assign(static_cast<const unsigned char*>(weight), static_cast<const unsigned char*>(weight) + wbytes);
    weight_ = owned_weight_.data();
    if (bias) {
      const size_t bbytes = size_t(bias_size) * dtype_size(dtype);
      owned_bias_.assign(static_cast<const unsigned char*>(bias), static_cast<const unsigned char*>(bias) + bbytes);
      bias_ = owned_bias_.data();
    }
  }
}

ConvTransposeChoice ConvTranspose2dPlan::choose(const ConvTranspose2dProblem& p) const {
  const KernelTable& table = active_table();
  const int threads = transpose_threads(p, get_num_threads());
  const ConvTransposeAlgorithm* chosen = &reference_for(p.dtype);
  for (int i = 0; i < table.conv_transpose_count; ++i) {
    const ConvTransposeAlgorithm& a = table.conv_transpose[i];
    if (a.dtype == p.dtype && a.accepts(p)) {
      chosen = &a;
      break;
    }
  }
  return {chosen, table.isa_name, threads, chosen->workspace_bytes(p, threads), chosen->packed_bytes(p)};
}

const void* ConvTranspose2dPlan::packed_for(const ConvTransposeAlgorithm& a, const ConvTranspose2dProblem& p) {
  if (a.packed_bytes(p) == 0) return nullptr;
  std::lock_guard<std::mutex> lock(pack_mutex_);
  auto key = std::make_pair(&a, p.groups);
  auto it = packed_.find(key);
  if (it == packed_.end()) {
    std::vector<unsigned char> buf(a.packed_bytes(p));
    a.pack(p, weight_, buf.data());
    it = packed_.emplace(key, std::move(buf)).first;
  }
  return it->second.data();
}

void ConvTranspose2dPlan::run(const ConvTranspose2dProblem& p, const void* x, void* y,
                              const ConvTransposeAlgorithm* forced) {
  if (p.dtype != dtype_ || p.in_channels != in_channels_ || p.out_channels != group_out_ * p.groups ||
      p.kernel_h != kernel_h_ || p.kernel_w != kernel_w_ || (bias_ && bias_size_ != p.out_channels))
    throw std::invalid_argument("conv_transpose2d problem does not match the plan's weights");
  if (p.batch == 0 || p.out_channels == 0 || p.out_h < 1 || p.out_w < 1) return;
  ConvTransposeChoice choice = choose(p);
  if (forced) {
    if (forced->dtype != p.dtype || !forced->accepts(p))
      throw std::invalid_argument(std::string("algorithm ") + forced->name + " does not accept this problem");
    choice.algorithm = forced;
  }
  ConvTransposeCall call;
  call.p = p;
  call.x = x;
  call.weight = weight_;
  call.packed = packed_for(*choice.algorithm, p);
  call.bias = bias_;
  call.y = y;
  call.x_stride = contiguous_strides(p.layout, p.in_channels, p.in_h, p.in_w);
  call.y_stride = contiguous_strides(p.layout, p.out_channels, p.out_h, p.out_w);
  call.num_threads = choice.threads;
  choice.algorithm->run(call);
}

}  // namespace cppconv
