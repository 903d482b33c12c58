// The one binding file: exposes the C++ core to python/cppconv.  The Python layer has already
// normalised and validated the arguments; the checks here only guard the native boundary
// (dtype, contiguity, shapes), so a bad call raises instead of reading out of bounds.
// Arrays are never converted here: a pybind11 forcecast would be a hidden copy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#if defined(__GLIBCXX__)
#include <cxxabi.h>
#endif

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "bf16.h"
#include "conv.h"
#include "conv_transpose.h"
#include "dispatch.h"
#include "elementwise.h"
#include "memory.h"
#include "pool.h"
#include "qconv.h"

namespace py = pybind11;
using namespace cppconv;

namespace {
void bind_pool_and_transpose(py::module_& m);  // the pooling / transposed-conv section below
void bind_qconv(py::module_& m);               // the quantized convolution section below
}  // namespace

namespace {

// The GIL released around native work (every call that releases it uses this, not
// py::gil_scoped_release).  CPython before 3.14 ends a thread that asks for the GIL back after
// finalization has begun (a daemon thread still in a call at exit) with pthread_exit, whose
// forced unwinding reached py::gil_scoped_release's noexcept destructor: std::terminate, and
// the process aborted at exit.  Here the unwinding is caught where it starts and the thread
// waits for the process to end, as CPython 3.14 does itself; the GIL is already dropped then.
// (Caught and never left: a forced unwind must not be swallowed, the handler never ends.)
class GilReleased {
 public:
  GilReleased() : state_(PyEval_SaveThread()) {}
  GilReleased(const GilReleased&) = delete;
  GilReleased& operator=(const GilReleased&) = delete;
  ~GilReleased() {
#if defined(__GLIBCXX__)
    try {
      PyEval_RestoreThread(state_);
    } catch (abi::__forced_unwind&) {
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
#else  // (pthread_exit unwinds no C++ frames there: nothing to catch)
    PyEval_RestoreThread(state_);
#endif
  }

 private:
  PyThreadState* state_;
};

// The bytes [first, last) an array's elements span (any strides).
std::pair<const char*, const char*> array_span(const py::array& a) {
  const char* first = static_cast<const char*>(a.data());
  const char* last = first + a.itemsize();
  if (a.size() == 0) return {first, first};
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    const py::ssize_t reach = (a.shape(d) - 1) * a.strides(d);
    if (reach < 0) first += reach;
    else last += reach;
  }
  return {first, last};
}

// Whether two arrays' spans share a byte (a conservative test: interleaved arrays count).
bool spans_overlap(const py::array& a, const py::array& b) {
  const auto sa = array_span(a), sb = array_span(b);
  return sa.first < sb.second && sb.first < sa.second;
}

// A network's native steps with their operands bound, run again in one call without the GIL:
// cppconv.Network records one per input shape (the bindings below that take `program` add
// their work to it as they run) and replays it instead of its Python loop over the steps.
// The arrays the steps read and write stay alive with it.
class NetProgram {
 public:
  // The arrays the program reads the network's inputs from, given before the recording.  A
  // recorded call that reads input k whole and in its own layout (the input's layout change)
  // takes it through input_slot(k) instead, which run() points at the caller's array: no copy
  // into the program's array, unless some other recorded call reads that one.
  void set_inputs(const std::vector<py::array>& inputs) {
    if (!steps_.empty()) throw py::value_error("NetProgram.set_inputs: the steps are recorded already");
    inputs_ = inputs;
    current_.clear();
    for (const py::array& a : inputs_) current_.push_back(a.data());
    copied_.assign(inputs_.size(), false);
  }
  // The input that `a` is, whole and C-contiguous (-1 if none).
  int whole_input(const py::array& a) const {
    if (!(a.flags() & py::array::c_style)) return -1;
    for (size_t k = 0; k < inputs_.size(); ++k)
      if (a.data() == inputs_[k].data() && a.nbytes() == inputs_[k].nbytes() && a.dtype().equal(inputs_[k].dtype()))
        return int(k);
    return -1;
  }
  const void* const* input_slot(int k) const { return &current_[size_t(k)]; }

  // Keeps `step`, and references to its operands.  An operand that shares memory with an input
  // other than `through_slot` (the one the step reads by input_slot) makes run() copy it in.
  void add(std::function<void()> step, std::initializer_list<py::handle> operands, int through_slot = -1) {
    steps_.push_back(std::move(step));
    for (const py::handle& h : operands) {
      if (!h || h.is_none()) continue;
      owners_.push_back(py::reinterpret_borrow<py::object>(h));
      ++held_[h.ptr()];
      if (!py::isinstance<py::array>(h)) continue;
      const auto operand = py::reinterpret_borrow<py::array>(h);
      for (size_t k = 0; k < inputs_.size(); ++k)
        if (int(k) != through_slot && spans_overlap(operand, inputs_[k])) copied_[k] = true;
    }
  }
  size_t size() const { return steps_.size(); }
  // How many references to `obj` the program holds: the recording run still hands an array on
  // to a later step when nothing but the program holds it (its reference count tells).
  int holds(const py::handle& obj) const {
    const auto it = held_.find(obj.ptr());
    return it == held_.end() ? 0 : it->second;
  }
  // Runs the steps on `given` (C-contiguous arrays of the inputs' shapes and dtypes), or on
  // the program's own input arrays as they are when none are given.
  void run(const std::vector<py::array>& given) { run_steps(given, nullptr); }
  // run(), returning each step's CPU time on the calling thread in seconds (wall time where the
  // platform has no thread clock), for profiles at one thread: tools/profile_network.py.
  std::vector<double> run_timed(const std::vector<py::array>& given) {
    std::vector<double> times;
    run_steps(given, &times);
    return times;
  }

 private:
  void run_steps(const std::vector<py::array>& given, std::vector<double>* times) {
    if (!given.empty() && given.size() != inputs_.size()) throw py::value_error("NetProgram.run: one array per input");
    for (size_t k = 0; k < given.size(); ++k) {
      const py::array& a = given[k];
      const py::array& own = inputs_[k];
      bool same = a.dtype().equal(own.dtype()) && a.ndim() == own.ndim() && (a.flags() & py::array::c_style);
      for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == own.shape(d);
      if (!same) throw py::value_error("NetProgram.run: an input differs from the recorded one in shape or dtype");
    }
    std::vector<size_t> bytes;  // (read with the GIL: an array's sizes go through its dtype object)
    for (const py::array& a : given) bytes.push_back(size_t(a.nbytes()));
    // Back to the program's own arrays however the run ends: no caller's array is kept.
    struct OwnInputs {
      NetProgram& program;
      ~OwnInputs() {
        for (size_t k = 0; k < program.inputs_.size(); ++k) program.current_[k] = program.inputs_[k].data();
      }
    } restore{*this};
    GilReleased released;
    for (size_t k = 0; k < given.size(); ++k) {
      const void* own = inputs_[k].data();
      if (copied_[k] && given[k].data() != own) std::memcpy(const_cast<void*>(own), given[k].data(), bytes[k]);
      current_[k] = copied_[k] ? own : given[k].data();
    }
    if (!times) {
      for (const std::function<void()>& step : steps_) step();
      return;
    }
    const auto now = [] {
#ifdef CLOCK_THREAD_CPUTIME_ID
      timespec t{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
      return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
#else  // (Windows: wall time)
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
#endif
    };
    for (const std::function<void()>& step : steps_) {
      const double start = now();
      step();
      times->push_back(now() - start);
    }
  }

  std::vector<std::function<void()>> steps_;
  std::vector<py::object> owners_;
  std::unordered_map<const PyObject*, int> held_;
  std::vector<py::array> inputs_;
  std::vector<const void*> current_;  // where input k is read during a run
  std::vector<bool> copied_;          // whether a run copies input k into the program's array
};

// Runs `work` without the GIL, then keeps it in `program` (when given) with the arrays it uses
// (through_slot: the input it reads through the program's input slot, see NetProgram::add).
template <class Work>
void run_recorded(NetProgram* program, std::initializer_list<py::handle> operands, Work work, int through_slot = -1) {
  {
    GilReleased released;
    work();
  }
  if (program) program->add(std::move(work), operands, through_slot);
}

// The bfloat16 passes' arrays: C-contiguous, `src` of element type S, `dst` of D, writable,
// with as many elements as src.  bfloat16 arrays arrive as their uint16 bits (a view).
template <class S, class D>
void check_conversion(const py::array& src, const py::array& dst) {
  if (!src.dtype().equal(py::dtype::of<S>()) || !(src.flags() & py::array::c_style))
    throw py::type_error(std::string("src: must be a C-contiguous ") + py::str(py::dtype::of<S>()).cast<std::string>() +
                         " array");
  if (!dst.dtype().equal(py::dtype::of<D>()) || !(dst.flags() & py::array::c_style) || !dst.writeable())
    throw py::type_error(std::string("dst: must be a writable C-contiguous ") +
                         py::str(py::dtype::of<D>()).cast<std::string>() + " array");
  if (dst.size() != src.size()) throw py::value_error("dst: must have as many elements as src");
}

template <class S, class D>
void bind_conversion(py::module_& m, const char* name, void (*pass)(const S*, D*, int64_t, int), const char* doc) {
  m.def(
      name,
      [pass](const py::array& src, const py::array& dst, int num_threads) {
        check_conversion<S, D>(src, dst);
        const S* from = static_cast<const S*>(src.data());
        D* to = static_cast<D*>(const_cast<void*>(dst.data()));
        const int64_t n = int64_t(src.size());
        GilReleased released;
        pass(from, to, n, num_threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("num_threads") = 0, doc);
}

// Whether two byte ranges share any byte.
bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto* pa = static_cast<const unsigned char*>(a);
  const auto* pb = static_cast<const unsigned char*>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

// The per-axis passes' arrays: C-contiguous, `count` elements laid out [outer][length][inner];
// scale float32 (and zero_point int32), `length` of each.
void check_axis_arrays(const py::array& x, const py::array& y, const py::array& scale, AxisLayout axis) {
  if (!(x.flags() & py::array::c_style)) throw py::type_error("x: must be C-contiguous");
  if (!(y.flags() & py::array::c_style) || !y.writeable())
    throw py::type_error("y: must be a writable C-contiguous array");
  if (axis.outer < 0 || axis.length < 1 || axis.inner < 0 || x.size() != axis.outer * axis.length * axis.inner ||
      y.size() != x.size())
    throw py::value_error("x and y must have outer * length * inner elements");
  if (!scale.dtype().equal(py::dtype::of<float>()) || !(scale.flags() & py::array::c_style) ||
      scale.size() != axis.length)
    throw py::type_error("scale: must be a C-contiguous float32 array of `length` values");
}

void check_quantization(const py::array& x, const py::array& y, const py::array& scale, const py::array& zero_point,
                        AxisLayout axis) {
  check_axis_arrays(x, y, scale, axis);
  if (!zero_point.dtype().equal(py::dtype::of<int32_t>()) || !(zero_point.flags() & py::array::c_style) ||
      zero_point.size() != axis.length)
    throw py::type_error("zero_point: must be a C-contiguous int32 array of `length` values");
}

template <class T, class Q>
bool try_quantize(const py::array& x, const py::array& scale, const py::array& zero_point, const py::array& y,
                  AxisLayout axis, int32_t lo, int32_t hi, bool refuse_nan, int num_threads, NetProgram* program) {
  if (!x.dtype().equal(py::dtype::of<T>()) || !y.dtype().equal(py::dtype::of<Q>())) return false;
  const T* from = static_cast<const T*>(x.data());
  Q* to = static_cast<Q*>(const_cast<void*>(y.data()));
  const float* s = static_cast<const float*>(scale.data());
  const int32_t* z = static_cast<const int32_t*>(zero_point.data());
  const int64_t n = int64_t(x.size());
  run_recorded(program, {x, scale, zero_point, y}, [=] {
    // (checked in the step itself: a recorded program's run meets the NaN its input brings)
    if (refuse_nan && quantize_nan_count<T>(from, n, num_threads) > 0)
      throw std::invalid_argument("x: NaN cannot be quantized");
    quantize_linear<T, Q>(from, s, z, axis, lo, hi, to, num_threads);
  });
  return true;
}

template <class Q>
bool try_dequantize(const py::array& x, const py::array& scale, const py::array& zero_point, const py::array& y,
                    AxisLayout axis, int num_threads, NetProgram* program) {
  if (!x.dtype().equal(py::dtype::of<Q>())) return false;
  const Q* from = static_cast<const Q*>(x.data());
  float* to = static_cast<float*>(const_cast<void*>(y.data()));
  const float* s = static_cast<const float*>(scale.data());
  const int32_t* z = static_cast<const int32_t*>(zero_point.data());
  run_recorded(program, {x, scale, zero_point, y}, [=] { dequantize_linear<Q>(from, s, z, axis, to, num_threads); });
  return true;
}

template <class Q, class Y>
bool try_quantized_add(const py::array& a, float a_scale, int32_t a_zero, const py::array& b, float b_scale,
                       int32_t b_zero, const py::array& y, float y_scale, int32_t y_zero, bool relu, int num_threads,
                       NetProgram* program) {
  if (!a.dtype().equal(py::dtype::of<Q>()) || !b.dtype().equal(py::dtype::of<Q>()) ||
      !y.dtype().equal(py::dtype::of<Y>()))
    return false;
  const Q* pa = static_cast<const Q*>(a.data());
  const Q* pb = static_cast<const Q*>(b.data());
  Y* to = static_cast<Y*>(const_cast<void*>(y.data()));
  const int64_t n = int64_t(a.size());
  constexpr int32_t lo = std::numeric_limits<Y>::min(), hi = std::numeric_limits<Y>::max();
  run_recorded(program, {a, b, y}, [=] {
    quantized_add<Q, Y>(pa, a_scale, a_zero, pb, b_scale, b_zero, n, relu, y_scale, y_zero, lo, hi, to, num_threads);
  });
  return true;
}

void bind_quantization(py::module_& m) {
  m.def(
      "quantized_add",
      [](const py::array& a, float a_scale, int32_t a_zero, const py::array& b, float b_scale, int32_t b_zero,
         const py::array& y, float y_scale, int32_t y_zero, bool relu, int num_threads, NetProgram* program) {
        for (const py::array* v : {&a, &b, &y})
          if (!(v->flags() & py::array::c_style))
            throw py::type_error("quantized_add: a, b and y must be C-contiguous");
        if (!y.writeable()) throw py::type_error("quantized_add: y must be writable");
        if (a.size() != b.size() || y.size() != a.size())
          throw py::value_error("quantized_add: a, b and y must have one size");
        if (!(std::isfinite(a_scale) && std::isfinite(b_scale) && std::isfinite(y_scale) && y_scale > 0))
          throw py::value_error("quantized_add: scales must be finite and y_scale positive");
        if (!(try_quantized_add<uint8_t, uint8_t>(a, a_scale, a_zero, b, b_scale, b_zero, y, y_scale, y_zero, relu,
                                                  num_threads, program) ||
              try_quantized_add<uint8_t, int8_t>(a, a_scale, a_zero, b, b_scale, b_zero, y, y_scale, y_zero, relu,
                                                 num_threads, program) ||
              try_quantized_add<int8_t, uint8_t>(a, a_scale, a_zero, b, b_scale, b_zero, y, y_scale, y_zero, relu,
                                                 num_threads, program) ||
              try_quantized_add<int8_t, int8_t>(a, a_scale, a_zero, b, b_scale, b_zero, y, y_scale, y_zero, relu,
                                                num_threads, program)))
          throw py::type_error("quantized_add: a and b both uint8 or both int8, y uint8 or int8");
      },
      py::arg("a"), py::arg("a_scale"), py::arg("a_zero"), py::arg("b"), py::arg("b_scale"), py::arg("b_zero"),
      py::arg("y"), py::arg("y_scale"), py::arg("y_zero"), py::arg("relu"), py::arg("num_threads") = 0,
      py::arg("program") = nullptr,
      "y = QuantizeLinear(DequantizeLinear(a) + DequantizeLinear(b)) (ReLU on the sum where relu), elementwise over "
      "same-sized arrays, each step in float32 as its ONNX operator; y may be a or b.");
  m.def(
      "quantize_linear",
      [](const py::array& x, const py::array& scale, const py::array& zero_point, const py::array& y, int64_t outer,
         int64_t length, int64_t inner, int32_t lo, int32_t hi, bool refuse_nan, int num_threads, NetProgram* program) {
        const AxisLayout axis{outer, length, inner};
        check_quantization(x, y, scale, zero_point, axis);
        if (lo > hi) throw py::value_error("lo must not exceed hi");
        if (!(try_quantize<float, uint8_t>(x, scale, zero_point, y, axis, lo, hi, refuse_nan, num_threads, program) ||
              try_quantize<float, int8_t>(x, scale, zero_point, y, axis, lo, hi, refuse_nan, num_threads, program) ||
              try_quantize<double, uint8_t>(x, scale, zero_point, y, axis, lo, hi, refuse_nan, num_threads, program) ||
              try_quantize<double, int8_t>(x, scale, zero_point, y, axis, lo, hi, refuse_nan, num_threads, program)))
          throw py::type_error("quantize_linear: x float32 or float64, y uint8 or int8");
      },
      py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("y"), py::arg("outer"), py::arg("length"),
      py::arg("inner"), py::arg("lo"), py::arg("hi"), py::arg("refuse_nan") = false, py::arg("num_threads") = 0,
      py::arg("program") = nullptr,
      "y = saturate(round_half_to_even(x / scale) + zero_point) into [lo, hi], x laid out [outer][length][inner] "
      "(scale, zero point per index of the middle axis); x must hold no NaN: refuse_nan checks (ValueError), else "
      "the caller has (quantize_nan_count).");
  m.def(
      "quantize_nan_count",
      [](const py::array& x, int num_threads) -> int64_t {
        if (!(x.flags() & py::array::c_style)) throw py::type_error("x: must be C-contiguous");
        const int64_t n = int64_t(x.size());
        if (x.dtype().equal(py::dtype::of<float>())) {
          const float* p = static_cast<const float*>(x.data());
          GilReleased released;
          return quantize_nan_count<float>(p, n, num_threads);
        }
        if (x.dtype().equal(py::dtype::of<double>())) {
          const double* p = static_cast<const double*>(x.data());
          GilReleased released;
          return quantize_nan_count<double>(p, n, num_threads);
        }
        throw py::type_error("quantize_nan_count: x float32 or float64");
      },
      py::arg("x"), py::arg("num_threads") = 0, "How many values of x are NaN.");
  m.def(
      "dequantize_linear",
      [](const py::array& x, const py::array& scale, const py::array& zero_point, const py::array& y, int64_t outer,
         int64_t length, int64_t inner, int num_threads, NetProgram* program) {
        const AxisLayout axis{outer, length, inner};
        check_quantization(x, y, scale, zero_point, axis);
        if (!y.dtype().equal(py::dtype::of<float>())) throw py::type_error("y: must be float32");
        if (!(try_dequantize<uint8_t>(x, scale, zero_point, y, axis, num_threads, program) ||
              try_dequantize<int8_t>(x, scale, zero_point, y, axis, num_threads, program) ||
              try_dequantize<int32_t>(x, scale, zero_point, y, axis, num_threads, program)))
          throw py::type_error("dequantize_linear: x uint8, int8 or int32");
      },
      py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("y"), py::arg("outer"), py::arg("length"),
      py::arg("inner"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "y = float32(x - zero_point) * scale, x laid out [outer][length][inner] (scale, zero point per index of the "
      "middle axis).");
  m.def(
      "add",
      [](const py::array& a, const py::array& b, const py::array& y, bool relu, int num_threads, NetProgram* program) {
        for (const py::array* v : {&a, &b, &y})
          if (!v->dtype().equal(py::dtype::of<float>()) || !(v->flags() & py::array::c_style))
            throw py::type_error("add: a, b and y must be C-contiguous float32 arrays");
        if (!y.writeable()) throw py::type_error("add: y must be writable");
        if (a.size() != b.size() || y.size() != a.size()) throw py::value_error("add: a, b and y must have one size");
        const float* pa = static_cast<const float*>(a.data());
        const float* pb = static_cast<const float*>(b.data());
        float* py_ = static_cast<float*>(const_cast<void*>(y.data()));
        const int64_t n = int64_t(a.size());
        run_recorded(program, {a, b, y}, [=] { add(pa, pb, n, relu, py_, num_threads); });
      },
      py::arg("a"), py::arg("b"), py::arg("y"), py::arg("relu"), py::arg("num_threads") = 0,
      py::arg("program") = nullptr,
      "y = a + b (then ReLU where relu), elementwise over same-sized arrays; y may be a or b.");
  m.def(
      "quantized_scale_channels",
      [](const py::array& x, float x_scale, int32_t x_zero, const py::array& gate, const py::array& y, float y_scale,
         int32_t y_zero, int num_threads, NetProgram* program) {
        for (const py::array* v : {&x, &gate, &y})
          if (!(v->flags() & py::array::c_style))
            throw py::type_error("quantized_scale_channels: x, gate and y must be C-contiguous");
        if (!gate.dtype().equal(py::dtype::of<float>())) throw py::type_error("quantized_scale_channels: gate float32");
        if (!y.writeable()) throw py::type_error("quantized_scale_channels: y must be writable");
        if (x.ndim() < 2 || y.size() != x.size())
          throw py::value_error("quantized_scale_channels: x must have an image and a channel axis, y its size");
        if (!(std::isfinite(x_scale) && std::isfinite(y_scale) && y_scale > 0))
          throw py::value_error("quantized_scale_channels: scales must be finite and y_scale positive");
        const int64_t images = x.shape(0), channels = x.shape(x.ndim() - 1);
        if (gate.size() != images * channels)
          throw py::value_error("quantized_scale_channels: gate must hold one value per image and channel of x");
        const int64_t pixels = images * channels == 0 ? 0 : int64_t(x.size()) / (images * channels);
        const float* g = static_cast<const float*>(gate.data());
        const auto typed = [&](auto q, auto out) {
          using Q = decltype(q);
          using Y = decltype(out);
          if (!x.dtype().equal(py::dtype::of<Q>()) || !y.dtype().equal(py::dtype::of<Y>())) return false;
          const Q* from = static_cast<const Q*>(x.data());
          Y* to = static_cast<Y*>(const_cast<void*>(y.data()));
          constexpr int32_t lo = std::numeric_limits<Y>::min(), hi = std::numeric_limits<Y>::max();
          run_recorded(program, {x, gate, y}, [=] {
            if (quantized_scale_channels<Q, Y>(from, x_scale, x_zero, g, images, pixels, channels, y_scale, y_zero, lo,
                                               hi, to, num_threads) > 0)
              throw std::invalid_argument("x: NaN cannot be quantized");
          });
          return true;
        };
        if (!(typed(uint8_t(), uint8_t()) || typed(uint8_t(), int8_t()) || typed(int8_t(), uint8_t()) ||
              typed(int8_t(), int8_t())))
          throw py::type_error("quantized_scale_channels: x and y uint8 or int8");
      },
      py::arg("x"), py::arg("x_scale"), py::arg("x_zero"), py::arg("gate"), py::arg("y"), py::arg("y_scale"),
      py::arg("y_zero"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "y = QuantizeLinear(DequantizeLinear(x) * gate[n, c]) for channels-last 8-bit x (one float32 gate per image "
      "and channel: a QDQ squeeze-and-excitation block's Mul), each step in float32 as its ONNX operator.");
  m.def(
      "lookup_bytes",
      [](const py::array& x, const py::array& table, const py::array& y, int num_threads, NetProgram* program) {
        for (const py::array* v : {&x, &table, &y})
          if (v->itemsize() != 1 || (v->dtype().kind() != 'u' && v->dtype().kind() != 'i') ||
              !(v->flags() & py::array::c_style))
            throw py::type_error("lookup_bytes: x, table and y must be C-contiguous uint8 or int8 arrays");
        if (!y.writeable()) throw py::type_error("lookup_bytes: y must be writable");
        if (table.size() != 256) throw py::value_error("lookup_bytes: table must hold 256 values");
        if (y.size() != x.size()) throw py::value_error("lookup_bytes: x and y must have one size");
        if (y.data() != x.data() && overlaps(x.data(), size_t(x.nbytes()), y.data(), size_t(y.nbytes())))
          throw py::value_error("lookup_bytes: y must be x or apart from it");
        if (overlaps(table.data(), 256, y.data(), size_t(y.nbytes())))
          throw py::value_error("lookup_bytes: y must be apart from table");
        const auto* from = static_cast<const uint8_t*>(x.data());
        const auto* t = static_cast<const uint8_t*>(table.data());
        auto* to = static_cast<uint8_t*>(const_cast<void*>(y.data()));
        const int64_t n = int64_t(x.size());
        run_recorded(program, {x, table, y}, [=] { lookup_bytes(from, t, n, to, num_threads); });
      },
      py::arg("x"), py::arg("table"), py::arg("y"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "y[i] = table[x[i]] over 8-bit arrays, each byte an index in 0-255 (an int8 value by its two's-complement "
      "bits); y may be x.");
  m.def(
      "channel_affine",
      [](const py::array& x, const py::array& scale, const py::array& shift, const py::array& y, int64_t outer,
         int64_t length, int64_t inner, bool relu, int num_threads, NetProgram* program) {
        const AxisLayout axis{outer, length, inner};
        if (!x.dtype().equal(py::dtype::of<float>()) || !y.dtype().equal(py::dtype::of<float>()))
          throw py::type_error("channel_affine: x and y float32");
        if (!shift.dtype().equal(py::dtype::of<float>()) || !(shift.flags() & py::array::c_style) ||
            shift.size() != length)
          throw py::type_error("shift: must be a C-contiguous float32 array of `length` values");
        check_axis_arrays(x, y, scale, axis);
        const float* from = static_cast<const float*>(x.data());
        float* to = static_cast<float*>(const_cast<void*>(y.data()));
        const float* s = static_cast<const float*>(scale.data());
        const float* t = static_cast<const float*>(shift.data());
        run_recorded(program, {x, scale, shift, y}, [=] { channel_affine(from, s, t, axis, relu, to, num_threads); });
      },
      py::arg("x"), py::arg("scale"), py::arg("shift"), py::arg("y"), py::arg("outer"), py::arg("length"),
      py::arg("inner"), py::arg("relu"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "y = x * scale + shift (then ReLU where relu), x laid out [outer][length][inner] (scale and shift per index "
      "of the middle axis); y may be x.");
  m.def(
      "scale_channels",
      [](const py::array& x, const py::array& scale, const py::array& y, int num_threads, NetProgram* program) {
        for (const py::array* v : {&x, &scale, &y})
          if (!v->dtype().equal(py::dtype::of<float>()) || !(v->flags() & py::array::c_style))
            throw py::type_error("scale_channels: x, scale and y must be C-contiguous float32 arrays");
        if (!y.writeable()) throw py::type_error("scale_channels: y must be writable");
        if (x.ndim() < 2 || y.size() != x.size())
          throw py::value_error("scale_channels: x must have an image and a channel axis, y its size");
        const int64_t images = x.shape(0), channels = x.shape(x.ndim() - 1);
        if (scale.size() != images * channels)
          throw py::value_error("scale_channels: scale must hold one value per image and channel of x");
        const int64_t pixels = images * channels == 0 ? 0 : int64_t(x.size()) / (images * channels);
        const float* from = static_cast<const float*>(x.data());
        const float* s = static_cast<const float*>(scale.data());
        float* to = static_cast<float*>(const_cast<void*>(y.data()));
        run_recorded(program, {x, scale, y},
                     [=] { scale_channels(from, s, images, pixels, channels, to, num_threads); });
      },
      py::arg("x"), py::arg("scale"), py::arg("y"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "y[n, ..., c] = x[n, ..., c] * scale[n, c] for channels-last x (one gate per image and channel, as a "
      "squeeze-and-excitation block's Mul); y may be x.");
  m.def(
      "transpose_matrices",
      [](const py::array& x, const py::array& y, int num_threads, NetProgram* program) {
        const bool single = x.dtype().equal(py::dtype::of<float>());
        if (!(single || x.dtype().equal(py::dtype::of<double>())) || !y.dtype().equal(x.dtype()) ||
            !(x.flags() & py::array::c_style) || !(y.flags() & py::array::c_style) || x.ndim() != 3 || y.ndim() != 3)
          throw py::type_error("transpose_matrices: x and y must be 3-D C-contiguous arrays, both float32 or float64");
        if (!y.writeable()) throw py::type_error("transpose_matrices: y must be writable");
        const int64_t batch = x.shape(0), rows = x.shape(1), cols = x.shape(2);
        if (y.shape(0) != batch || y.shape(1) != cols || y.shape(2) != rows)
          throw py::value_error(
              "transpose_matrices: y must have shape (batch, cols, rows) for x of (batch, rows, cols)");
        if (overlaps(x.data(), size_t(x.nbytes()), y.data(), size_t(y.nbytes())))
          throw py::value_error("transpose_matrices: y must not overlap x");
        const double work = kFlopsPerValueMoved * 2.0 * double(x.size());
        const void* x_data = x.data();
        void* to = const_cast<void*>(y.data());
        // (a network's input, read whole: from the caller's array when the program runs)
        const int input = program ? program->whole_input(x) : -1;
        const void* const* slot = input >= 0 ? program->input_slot(input) : nullptr;
        run_recorded(
            program, {x, y},
            [=] {
              const void* from = slot ? *slot : x_data;
              const int threads = threads_for_work(work, resolve_threads(num_threads));
              if (single)
                transpose_matrices(static_cast<const float*>(from), batch, rows, cols, static_cast<float*>(to),
                                   threads);
              else
                transpose_matrices(static_cast<const double*>(from), batch, rows, cols, static_cast<double*>(to),
                                   threads);
            },
            input);
      },
      py::arg("x"), py::arg("y"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "y[n, j, i] = x[n, i, j] for a batch of matrices (layout changes between channels-first and channels-last).");
  m.def(
      "copy_strided",
      [](const py::array& x, const py::array& y, int num_threads, NetProgram* program) {
        const int ndim = int(x.ndim());
        if (!y.dtype().equal(x.dtype())) throw py::type_error("copy_strided: x and y must have one dtype");
        if (x.dtype().attr("hasobject").cast<bool>())
          throw py::type_error("copy_strided: arrays of Python objects are not copied here");
        if (!y.writeable()) throw py::type_error("copy_strided: y must be writable");
        if (int(y.ndim()) != ndim || ndim > kCopyMaxAxes)
          throw py::value_error("copy_strided: x and y must have one shape, of at most " +
                                std::to_string(kCopyMaxAxes) + " axes");
        const size_t axes = static_cast<size_t>(ndim);
        std::vector<int64_t> shape(axes), x_strides(axes), y_strides(axes);
        for (int a = 0; a < ndim; ++a) {
          if (x.shape(a) != y.shape(a)) throw py::value_error("copy_strided: x and y must have one shape");
          if (x.strides(a) < 0 || y.strides(a) < 0) throw py::value_error("copy_strided: negative strides");
          shape[size_t(a)] = x.shape(a);
          x_strides[size_t(a)] = x.strides(a);
          y_strides[size_t(a)] = y.strides(a);
        }
        if (x.size() == 0) return;
        if (spans_overlap(x, y)) throw py::value_error("copy_strided: y must not overlap x");
        const char* from = static_cast<const char*>(x.data());
        char* to = static_cast<char*>(const_cast<void*>(y.data()));
        const int64_t item = int64_t(x.itemsize());
        run_recorded(program, {x, y}, [=] {
          copy_strided(from, x_strides.data(), to, y_strides.data(), shape.data(), ndim, item, num_threads);
        });
      },
      py::arg("x"), py::arg("y"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "y[...] = x for arrays of one shape and dtype with any non-negative strides (a Concat's input into its "
      "channels of the result, a channel shuffle's interleave).");
  m.def(
      "resize_2d",
      [](const py::array& x, const py::array& y, const py::array& low_h, const py::array& high_h,
         const py::object& frac_h, const py::array& low_w, const py::array& high_w, const py::object& frac_w,
         int num_threads, NetProgram* program) {
        for (const py::array* v : {&x, &y})
          if (!v->dtype().equal(py::dtype::of<float>()) || !(v->flags() & py::array::c_style) || v->ndim() != 4)
            throw py::type_error("resize_2d: x and y must be 4-D C-contiguous float32 arrays");
        if (!y.writeable()) throw py::type_error("resize_2d: y must be writable");
        if (x.shape(0) != y.shape(0) || x.shape(3) != y.shape(3))
          throw py::value_error("resize_2d: x and y must agree on the outer and inner axes");
        if (overlaps(x.data(), size_t(x.nbytes()), y.data(), size_t(y.nbytes())))
          throw py::value_error("resize_2d: y must not overlap x");
        // Each axis's taps, checked to index the input: the pass reads where they say.
        auto taps = [](const py::array& low, const py::array& high, const py::object& frac, py::ssize_t in,
                       py::ssize_t out, const char* axis) {
          for (const py::array* v : {&low, &high})
            if (!v->dtype().equal(py::dtype::of<int64_t>()) || !(v->flags() & py::array::c_style) || v->size() != out)
              throw py::type_error(std::string("resize_2d: the ") + axis + " indices must be C-contiguous int64, " +
                                   "one per output index");
          const auto* lo = static_cast<const int64_t*>(low.data());
          const auto* hi = static_cast<const int64_t*>(high.data());
          for (py::ssize_t i = 0; i < out; ++i)
            if (lo[i] < 0 || lo[i] >= in || hi[i] < 0 || hi[i] >= in)
              throw py::value_error(std::string("resize_2d: a ") + axis + " index is outside the input");
          const float* f = nullptr;
          if (!frac.is_none()) {
            const auto a = py::reinterpret_borrow<py::array>(frac);
            if (!a.dtype().equal(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) || a.size() != out)
              throw py::type_error(std::string("resize_2d: the ") + axis + " weights must be C-contiguous float32, " +
                                   "one per output index");
            f = static_cast<const float*>(a.data());
          }
          return ResizeTaps{lo, hi, f};
        };
        const ResizeTaps rows = taps(low_h, high_h, frac_h, x.shape(1), y.shape(1), "row");
        const ResizeTaps cols = taps(low_w, high_w, frac_w, x.shape(2), y.shape(2), "column");
        const float* from = static_cast<const float*>(x.data());
        float* to = static_cast<float*>(const_cast<void*>(y.data()));
        const int64_t outer = x.shape(0), in_h = x.shape(1), in_w = x.shape(2), inner = x.shape(3);
        const int64_t out_h = y.shape(1), out_w = y.shape(2);
        run_recorded(program, {x, y, low_h, high_h, frac_h, low_w, high_w, frac_w},
                     [=] { resize_2d(from, outer, in_h, in_w, inner, rows, out_h, cols, out_w, to, num_threads); });
      },
      py::arg("x"), py::arg("y"), py::arg("low_h"), py::arg("high_h"), py::arg("frac_h"), py::arg("low_w"),
      py::arg("high_w"), py::arg("frac_w"), py::arg("num_threads") = 0, py::arg("program") = nullptr,
      "ONNX Resize of axes 1 and 2 of x (outer, h, w, inner) into y (outer, out_h, out_w, inner): output index i of "
      "an axis is x[low[i]] + (x[high[i]] - x[low[i]]) * frac[i], along h then w; frac None: x[low[i]] alone. "
      "y must not overlap x.");
}
}  // namespace

namespace {

DType dtype_of(const py::array& a, const char* name) {
  if (a.dtype().equal(py::dtype::of<float>())) return DType::Float32;
  if (a.dtype().equal(py::dtype::of<double>())) return DType::Float64;
  throw py::type_error(std::string(name) + ": native kernels take float32 or float64 in native byte order, got " +
                       py::str(a.dtype()).cast<std::string>());
}

void require(const py::array& a, const char* name, DType dtype, py::ssize_t ndim, bool writable,
             bool check_dtype = true) {
  if (check_dtype && dtype_of(a, name) != dtype)
    throw py::type_error(std::string(name) + ": dtype differs from the input's");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": must be writable");
}

// The enums' names by code (cpp/conv_problem.h), as the Python layer spells them: exported as
// _native.PRECISIONS, PADDING_MODES, ACTIVATIONS and LAYOUTS, so Python copies no table.
constexpr const char* kPrecisionNames[] = {"highest", "high"};
constexpr const char* kPadModeNames[] = {"zeros", "reflect", "replicate", "circular", "symmetric"};
constexpr const char* kActivationNames[] = {"",     "relu", "relu6",       "leaky_relu", "sigmoid",
                                            "tanh", "silu", "hardsigmoid", "hardswish"};  // "": None
constexpr const char* kLayoutNames[][2] = {{"NCW", "NWC"}, {"NCHW", "NHWC"}, {"NCDHW", "NDHWC"}};  // by rank

// The enum value of a code from the Python layer; `names` bounds it.
template <class Enum, size_t N>
Enum code_of(int code, const char* const (&names)[N], const char* what) {
  if (code < 0 || size_t(code) >= N) throw py::value_error(std::string(what) + " code out of range");
  return Enum(code);
}

Precision precision_from(int code) { return code_of<Precision>(code, kPrecisionNames, "precision"); }

DType dtype_of_plan(const ConvPlan& plan) { return plan.dtype(); }
DType dtype_of_plan(const QConvPlan&) { return DType::Float32; }  // unused by quantized problems

// A convolution's hyper-parameters, normalised by the Python layer (cppconv._conv): one object
// per call instead of a dozen positional integers.  Per spatial axis in (d, h, w) order; a
// rank-r call sets the last r axes, the others stay 1 (padding 0).
struct ConvParams {
  int rank = 2;
  std::array<int64_t, 3> stride{1, 1, 1}, dilation{1, 1, 1};
  std::array<int64_t, 6> padding{};  // (before, after) per axis
  int64_t groups = 1;
  int padding_mode = 0, layout = 0, activation = 0, precision = -1;  // precision -1: the process setting
  double negative_slope = kDefaultNegativeSlope;  // leaky_relu's
};

// An activation's parameter from the Python layer (cppconv._args.activation_spec checks it first).
double checked_slope(double negative_slope) {
  if (!std::isfinite(negative_slope)) throw py::value_error("negative_slope must be finite");
  return negative_slope;
}

ConvParams conv_params(int rank, const std::vector<int64_t>& stride, const std::vector<int64_t>& dilation,
                       const std::vector<int64_t>& padding, int64_t groups, int padding_mode, int layout,
                       int activation, int precision, double negative_slope) {
  if (rank < 1 || rank > 3) throw py::value_error("rank must be 1, 2 or 3");
  if (stride.size() != size_t(rank) || dilation.size() != size_t(rank) || padding.size() != size_t(2 * rank))
    throw py::value_error("stride and dilation need rank values, padding 2 * rank");
  ConvParams a;
  a.rank = rank;
  for (int i = 0; i < rank; ++i) {
    const int axis = 3 - rank + i;
    a.stride[size_t(axis)] = stride[size_t(i)];
    a.dilation[size_t(axis)] = dilation[size_t(i)];
    a.padding[size_t(2 * axis)] = padding[size_t(2 * i)];
    a.padding[size_t(2 * axis + 1)] = padding[size_t(2 * i + 1)];
  }
  a.groups = groups;
  a.padding_mode = padding_mode;
  a.layout = layout;
  a.activation = activation;
  a.precision = precision;
  a.negative_slope = checked_slope(negative_slope);
  return a;
}

// The problem of an input of shape x (rank + 2 sizes, in the params' layout) with the plan's
// weights; checks `out` against the result's shape when given.
// (The weights' sizes as a plan of either kind holds them: K, C/groups and the (d, h, w) kernel.)
template <class Plan>
ConvProblem make_problem(const Plan& plan, const int64_t* x, size_t x_dims, const std::vector<int64_t>* out,
                         const ConvParams& a) {
  ConvProblem p;
  const int r = a.rank;
  if (x_dims != size_t(r + 2)) throw py::value_error("x: expected " + std::to_string(r + 2) + " dimensions");
  if (r < 3 && plan.kernel_d() != 1) throw py::value_error("weight: a 3-D kernel for a lower-rank call");
  if (r < 2 && plan.kernel_h() != 1) throw py::value_error("weight: a 2-D kernel for a 1-D call");
  p.rank = r;
  p.dtype = dtype_of_plan(plan);
  p.precision = a.precision == -1 ? get_float32_precision() : precision_from(a.precision);
  p.layout = code_of<Layout>(a.layout, kLayoutNames[0], "layout");
  p.pad_mode = code_of<PadMode>(a.padding_mode, kPadModeNames, "padding_mode");
  p.activation = code_of<Activation>(a.activation, kActivationNames, "activation");
  p.negative_slope = a.negative_slope;
  const bool first = p.layout == Layout::NCHW;
  p.batch = x[0];
  p.in_channels = x[first ? 1 : r + 1];
  std::array<int64_t, 3> in{1, 1, 1}, out_size{};
  for (int i = 0; i < r; ++i) in[size_t(3 - r + i)] = x[(first ? 2 : 1) + i];
  const std::array<int64_t, 3> kernel{plan.kernel_d(), plan.kernel_h(), plan.kernel_w()};
  const int64_t groups = a.groups;
  if (groups < 1 || p.in_channels != plan.group_in_channels() * groups || plan.out_channels() % groups != 0)
    throw py::value_error("x channels do not match weight and groups");
  for (size_t i = 0; i < 3; ++i) {
    const int64_t s = a.stride[i], d = a.dilation[i], before = a.padding[2 * i], after = a.padding[2 * i + 1];
    if (s < 1 || d < 1 || before < 0 || after < 0 || kernel[i] < 1)
      throw py::value_error("stride, dilation and kernel must be >= 1 and padding >= 0");
    int64_t span;  // refused when it would wrap
    if (std::max({in[i], before, after}) >= kMaxIndexExtent || mul_overflows(d, kernel[i] - 1, &span))
      throw py::value_error("sizes past 2^61 do not fit cppconv's 64-bit index arithmetic");
    if (in[i] < 1) throw py::value_error("x: empty spatial dimensions");
    if (in[i] + before + after - span - 1 < 0) throw py::value_error("kernel larger than the padded input");
    out_size[i] = conv_output_size(in[i], kernel[i], s, d, before, after);
    if ((p.pad_mode == PadMode::Reflect && std::max(before, after) >= in[i]) ||
        (p.pad_mode == PadMode::Circular && std::max(before, after) > in[i]))
      throw py::value_error("padding too large for padding_mode");
  }
  p.out_channels = plan.out_channels();
  p.groups = groups;
  p.in_d = in[0];
  p.in_h = in[1];
  p.in_w = in[2];
  p.kernel_d = kernel[0];
  p.kernel_h = kernel[1];
  p.kernel_w = kernel[2];
  p.out_d = out_size[0];
  p.out_h = out_size[1];
  p.out_w = out_size[2];
  p.stride_d = a.stride[0];
  p.stride_h = a.stride[1];
  p.stride_w = a.stride[2];
  p.dilation_d = a.dilation[0];
  p.dilation_h = a.dilation[1];
  p.dilation_w = a.dilation[2];
  p.pad_front = a.padding[0];
  p.pad_back = a.padding[1];
  p.pad_top = a.padding[2];
  p.pad_bottom = a.padding[3];
  p.pad_left = a.padding[4];
  p.pad_right = a.padding[5];
  if (out) {
    std::vector<int64_t> expect{p.batch};
    if (first) expect.push_back(p.out_channels);
    for (int i = 0; i < r; ++i) expect.push_back(out_size[size_t(3 - r + i)]);
    if (!first) expect.push_back(p.out_channels);
    if (*out != expect) throw py::value_error("out: shape does not match the convolution's result");
  }
  return p;
}

std::vector<int64_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

// A caller-named algorithm of one family (nullptr for ""), or ValueError listing the family's.
template <class Algorithm>
const Algorithm* named_in(const std::string& name, const Algorithm* (*find)(const std::string&),
                          std::vector<const Algorithm*> (*all)(), const char* family) {
  if (name.empty()) return nullptr;
  const Algorithm* a = find(name);
  if (!a) {
    std::string known;
    for (const Algorithm* c : all()) known += (known.empty() ? "" : ", ") + std::string(c->name);
    throw py::value_error(std::string("no ") + family + " algorithm named '" + name +
                          "' on this machine; available: " + known);
  }
  return a;
}

const ConvAlgorithm* algorithm_named(const std::string& name) {
  return named_in(name, find_conv_algorithm, all_conv_algorithms, "conv");
}

struct PyConvPlan {
  // Keeps the weights alive when the plan borrows them.
  py::object weight_owner, bias_owner;
  std::unique_ptr<ConvPlan> plan;
};

// The plan of a weight (K, C/groups, *kernel) with 1 to 3 kernel axes, (d, h, w) right-aligned.
// A weight's kernel sizes as (d, h, w): its `axes` kernel axes, right-aligned, the others 1.
template <class Size>
std::array<int64_t, 3> kernel_of(const Size* kernel_axes, size_t axes) {
  std::array<int64_t, 3> kernel{1, 1, 1};
  for (size_t i = 0; i < axes; ++i) kernel[3 - axes + i] = int64_t(kernel_axes[i]);
  return kernel;
}

std::unique_ptr<ConvPlan> plan_of(DType dt, const void* weight, const std::vector<int64_t>& shape, const void* bias,
                                  bool copy, bool reused, bool keeps_source = true) {
  if (shape.size() < 3 || shape.size() > 5) throw py::value_error("weight: expected 3 to 5 dimensions");
  const std::array<int64_t, 3> kernel = kernel_of(shape.data() + 2, shape.size() - 2);
  return std::make_unique<ConvPlan>(dt, weight, bias, shape[0], shape[1], kernel[0], kernel[1], kernel[2], copy, reused,
                                    keeps_source);
}

// A BFloat16 plan's arrays travel as their bits, uint16 (NumPy has no bfloat16 of its own),
// or as float32 where that is what the call has (see run_plan).
void require_bits(const py::array& a, const char* name, py::ssize_t ndim, bool writable, bool float32_too) {
  const bool bits = a.dtype().equal(py::dtype::of<uint16_t>());
  if (!bits && !(float32_too && a.dtype().equal(py::dtype::of<float>())))
    throw py::type_error(std::string(name) + ": a bfloat16 plan takes bfloat16 bits as uint16" +
                         (float32_too ? " or float32" : "") + ", got " + py::str(a.dtype()).cast<std::string>());
  require(a, name, DType::Float32, ndim, writable, /*check_dtype=*/false);
}

PyConvPlan make_plan(const py::array& weight, const py::object& bias, bool copy, bool bfloat16 = false,
                     bool reused = false, bool keeps_source = true) {
  if (!keeps_source && !copy) throw py::value_error("keeps_source=False needs copy=True: the plan frees its own copy");
  const DType dt = bfloat16 ? DType::BFloat16 : dtype_of(weight, "weight");
  if (weight.ndim() < 3 || weight.ndim() > 5) throw py::value_error("weight: expected 3 to 5 dimensions");
  if (bfloat16) require_bits(weight, "weight", weight.ndim(), false, false);
  else require(weight, "weight", dt, weight.ndim(), false);
  const void* bias_ptr = nullptr;
  if (!bias.is_none()) {
    py::array b = py::reinterpret_borrow<py::array>(bias);
    require(b, "bias", bfloat16 ? DType::Float32 : dt, 1, false);
    if (b.shape(0) != weight.shape(0)) throw py::value_error("bias: length differs from weight's out channels");
    bias_ptr = b.data();
  }
  PyConvPlan p;
  p.plan = plan_of(dt, weight.data(), shape_of(weight), bias_ptr, copy, copy || reused, keeps_source);
  if (!copy) {
    p.weight_owner = weight;
    p.bias_owner = bias;
  }
  return p;
}

void run_plan(PyConvPlan& self, const py::array& x, const py::array& out, const ConvParams& params,
              const std::string& algorithm, int num_threads, const py::object& residual = py::none()) {
  ConvPlan& plan = *self.plan;
  const bool bfloat16 = plan.dtype() == DType::BFloat16;
  if (bfloat16) {
    require_bits(x, "x", params.rank + 2, false, true);
    require_bits(out, "out", params.rank + 2, true, true);
  } else {
    require(x, "x", plan.dtype(), params.rank + 2, false);
    require(out, "out", plan.dtype(), params.rank + 2, true);
  }
  const std::vector<int64_t> xs = shape_of(x), os = shape_of(out);
  ConvProblem p = make_problem(plan, xs.data(), xs.size(), &os, params);
  p.x_float32 = bfloat16 && x.dtype().equal(py::dtype::of<float>());
  p.y_float32 = bfloat16 && out.dtype().equal(py::dtype::of<float>());
  const ConvAlgorithm* forced = algorithm_named(algorithm);
  if (num_threads < 0)
    throw py::value_error("num_threads must be >= 0 (0: the global setting), got " + std::to_string(num_threads));
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  const void* rp = nullptr;
  if (!residual.is_none()) {
    if (bfloat16)
      throw py::type_error(
          "residual= is not supported where the convolution computes in bfloat16 (bfloat16 arrays, or a layer "
          "with compute_dtype=\"bfloat16\"): add it to the result after the call");
    const auto r = py::reinterpret_borrow<py::array>(residual);
    require(r, "residual", plan.dtype(), params.rank + 2, false);
    if (shape_of(r) != os) throw py::value_error("residual: must have the output's shape");
    if (overlaps(r.data(), size_t(r.nbytes()), yp, size_t(out.nbytes())))
      throw py::value_error("residual: must not share memory with out (the kernels store partial sums in out)");
    rp = r.data();
  }
  GilReleased released;
  plan.run(p, xp, yp, forced, num_threads, rp);
}

py::dict describe(const ConvPlan& plan, const ConvProblem& p) {
  const ConvChoice c = plan.choose(p);
  py::dict d;
  d["algorithm"] = c.algorithm->name;
  d["isa"] = c.isa;
  d["threads"] = c.threads;
  d["precision"] = kPrecisionNames[int(p.precision)];
  d["flops"] = conv_flops(p);
  d["workspace_bytes"] = c.workspace_bytes;
  d["packed_weight_bytes"] = c.packed_bytes;
  d["lowering"] = lowering_name(c.lowering);
  d["live_taps_only"] = c.live_taps_only;
  d["fuses_residual"] = plan.fuses_residual(p);
  py::list candidates;
  for (const ConvAlgorithm* a : plan.candidates(p)) candidates.append(a->name);
  d["candidates"] = candidates;
  return d;
}

}  // namespace

// Where new results of at least `smallest` bytes come from: cppconv._buffers.OUTPUTS.empty,
// installed at import (set_output_allocator), which hands out a kept buffer once nothing else
// holds it (fresh pages cost the kernel's zeroing on first touch).  Leaked on purpose: a
// static py::object would be released after the interpreter is gone.
namespace {
struct OutputAllocator {
  py::object* empty = nullptr;
  size_t smallest = SIZE_MAX;
};
OutputAllocator& output_allocator() {
  static OutputAllocator allocator;
  return allocator;
}

py::array new_output(const py::dtype& dtype, const std::vector<py::ssize_t>& shape) {
  const OutputAllocator& allocator = output_allocator();
  size_t bytes = size_t(dtype.itemsize());
  for (py::ssize_t s : shape) bytes = saturating_mul(bytes, size_t(s));
  if (allocator.empty && !allocator.empty->is_none() && bytes >= allocator.smallest) {
    py::object made = (*allocator.empty)(py::tuple(py::cast(shape)), dtype);
    if (py::isinstance<py::array>(made)) {
      auto out = py::reinterpret_steal<py::array>(made.release());
      if (out.dtype().equal(dtype) && (out.flags() & py::array::c_style) && out.writeable() &&
          size_t(out.nbytes()) == bytes)
        return out;
    }
  }
  return py::array(dtype, shape);
}
}  // namespace

// The pixel pitch, in elements, of `out` when it is a channel slice of a wider C-contiguous
// channels-last array (a 4-D (n, h, w, k) view with unit channel stride and pixels, rows and
// images packed at one pitch, as a Concat's input written in place is); 0 otherwise.
int64_t channel_slice_pitch(const py::array& out) {
  if (out.ndim() != 4) return 0;
  const py::ssize_t item = out.itemsize();
  const py::ssize_t pitch = out.strides(2);
  if (out.strides(3) != item || pitch % item != 0 || pitch / item < out.shape(3) ||
      out.strides(1) != out.shape(2) * pitch || out.strides(0) != out.shape(1) * out.strides(1))
    return 0;
  return int64_t(pitch / item);
}

// The one-step path of the common call (C-contiguous float32/float64 input of the weights'
// dtype; a new output, or a C-contiguous `out` of the exact shape that shares no memory with
// the operands): for small inputs, where Python-level argument handling would cost more than
// the convolution; also `out` a channel slice (channel_slice_pitch) where the plan writes one.
// Returns None whenever anything is unusual or wrong, and the Python layer
// then takes its full path (and raises its errors).  `image`: x is a 2-D image for a 2-D
// kernel.  `operands`: other arrays `out` must not overlap (a one-shot call's borrowed
// weights and bias).  A bfloat16 plan's x and out travel as their bits, uint16 (as run_plan
// takes them), and a new output is uint16 too: the caller views it as bfloat16.
py::object forward(ConvPlan& plan, const py::handle& x_obj, const py::handle& out_obj,
                   const std::vector<py::array>& operands, bool image, const ConvParams& a, int num_threads,
                   const py::handle& residual_obj = py::none(), NetProgram* program = nullptr,
                   const py::handle& plan_owner = py::handle()) {
  if (num_threads < 0 || !py::isinstance<py::array>(x_obj)) return py::none();
  const auto x = py::reinterpret_borrow<py::array>(x_obj);
  const int xd = int(x.ndim()), r = a.rank;
  if (image ? (xd != 2 || r != 2) : (xd != r + 1 && xd != r + 2)) return py::none();
  if (!(x.flags() & py::array::c_style)) return py::none();
  const py::dtype dtype = plan.dtype() == DType::Float32    ? py::dtype::of<float>()
                          : plan.dtype() == DType::BFloat16 ? py::dtype::of<uint16_t>()
                                                            : py::dtype::of<double>();
  if (!x.dtype().equal(dtype)) return py::none();
  const bool last = a.layout == 1;
  std::array<int64_t, 5> xs{};
  if (image) {
    xs = last ? std::array<int64_t, 5>{1, x.shape(0), x.shape(1), 1}
              : std::array<int64_t, 5>{1, 1, x.shape(0), x.shape(1)};
  } else {
    const int batched = xd == r + 2;
    xs[0] = batched ? x.shape(0) : 1;
    for (int i = 0; i < r + 1; ++i) xs[size_t(i + 1)] = x.shape(i + batched);
  }
  const int64_t channels = xs[last ? size_t(r + 1) : 1];
  if (a.groups < 1 || plan.group_in_channels() * a.groups != channels || plan.out_channels() % a.groups != 0)
    return py::none();
  ConvProblem p;
  try {
    p = make_problem(plan, xs.data(), size_t(r + 2), nullptr, a);
  } catch (const std::exception&) {
    return py::none();
  }
  const int64_t spatial[3] = {p.out_d, p.out_h, p.out_w};
  std::vector<py::ssize_t> shape;
  if (!image && xd == r + 2) shape.push_back(p.batch);
  if (!image && !last) shape.push_back(p.out_channels);
  for (int i = 0; i < r; ++i) shape.push_back(spatial[3 - r + i]);
  if (!image && last) shape.push_back(p.out_channels);
  py::array out;
  int64_t pixel_pitch = 0;  // > 0: out is a channel slice of a wider channels-last array
  if (out_obj.is_none()) {
    out = new_output(dtype, shape);
  } else {
    if (!py::isinstance<py::array>(out_obj)) return py::none();
    out = py::reinterpret_borrow<py::array>(out_obj);
    if (!out.dtype().equal(dtype) || !out.writeable() || size_t(out.ndim()) != shape.size()) return py::none();
    for (size_t i = 0; i < shape.size(); ++i)
      if (out.shape(py::ssize_t(i)) != shape[i]) return py::none();
    size_t extent = size_t(out.nbytes());
    if (!(out.flags() & py::array::c_style)) {
      pixel_pitch = channel_slice_pitch(out);
      if (pixel_pitch == 0 || !plan.writes_channel_slice(p)) return py::none();
      extent = size_t((p.batch * p.out_h * p.out_w - 1) * pixel_pitch + p.out_channels) * size_t(out.itemsize());
    }
    if (overlaps(out.data(), extent, x.data(), size_t(x.nbytes()))) return py::none();
    for (const py::array& o : operands)
      if (overlaps(out.data(), extent, o.data(), size_t(o.nbytes()))) return py::none();
  }
  const void* rp = nullptr;  // a residual (see run_plan): of out's exact shape and dtype, apart from it
  if (!residual_obj.is_none()) {
    if (pixel_pitch > 0 || plan.dtype() == DType::BFloat16 || !py::isinstance<py::array>(residual_obj))
      return py::none();
    const auto r = py::reinterpret_borrow<py::array>(residual_obj);
    if (!r.dtype().equal(dtype) || !(r.flags() & py::array::c_style) || size_t(r.ndim()) != shape.size())
      return py::none();
    for (size_t i = 0; i < shape.size(); ++i)
      if (r.shape(py::ssize_t(i)) != shape[i]) return py::none();
    if (overlaps(r.data(), size_t(r.nbytes()), out.data(), size_t(out.nbytes()))) return py::none();
    rp = r.data();
  }
  const void* xp = x.data();
  void* yp = out.mutable_data();
  if (program && !plan_owner) throw std::logic_error("forward: a recorded call needs the plan's owner");
  ConvPlan* run_plan = &plan;  // (kept alive by plan_owner where recorded)
  run_recorded(program, {plan_owner, x, out, residual_obj}, [=] {
    if (pixel_pitch > 0) run_plan->run_into_channels(p, xp, yp, pixel_pitch, num_threads);
    else run_plan->run(p, xp, yp, nullptr, num_threads, rp);
  });
  return std::move(out);
}

// conv1d/2d/3d's one-step path, for int stride, padding and dilation (the same on every axis):
// checks the weights and bias, borrows them for a plan, runs.
// The one-step path's arguments in their plain forms (Python ints in int64, words in their
// canonical spelling, None); false for anything else, which the full path then handles.
bool plain_int(const py::handle& h, int64_t* value) {
  if (!PyLong_CheckExact(h.ptr())) return false;
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(h.ptr(), &overflow);
  if (overflow || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return false;
  }
  *value = v;
  return true;
}

template <size_t N>
bool plain_word(const py::handle& h, const char* const (&names)[N], int* code) {
  if (!PyUnicode_CheckExact(h.ptr())) return false;
  const char* s = PyUnicode_AsUTF8(h.ptr());
  if (!s) {
    PyErr_Clear();
    return false;
  }
  for (size_t i = 0; i < N; ++i)
    if (names[i][0] != '\0' && std::strcmp(s, names[i]) == 0) {
      *code = int(i);
      return true;
    }
  return false;
}

py::object conv_simple(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj,
                       const py::handle& out_obj, int rank, const py::handle& stride_obj, const py::handle& padding_obj,
                       const py::handle& dilation_obj, const py::handle& groups_obj, const py::handle& mode_obj,
                       const py::handle& layout_obj, const py::handle& activation_obj, const py::handle& precision_obj,
                       const py::handle& threads_obj) {
  if (!py::isinstance<py::array>(w_obj) || rank < 1 || rank > 3) return py::none();
  int64_t stride, padding = 0, dilation, groups, threads = 0;
  int pad_mode, layout, activation = 0, precision = -1;
  if (!plain_int(stride_obj, &stride) || !plain_int(dilation_obj, &dilation) || !plain_int(groups_obj, &groups) ||
      !plain_word(mode_obj, kPadModeNames, &pad_mode) || !plain_word(layout_obj, kLayoutNames[rank - 1], &layout))
    return py::none();
  static const char* const kValid[] = {"valid"};
  int valid;
  if (!plain_int(padding_obj, &padding) && !plain_word(padding_obj, kValid, &valid)) return py::none();
  if (!activation_obj.is_none() && !plain_word(activation_obj, kActivationNames, &activation)) return py::none();
  if (!precision_obj.is_none() && !plain_word(precision_obj, kPrecisionNames, &precision)) return py::none();
  if (!threads_obj.is_none() && (!plain_int(threads_obj, &threads) || threads < 1 || threads > kMaxThreads))
    return py::none();
  const int num_threads = int(threads);
  const auto w = py::reinterpret_borrow<py::array>(w_obj);
  const int wd = int(w.ndim());
  const bool image = rank == 2 && wd == 2;
  if ((wd != rank + 2 && !image) || !(w.flags() & py::array::c_style)) return py::none();
  DType dt;
  if (w.dtype().equal(py::dtype::of<float>())) dt = DType::Float32;
  else if (w.dtype().equal(py::dtype::of<double>())) dt = DType::Float64;
  else return py::none();
  const void* bias = nullptr;
  std::vector<py::array> operands{w};
  if (!b_obj.is_none()) {
    if (!py::isinstance<py::array>(b_obj)) return py::none();
    const auto b = py::reinterpret_borrow<py::array>(b_obj);
    operands.push_back(b);
    if (!b.dtype().equal(w.dtype()) || b.ndim() != 1 || !(b.flags() & py::array::c_style) ||
        b.shape(0) != (image ? 1 : w.shape(0)))
      return py::none();
    bias = b.data();
  }
  ConvParams a;
  a.rank = rank;
  for (int i = 3 - rank; i < 3; ++i) {
    a.stride[size_t(i)] = stride;
    a.dilation[size_t(i)] = dilation;
    a.padding[size_t(2 * i)] = a.padding[size_t(2 * i + 1)] = padding;
  }
  a.groups = groups;
  a.padding_mode = pad_mode;
  a.layout = layout;
  a.activation = activation;
  a.precision = precision;
  // On the stack, not plan_of's heap: this path is about the per-call cost.
  const std::array<int64_t, 3> kernel = kernel_of(w.shape() + (image ? 0 : 2), size_t(image ? 2 : rank));
  ConvPlan plan(dt, w.data(), bias, image ? 1 : w.shape(0), image ? 1 : w.shape(1), kernel[0], kernel[1], kernel[2],
                /*copy=*/false, /*reused=*/false);
  return forward(plan, x_obj, out_obj, operands, image, a, num_threads);
}

// threadpoolctl's controller (python/cppconv/_threadpool.py) finds this module by these two
// exported C symbols and calls them through ctypes.
#if defined(_WIN32)
#define CPPCONV_EXPORT __declspec(dllexport)
#else
#define CPPCONV_EXPORT __attribute__((visibility("default")))
#endif
extern "C" {
CPPCONV_EXPORT int cppconv_get_num_threads() { return cppconv::get_num_threads(); }
CPPCONV_EXPORT void cppconv_set_num_threads(int n) {
  if (n >= 1) cppconv::set_num_threads(n);
}
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "cppconv's native core (internal: use the cppconv package)";
  // (first: the functions that take a `program` name its type in their signatures)
  py::class_<NetProgram>(m, "NetProgram",
                         "A network's native steps with their operands bound (internal; see cppconv.Network).")
      .def(py::init<>())
      .def("__len__", &NetProgram::size)
      .def("holds", &NetProgram::holds, py::arg("obj"), "References to obj the program holds.")
      .def("set_inputs", &NetProgram::set_inputs, py::arg("inputs"),
           "The arrays the program reads the network's inputs from (before the recording).")
      .def("run", &NetProgram::run, py::arg("inputs") = std::vector<py::array>{},
           "Runs the recorded steps in order, without the GIL, on `inputs` (C-contiguous arrays of the recorded "
           "inputs' shapes and dtypes), or on the program's own input arrays.")
      .def("run_timed", &NetProgram::run_timed, py::arg("inputs") = std::vector<py::array>{},
           "run(), returning each recorded step's CPU time on the calling thread in seconds.");

  py::class_<ConvParams>(m, "ConvParams", "A convolution call's normalised hyper-parameters (internal).")
      .def(py::init(&conv_params), py::arg("rank"), py::arg("stride"), py::arg("dilation"), py::arg("padding"),
           py::arg("groups"), py::arg("padding_mode"), py::arg("layout"), py::arg("activation"),
           py::arg("precision") = -1, py::arg("negative_slope") = kDefaultNegativeSlope)
      .def_readonly("rank", &ConvParams::rank);

  py::class_<PyConvPlan>(m, "ConvPlan")
      .def(py::init([](const py::array& weight, const py::object& bias, bool copy, bool bfloat16, bool reused,
                       bool keeps_source) { return make_plan(weight, bias, copy, bfloat16, reused, keeps_source); }),
           py::arg("weight"), py::arg("bias"), py::arg("copy") = true, py::arg("bfloat16") = false,
           py::arg("reused") = false, py::arg("keeps_source") = true,
           "bfloat16=True: weight holds bfloat16 bits (uint16) and the bias is float32; run() then takes x and "
           "out as bfloat16 bits or float32 (x rounded to bfloat16 as it is read), accumulating in float32. "
           "copy=False borrows the arrays (kept alive by the plan); reused=True (implied by copy) marks the "
           "weights as a layer's, used over many calls from any thread: packed once and kept. keeps_source=False "
           "(with copy=True): the plan's copy is the only one, freed once a pack can give the weights back and "
           "unpacked again where needed; weight_bytes() reads them.")
      .def(
          "weight_bytes",
          [](const PyConvPlan& self) {
            const ConvPlan& plan = *self.plan;
            const size_t bytes = plan.weight_bytes();
            // Filled before anyone else sees it: a bytes object keeps the copy immutable.
            PyObject* raw = PyBytes_FromStringAndSize(nullptr, py::ssize_t(bytes));
            if (!raw) throw py::error_already_set();
            py::bytes out = py::reinterpret_steal<py::bytes>(raw);
            char* to = PyBytes_AS_STRING(raw);
            GilReleased released;
            plan.copy_weight(to);
            return out;
          },
          "The weights as given, (K, C/groups, kd, kh, kw) in C order, as bytes (unpacked where the plan freed "
          "its copy).")
      .def(
          "held_bytes", [](const PyConvPlan& self) { return self.plan->held_bytes(); },
          "Bytes of weights the plan holds: its copy (while kept), the bias and the packs.")
      .def("run", &run_plan, py::arg("x"), py::arg("out"), py::arg("params"), py::arg("algorithm") = "",
           py::arg("num_threads") = 0, py::arg("residual") = py::none(),
           "residual: an array of out's shape and dtype, not sharing memory with it, added before the activation.")
      .def(
          "forward",
          [](const py::object& self, const py::handle& x, const py::handle& out, bool image, const ConvParams& params,
             int num_threads, const py::handle& residual, NetProgram* program) {
            // A layer's plan owns copies of its weights: `out` can only clash with x.
            return forward(*self.cast<PyConvPlan&>().plan, x, out, {}, image, params, num_threads, residual, program,
                           self);
          },
          py::arg("x"), py::arg("out"), py::arg("image"), py::arg("params"), py::arg("num_threads") = 0,
          py::arg("residual") = py::none(), py::arg("program") = nullptr,
          "The layer's one-step path (internal): the output, or None when it does not apply; `program` "
          "records the run (NetProgram).")
      .def(
          "explain",
          [](const PyConvPlan& self, const std::vector<int64_t>& x_shape, const ConvParams& params) {
            return describe(*self.plan, make_problem(*self.plan, x_shape.data(), x_shape.size(), nullptr, params));
          },
          py::arg("x_shape"), py::arg("params"));

  m.def(
      "conv",
      [](const py::array& x, const py::array& weight, const py::object& bias, const py::array& out,
         const ConvParams& params, const std::string& algorithm, int num_threads) {
        PyConvPlan plan = make_plan(weight, bias, /*copy=*/false);
        run_plan(plan, x, out, params, algorithm, num_threads);
      },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("params"), py::arg("algorithm") = "",
      py::arg("num_threads") = 0, "One-shot convolution of any rank into `out` (internal; see cppconv.conv2d).");

  m.def(
      "explain",
      [](char dtype, const std::vector<int64_t>& x_shape, const std::vector<int64_t>& weight_shape, bool has_bias,
         const ConvParams& params, bool layer, bool x_float32, bool y_float32) {
        if (dtype != 'f' && dtype != 'd' && dtype != 'b')
          throw py::type_error("explain: dtype must be 'f', 'd' or 'b' (bfloat16 operands, float32 sums)");
        // choose() looks at shapes only, so a plan without weights is enough here.
        static const double no_bias = 0;
        const DType dt = dtype == 'f' ? DType::Float32 : dtype == 'd' ? DType::Float64 : DType::BFloat16;
        const std::unique_ptr<ConvPlan> plan =
            plan_of(dt, nullptr, weight_shape, has_bias ? &no_bias : nullptr, false, layer);
        ConvProblem p = make_problem(*plan, x_shape.data(), x_shape.size(), nullptr, params);
        if ((x_float32 || y_float32) && dt != DType::BFloat16)
          throw py::value_error("explain: x_float32 and y_float32 go with dtype 'b' only");
        // As run_plan sets them: a bfloat16 problem whose x or y is float32 may run otherwise.
        p.x_float32 = x_float32;
        p.y_float32 = y_float32;
        return describe(*plan, p);
      },
      py::arg("dtype"), py::arg("x_shape"), py::arg("weight_shape"), py::arg("has_bias"), py::arg("params"),
      py::arg("layer") = false, py::arg("x_float32") = false, py::arg("y_float32") = false);

  m.def("conv_simple", &conv_simple, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("rank"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("padding_mode"),
        py::arg("layout"), py::arg("activation"), py::arg("precision"), py::arg("num_threads"),
        "conv1d/2d/3d's one-step fast path (internal), for the arguments as the user passed them: the result, or "
        "None when any is not in its plain form (int sizes, canonical words) or anything else is unusual.");
  m.def("conv_output_size", &conv_output_size, py::arg("size"), py::arg("kernel"), py::arg("stride"),
        py::arg("dilation"), py::arg("before"), py::arg("after"),
        "Output length of one axis (0 when the kernel spans more than the padded size).");
  // The precision modes' names and codes (Precision in cpp/conv_problem.h); -1 in a call
  // means the process-wide setting.
  py::dict precisions;
  for (int code = 0; code <= int(Precision::High); ++code) precisions[kPrecisionNames[code]] = code;
  m.attr("PRECISIONS") = precisions;
  py::dict pad_modes, activations, layouts;
  for (int code = 0; code < int(std::size(kPadModeNames)); ++code) pad_modes[kPadModeNames[code]] = code;
  for (int code = 0; code < int(std::size(kActivationNames)); ++code)
    activations[code == 0 ? py::object(py::none()) : py::object(py::str(kActivationNames[code]))] = code;
  for (int rank = 1; rank <= 3; ++rank) {
    py::dict names;
    for (int code = 0; code < 2; ++code) names[kLayoutNames[rank - 1][code]] = code;
    layouts[py::int_(rank)] = names;
  }
  m.attr("PADDING_MODES") = pad_modes;
  m.attr("ACTIVATIONS") = activations;
  m.attr("LAYOUTS") = layouts;  // {rank: {name: code}}
  m.attr("MAX_INDEX_EXTENT") = kMaxIndexExtent;
  m.attr("DEFAULT_NEGATIVE_SLOPE") = kDefaultNegativeSlope;
  m.def("set_float32_precision", [](int mode) { set_float32_precision(precision_from(mode)); }, py::arg("mode"));
  m.def("get_float32_precision", []() { return int(get_float32_precision()); });
  m.def("set_num_threads", &cppconv::set_num_threads, py::arg("n"));
  m.def("reset_num_threads", &cppconv::reset_num_threads,
        "Forgets set_num_threads: OpenMP's setting (OMP_NUM_THREADS, omp_set_num_threads) applies again.");
  m.def("num_threads_is_set", &cppconv::num_threads_is_set, "Whether set_num_threads is in force.");
  m.attr("MAX_THREADS") = kMaxThreads;
  m.def("physical_memory_bytes", &physical_memory_bytes, "The most memory cppconv lets one call allocate.");
  m.def(
      "set_output_allocator",
      [](const py::object& empty, size_t smallest) {
        OutputAllocator& allocator = output_allocator();
        if (!allocator.empty) allocator.empty = new py::object();
        *allocator.empty = empty;
        allocator.smallest = empty.is_none() ? SIZE_MAX : smallest;
      },
      py::arg("empty"), py::arg("smallest"),
      "New results of at least `smallest` bytes come from empty(shape, dtype) (None: from NumPy).");
  m.def("get_num_threads", &cppconv::get_num_threads);
  m.def("set_thread_cap", &cppconv::set_thread_cap, py::arg("n"),
        "Caps the threads of every call made from the calling OS thread (0: no cap); returns the previous cap.");
  m.def("thread_cap", &cppconv::thread_cap, "The calling OS thread's cap on threads (0: none).");
  m.def("resolve_threads", &cppconv::resolve_threads, py::arg("max_threads"),
        "The threads a call with its own cap max_threads (0: none) uses: the setting, the calling thread's cap, "
        "one in a forked child.");
  bind_conversion<uint16_t, float>(m, "bf16_to_float32", &bf16_to_float32,
                                   "bfloat16 bits (uint16) widened to float32, exactly.");
  bind_conversion<float, uint16_t>(m, "float32_to_bf16", &float32_to_bf16,
                                   "float32 to bfloat16 bits (uint16), round to nearest even; NaN stays NaN.");
  bind_quantization(m);
  bind_conversion<float, float>(m, "round_to_bf16", &round_to_bf16,
                                "float32 rounded to the nearest bfloat16, kept as float32 (dst may be src).");
  m.def("available_isas", &available_isas, "ISAs compiled in that this CPU can run, weakest first.");
  m.def("default_isa", &default_isa, "The ISA chosen at import (CPPCONV_MAX_ISA caps it).");
  m.def(
      "cpu_features", []() { return cpu_feature_names(cpu_features()); },
      "CPU extensions beyond the ISAs that feature-guarded kernels may use here (CPPCONV_MAX_ISA caps them).");
  m.def("max_isa_levels", &max_isa_levels,
        "Every value CPPCONV_MAX_ISA can take on this machine, weakest first: ISAs, then feature levels.");
  m.def("selected_isa", []() { return std::string(active_table().isa_name); });
  m.def("select_isa", &select_isa, py::arg("name"), "Switch the kernel table (for tests and benchmarks).");
  m.def("conv_algorithms", []() {
    std::vector<std::string> names;
    for (const ConvAlgorithm* a : all_conv_algorithms()) names.emplace_back(a->name);
    return names;
  });
  m.def(
      "fma_peak_gflops",
      [](int threads, double seconds) {
        if (threads < 1 || threads > kMaxThreads)
          throw std::invalid_argument("threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                      std::to_string(threads));
        if (!(seconds >= 0 && seconds <= 60)) throw std::invalid_argument("seconds must be in [0, 60]");
        GilReleased released;
        return active_table().fma_peak_gflops(threads, seconds);
      },
      py::arg("threads"), py::arg("seconds") = 0.2,
      "Float32 multiply-add GFLOP/s of the selected ISA's vectors on `threads` threads (the best round "
      "in about `seconds`): the machine limit benchmarks compare against.");
  bind_pool_and_transpose(m);
  bind_qconv(m);
  m.def("openmp", []() {
#if defined(_OPENMP)
    return true;
#else
    return false;
#endif
  });
}

// ===========================================================================================
// Pooling and transposed convolution (cpp/pool.*, cpp/conv_transpose.*).  Same contract as
// above: the Python layer validates; these checks only keep the native boundary safe.
// ===========================================================================================
namespace {

Layout layout_from(int layout) { return code_of<Layout>(layout, kLayoutNames[0], "layout"); }

PoolKind pool_kind_from(int kind) {
  if (kind != 0 && kind != 1) throw py::value_error("pool kind code must be 0 (max) or 1 (avg)");
  return PoolKind(kind);
}

// Fills batch/channels/sizes from x and out (3-D to 5-D: one to three spatial axes, the missing
// leading (depth, height) axes of size 1; C-contiguous, layout order) and checks the indices
// array, which must be int64 of out's shape when given.
int64_t* pool_arrays(Pool2dProblem& p, const py::array& x, const py::array& out, const py::object& indices) {
  p.dtype = dtype_of(x, "x");
  const py::ssize_t ndim = x.ndim();
  if (ndim < 3 || ndim > 5) throw py::value_error("x: expected 3 to 5 dimensions (N, C and 1 to 3 spatial axes)");
  require(x, "x", p.dtype, ndim, false);
  require(out, "out", p.dtype, ndim, true);
  const bool first = p.layout == Layout::NCHW;
  const py::ssize_t c_axis = first ? 1 : ndim - 1, rank = ndim - 2, spatial = first ? 2 : 1;
  std::array<int64_t, 3> in{1, 1, 1}, got{1, 1, 1};
  for (py::ssize_t a = 0; a < rank; ++a) {
    in[size_t(3 - rank + a)] = x.shape(spatial + a);
    got[size_t(3 - rank + a)] = out.shape(spatial + a);
  }
  p.batch = x.shape(0);
  p.channels = x.shape(c_axis);
  std::tie(p.in_d, p.in_h, p.in_w) = std::tie(in[0], in[1], in[2]);
  std::tie(p.out_d, p.out_h, p.out_w) = std::tie(got[0], got[1], got[2]);
  if (out.shape(0) != p.batch || out.shape(c_axis) != p.channels)
    throw py::value_error("out: batch or channels differ from x's");
  if (p.in_d < 1 || p.in_h < 1 || p.in_w < 1) throw py::value_error("x: empty spatial dimensions");
  if (indices.is_none()) return nullptr;
  py::array idx = py::reinterpret_borrow<py::array>(indices);
  if (!idx.dtype().equal(py::dtype::of<int64_t>())) throw py::type_error("indices: must be int64");
  if (idx.ndim() != ndim || !std::equal(out.shape(), out.shape() + ndim, idx.shape()))
    throw py::value_error("indices: shape differs from out's");
  if (!(idx.flags() & py::array::c_style) || !idx.writeable())
    throw py::value_error("indices: must be C-contiguous and writable");
  if (p.kind != PoolKind::Max) throw py::value_error("indices: only max pooling has indices");
  return static_cast<int64_t*>(idx.mutable_data());
}

const PoolAlgorithm* pool_algorithm_named(const std::string& name) {
  if (name.empty()) return nullptr;
  const PoolAlgorithm* a = find_pool_algorithm(name);
  if (!a) throw py::value_error("no pool algorithm named '" + name + "' on this machine");
  return a;
}

void run_pool(const Pool2dProblem& p, const py::array& x, const py::array& out, const py::object& indices, int64_t* idx,
              const std::string& algorithm, int num_threads, NetProgram* program) {
  const PoolAlgorithm* forced = pool_algorithm_named(algorithm);
  if (num_threads < 0)
    throw py::value_error("num_threads must be >= 0 (0: the global setting), got " + std::to_string(num_threads));
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  run_recorded(program, {x, out, indices}, [=] { pool2d(p, xp, yp, idx, forced, num_threads); });
}

// Adaptive pooling of x (1 to 3 spatial axes) to out's size.
void run_adaptive_pool(const py::array& x, const py::array& out, const py::object& indices, int kind, int layout,
                       const std::string& algorithm, int num_threads, NetProgram* program) {
  Pool2dProblem p;
  p.kind = pool_kind_from(kind);
  p.layout = layout_from(layout);
  p.adaptive = true;
  int64_t* idx = pool_arrays(p, x, out, indices);
  if (p.out_d < 1 || p.out_h < 1 || p.out_w < 1) throw py::value_error("adaptive pooling output size below 1");
  run_pool(p, x, out, indices, idx, algorithm, num_threads, program);
}

using Sizes = std::vector<int64_t>;

// A max or average pool's settings for spatial rank 1 to 3 (kernel, stride and dilation per
// axis, padding (before, after) per axis), checked once when the Python layer builds its spec.
struct PoolSettings {
  Sizes kernel, stride, padding, dilation;
  PoolKind kind = PoolKind::Max;
  Layout layout = Layout::NCHW;
  bool ceil_mode = false, count_include_pad = true;
  int64_t divisor_override = 0;  // avg: 0 for none
  size_t rank() const { return kernel.size(); }
};

PoolSettings make_pool_settings(int kind, const Sizes& kernel, const Sizes& stride, const Sizes& padding,
                                const Sizes& dilation, bool ceil_mode, bool count_include_pad, int64_t divisor_override,
                                int layout) {
  const size_t rank = kernel.size();
  if (rank < 1 || rank > 3 || stride.size() != rank || dilation.size() != rank || padding.size() != 2 * rank)
    throw py::value_error("kernel, stride and dilation take one value per spatial axis (1 to 3), padding two");
  for (size_t a = 0; a < rank; ++a)
    if (kernel[a] < 1 || stride[a] < 1 || dilation[a] < 1 || padding[2 * a] < 0 || padding[2 * a + 1] < 0)
      throw py::value_error("kernel, stride and dilation must be >= 1 and padding >= 0");
  return {kernel,
          stride,
          padding,
          dilation,
          pool_kind_from(kind),
          layout_from(layout),
          ceil_mode,
          count_include_pad,
          divisor_override};
}

// Pools x into out (both with s.rank() spatial axes), whose shape must be the pooling's result.
void run_pool_settings(const py::array& x, const py::array& out, const py::object& indices, const PoolSettings& s,
                       const std::string& algorithm, int num_threads, NetProgram* program) {
  if (x.ndim() != py::ssize_t(s.rank() + 2))
    throw py::value_error("x and the settings differ in their number of spatial axes");
  Pool2dProblem p;
  p.kind = s.kind;
  p.layout = s.layout;
  int64_t* idx = pool_arrays(p, x, out, indices);
  // The settings as (d, h, w) axes, the missing leading ones of size 1 and unpadded.
  std::array<int64_t, 3> kernel{1, 1, 1}, stride{1, 1, 1}, dilation{1, 1, 1}, before{0, 0, 0}, after{0, 0, 0};
  const size_t rank = s.rank();
  for (size_t a = 0; a < rank; ++a) {
    const size_t to = 3 - rank + a;
    kernel[to] = s.kernel[a];
    stride[to] = s.stride[a];
    dilation[to] = s.dilation[a];
    before[to] = s.padding[2 * a];
    after[to] = s.padding[2 * a + 1];
  }
  std::tie(p.kernel_d, p.kernel_h, p.kernel_w) = std::tie(kernel[0], kernel[1], kernel[2]);
  std::tie(p.stride_d, p.stride_h, p.stride_w) = std::tie(stride[0], stride[1], stride[2]);
  std::tie(p.dilation_d, p.dilation_h, p.dilation_w) = std::tie(dilation[0], dilation[1], dilation[2]);
  std::tie(p.pad_front, p.pad_top, p.pad_left) = std::tie(before[0], before[1], before[2]);
  std::tie(p.pad_back, p.pad_bottom, p.pad_right) = std::tie(after[0], after[1], after[2]);
  p.count_include_pad = s.count_include_pad;
  p.divisor_override = s.divisor_override;
  const int64_t in[3] = {p.in_d, p.in_h, p.in_w}, got[3] = {p.out_d, p.out_h, p.out_w};
  for (int a = 0; a < 3; ++a) {
    const int64_t o = pool_output_size(in[a], kernel[a], stride[a], before[a], after[a], dilation[a], s.ceil_mode);
    if (o < 1) throw py::value_error("pooling output size below 1");
    if (o != got[a]) throw py::value_error("out: shape does not match the pooling's result");
  }
  run_pool(p, x, out, indices, idx, algorithm, num_threads, program);
}

const ConvTransposeAlgorithm* transpose_algorithm_named(const std::string& name) {
  if (name.empty()) return nullptr;
  const ConvTransposeAlgorithm* a = find_conv_transpose_algorithm(name);
  if (!a) throw py::value_error("no conv_transpose algorithm named '" + name + "' on this machine");
  return a;
}

// A transposed convolution's settings for spatial rank 1 to 3 (stride, output_padding and
// dilation per axis, padding (before, after) per axis), checked once when the Python layer
// builds its spec.
struct TransposeSettings {
  Sizes stride, padding, output_padding, dilation;
  int64_t groups = 1;
  Layout layout = Layout::NCHW;
  Activation activation = Activation::None;
  double negative_slope = kDefaultNegativeSlope;  // leaky_relu's
  size_t rank() const { return stride.size(); }
};

TransposeSettings make_transpose_settings(const Sizes& stride, const Sizes& padding, const Sizes& output_padding,
                                          const Sizes& dilation, int64_t groups, int layout, int activation,
                                          double negative_slope) {
  const size_t rank = stride.size();
  if (rank < 1 || rank > 3 || padding.size() != 2 * rank || output_padding.size() != rank || dilation.size() != rank)
    throw py::value_error("stride, output_padding and dilation take one value per spatial axis (1 to 3), padding two");
  for (size_t a = 0; a < rank; ++a) {
    if (stride[a] < 1 || dilation[a] < 1 || padding[2 * a] < 0 || padding[2 * a + 1] < 0 || output_padding[a] < 0)
      throw py::value_error("stride and dilation must be >= 1, padding and output_padding >= 0");
    if (output_padding[a] >= stride[a] && output_padding[a] >= dilation[a])
      throw py::value_error("output_padding must be smaller than stride or dilation");
  }
  if (groups < 1) throw py::value_error("groups must be >= 1");
  return {stride,
          padding,
          output_padding,
          dilation,
          groups,
          layout_from(layout),
          code_of<Activation>(activation, kActivationNames, "activation"),
          checked_slope(negative_slope)};
}

struct PyConvTransposePlan {
  py::object weight_owner, bias_owner;  // keep borrowed weights alive
  std::unique_ptr<ConvTransposePlan> plan;
  size_t rank = 2;  // the weight's spatial axes
};

// The plan of a (C, K/groups, *kernel) weight with 1 to 3 spatial axes.
// bfloat16: weight as bfloat16 bits (uint16), the bias float32 (as make_plan's).
PyConvTransposePlan make_transpose_plan(const py::array& weight, const py::object& bias, bool copy, bool reused,
                                        bool bfloat16 = false) {
  const DType dt = bfloat16 ? DType::BFloat16 : dtype_of(weight, "weight");
  if (weight.ndim() < 3 || weight.ndim() > 5)
    throw py::value_error("weight: expected 3 to 5 dimensions (C, K/groups, *kernel)");
  if (bfloat16) require_bits(weight, "weight", weight.ndim(), false, false);
  else require(weight, "weight", dt, weight.ndim(), false);
  const void* bias_ptr = nullptr;
  int64_t bias_size = 0;
  if (!bias.is_none()) {
    py::array b = py::reinterpret_borrow<py::array>(bias);
    require(b, "bias", bfloat16 ? DType::Float32 : dt, 1, false);
    bias_ptr = b.data();
    bias_size = b.shape(0);
  }
  PyConvTransposePlan p;
  p.rank = size_t(weight.ndim() - 2);
  std::array<int64_t, 3> kernel{1, 1, 1};  // (kd, kh, kw), the missing leading axes 1
  for (size_t a = 0; a < p.rank; ++a) kernel[3 - p.rank + a] = weight.shape(py::ssize_t(2 + a));
  p.plan = std::make_unique<ConvTransposePlan>(dt, weight.data(), bias_ptr, bias_size, weight.shape(0), weight.shape(1),
                                               kernel[0], kernel[1], kernel[2], copy, copy || reused);
  if (!copy) {
    p.weight_owner = weight;
    p.bias_owner = bias;
  }
  return p;
}

// The problem of an input of shape x (in s.layout) with the plan's weights; lower ranks fill
// the leading (depth, height) axes with size 1.
ConvTransposeProblem make_transpose_problem(const PyConvTransposePlan& self, const Sizes& x,
                                            const TransposeSettings& s) {
  const ConvTransposePlan& plan = *self.plan;
  const size_t rank = s.rank();
  if (self.rank != rank || x.size() != rank + 2)
    throw py::value_error("x, weight and the settings differ in their number of spatial axes");
  ConvTransposeProblem p;
  p.dtype = plan.dtype();
  p.layout = s.layout;
  p.activation = s.activation;
  p.negative_slope = s.negative_slope;
  const bool first = p.layout == Layout::NCHW;
  p.batch = x[0];
  p.in_channels = x[first ? 1 : rank + 1];
  if (p.in_channels != plan.in_channels() || p.in_channels % s.groups != 0)
    throw py::value_error("x channels do not match weight and groups");
  std::array<int64_t, 3> in{1, 1, 1}, stride{1, 1, 1}, dilation{1, 1, 1}, before{0, 0, 0}, after{0, 0, 0}, op{0, 0, 0};
  for (size_t a = 0; a < rank; ++a) {
    const size_t to = 3 - rank + a;
    in[to] = x[(first ? 2 : 1) + a];
    stride[to] = s.stride[a];
    dilation[to] = s.dilation[a];
    before[to] = s.padding[2 * a];
    after[to] = s.padding[2 * a + 1];
    op[to] = s.output_padding[a];
  }
  if (std::min({in[0], in[1], in[2]}) < 1) throw py::value_error("x: empty spatial dimensions");
  p.in_d = in[0];
  p.in_h = in[1];
  p.in_w = in[2];
  p.out_channels = plan.group_out_channels() * s.groups;
  p.kernel_d = plan.kernel_d();
  p.kernel_h = plan.kernel_h();
  p.kernel_w = plan.kernel_w();
  p.stride_d = stride[0];
  p.stride_h = stride[1];
  p.stride_w = stride[2];
  p.dilation_d = dilation[0];
  p.dilation_h = dilation[1];
  p.dilation_w = dilation[2];
  p.pad_front = before[0];
  p.pad_back = after[0];
  p.pad_top = before[1];
  p.pad_bottom = after[1];
  p.pad_left = before[2];
  p.pad_right = after[2];
  p.output_padding_d = op[0];
  p.output_padding_h = op[1];
  p.output_padding_w = op[2];
  p.groups = s.groups;
  p.out_d = conv_transpose_output_size(p.in_d, p.kernel_d, p.stride_d, p.pad_front, p.pad_back, op[0], p.dilation_d);
  p.out_h = conv_transpose_output_size(p.in_h, p.kernel_h, p.stride_h, p.pad_top, p.pad_bottom, op[1], p.dilation_h);
  p.out_w = conv_transpose_output_size(p.in_w, p.kernel_w, p.stride_w, p.pad_left, p.pad_right, op[2], p.dilation_w);
  if (std::min({p.out_d, p.out_h, p.out_w}) < 1) throw py::value_error("conv_transpose output size below 1");
  if (std::max({p.out_d, p.out_h, p.out_w}) >= kMaxIndexExtent)
    throw py::value_error("conv_transpose output size does not fit 64-bit index arithmetic");
  return p;
}

// program: records the run (NetProgram), with `owner`, the Python object holding self.
void run_transpose_plan(PyConvTransposePlan& self, const py::array& x, const py::array& out, const TransposeSettings& s,
                        const std::string& algorithm, int num_threads, NetProgram* program = nullptr,
                        const py::handle& owner = py::handle()) {
  if (num_threads < 0 || num_threads > kMaxThreads) throw py::value_error("num_threads out of range");
  ConvTransposePlan* plan_ptr = self.plan.get();
  ConvTransposePlan& plan = *plan_ptr;
  const py::ssize_t ndim = py::ssize_t(s.rank() + 2);
  const bool bfloat16 = plan.dtype() == DType::BFloat16;
  if (bfloat16) {
    require_bits(x, "x", ndim, false, true);
    require_bits(out, "out", ndim, true, true);
  } else {
    require(x, "x", plan.dtype(), ndim, false);
    require(out, "out", plan.dtype(), ndim, true);
  }
  ConvTransposeProblem p = make_transpose_problem(self, shape_of(x), s);
  p.x_float32 = bfloat16 && x.dtype().equal(py::dtype::of<float>());
  p.y_float32 = bfloat16 && out.dtype().equal(py::dtype::of<float>());
  const std::array<int64_t, 3> sizes{p.out_d, p.out_h, p.out_w};
  Sizes expect{p.batch};
  if (p.layout == Layout::NCHW) expect.push_back(p.out_channels);
  expect.insert(expect.end(), sizes.end() - std::ptrdiff_t(s.rank()), sizes.end());
  if (p.layout != Layout::NCHW) expect.push_back(p.out_channels);
  if (shape_of(out) != expect) throw py::value_error("out: shape does not match the transposed convolution's result");
  // A bfloat16 convolution algorithm's name runs every phase of a bfloat16 plan on it (tests).
  const ConvAlgorithm* phase_kernel = nullptr;
  if (bfloat16 && !algorithm.empty() && !find_conv_transpose_algorithm(algorithm)) {
    phase_kernel = find_conv_algorithm(algorithm);
    if (phase_kernel && phase_kernel->dtype != DType::BFloat16) phase_kernel = nullptr;
  }
  const ConvTransposeAlgorithm* forced = phase_kernel ? nullptr : transpose_algorithm_named(algorithm);
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  run_recorded(program, {owner, x, out}, [=] { plan_ptr->run(p, xp, yp, forced, num_threads, phase_kernel); });
}

void bind_pool_and_transpose(py::module_& m) {
  py::class_<PoolSettings>(m, "PoolSettings")
      .def(py::init(&make_pool_settings), py::arg("kind"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
           py::arg("dilation"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor_override"),
           py::arg("layout"),
           "Per-axis settings of a max (kind 0) or average (kind 1) pool of spatial rank 1 to 3; padding as "
           "(before, after) per axis, divisor_override 0 for none (internal).")
      .def_property_readonly("rank", &PoolSettings::rank);

  m.def("pool", &run_pool_settings, py::arg("x"), py::arg("out"), py::arg("indices"), py::arg("settings"),
        py::arg("algorithm") = "", py::arg("num_threads") = 0, py::arg("program") = nullptr,
        "Max or average pooling of rank 1 to 3 into `out` (internal; see cppconv.max_pool2d).");

  m.def("adaptive_pool", &run_adaptive_pool, py::arg("x"), py::arg("out"), py::arg("indices"), py::arg("kind"),
        py::arg("layout"), py::arg("algorithm") = "", py::arg("num_threads") = 0, py::arg("program") = nullptr,
        "Adaptive max (kind 0) or average (kind 1) pooling of rank 1 to 3 to out's size (internal; see "
        "cppconv.adaptive_avg_pool2d).");

  m.def("pool_output_size", &pool_output_size, py::arg("input_size"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("pad_before"), py::arg("pad_after"), py::arg("dilation"), py::arg("ceil_mode"));
  m.def("conv_transpose_output_size", &conv_transpose_output_size, py::arg("input_size"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"), py::arg("output_padding"), py::arg("dilation"));
  m.def("pool_algorithms", []() {
    std::vector<std::string> names;
    for (const PoolAlgorithm* a : all_pool_algorithms()) names.emplace_back(a->name);
    return names;
  });
  m.def("conv_transpose_algorithms", []() {
    std::vector<std::string> names;
    for (const ConvTransposeAlgorithm* a : all_conv_transpose_algorithms()) names.emplace_back(a->name);
    return names;
  });

  py::class_<TransposeSettings>(m, "ConvTransposeSettings")
      .def(py::init(&make_transpose_settings), py::arg("stride"), py::arg("padding"), py::arg("output_padding"),
           py::arg("dilation"), py::arg("groups"), py::arg("layout"), py::arg("activation"),
           py::arg("negative_slope") = kDefaultNegativeSlope,
           "Per-axis settings of a transposed convolution of spatial rank 1 to 3 (internal).");

  py::class_<PyConvTransposePlan>(m, "ConvTransposePlan")
      .def(py::init([](const py::array& weight, const py::object& bias, bool copy, bool reused, bool bfloat16) {
             return make_transpose_plan(weight, bias, copy, reused, bfloat16);
           }),
           py::arg("weight"), py::arg("bias"), py::arg("copy") = true, py::arg("reused") = false,
           py::arg("bfloat16") = false,
           "copy=False borrows the arrays (kept alive by the plan); reused=True (implied by copy) marks the "
           "weights as a layer's, used from any thread. bfloat16=True: weight holds bfloat16 bits (uint16) and "
           "the bias is float32; run() then takes x and out as bfloat16 bits or float32, accumulating in float32 "
           "(the stride phases on the bfloat16 convolution kernels, else widened to float32).")
      .def(
          "run",
          [](const py::object& self, const py::array& x, const py::array& out, const TransposeSettings& s,
             const std::string& algorithm, int num_threads, NetProgram* program) {
            run_transpose_plan(self.cast<PyConvTransposePlan&>(), x, out, s, algorithm, num_threads, program, self);
          },
          py::arg("x"), py::arg("out"), py::arg("settings"), py::arg("algorithm") = "", py::arg("num_threads") = 0,
          py::arg("program") = nullptr)
      .def(
          "explain",
          [](const PyConvTransposePlan& self, const Sizes& x_shape, const TransposeSettings& s, int num_threads,
             bool x_float32, bool y_float32) {
            ConvTransposeProblem p = make_transpose_problem(self, x_shape, s);
            const bool bfloat16 = self.plan->dtype() == DType::BFloat16;
            if ((x_float32 || y_float32) && !bfloat16)
              throw py::value_error("explain: x_float32 and y_float32 go with a bfloat16 plan only");
            p.x_float32 = x_float32;
            p.y_float32 = y_float32;
            const ConvTransposeChoice c = self.plan->choose(p, num_threads);
            py::dict d;
            // A bfloat16 plan's stride phases: the bfloat16 convolution kernel they run on.
            d["algorithm"] = c.algorithm ? c.algorithm->name : c.conv_algorithm->name;
            d["lowering"] = c.algorithm ? "none" : "stride_phases";
            d["phases"] = c.phases;
            d["widened"] = c.widened;
            d["dtype"] = kDTypes[int(c.widened ? DType::Float32 : self.plan->dtype())].name;
            d["isa"] = c.isa;
            d["threads"] = c.threads;
            d["flops"] = conv_transpose_flops(p);
            d["workspace_bytes"] = c.workspace_bytes;
            d["packed_weight_bytes"] = c.packed_bytes;
            return d;
          },
          py::arg("x_shape"), py::arg("settings"), py::arg("num_threads") = 0, py::arg("x_float32") = false,
          py::arg("y_float32") = false);

  m.def(
      "conv_transpose",
      [](const py::array& x, const py::array& weight, const py::object& bias, const py::array& out,
         const TransposeSettings& s, const std::string& algorithm, int num_threads) {
        PyConvTransposePlan plan = make_transpose_plan(weight, bias, /*copy=*/false, /*reused=*/false);
        run_transpose_plan(plan, x, out, s, algorithm, num_threads);
      },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("settings"), py::arg("algorithm") = "",
      py::arg("num_threads") = 0,
      "One-shot transposed convolution of rank 1 to 3 into `out` (internal; see cppconv.conv_transpose2d).");
}

}  // namespace

// ---- Quantized convolution (cpp/qconv.*): the Python layer (cppconv._quant) has validated the
// quantization parameters and proved the accumulators fit int32; here only the native boundary.
namespace {

void require_q(const py::array& a, const char* name, py::ssize_t ndim, bool writable) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": must be writable");
}

const QConvAlgorithm* qconv_algorithm_named(const std::string& name) {
  return named_in(name, find_qconv_algorithm, all_qconv_algorithms, "qconv");
}

std::unique_ptr<QConvPlan> make_qconv_plan(const py::array& weight, const py::object& bias, int64_t groups,
                                           bool one_call) {
  if (!weight.dtype().equal(py::dtype::of<int16_t>())) throw py::type_error("weight: the centred weights are int16");
  if (weight.ndim() < 3 || weight.ndim() > 5) throw py::value_error("weight: expected 3 to 5 dimensions");
  require_q(weight, "weight", weight.ndim(), false);
  if (groups < 1 || weight.shape(0) % groups != 0) throw py::value_error("groups must divide weight's out channels");
  const int32_t* bias_ptr = nullptr;
  if (!bias.is_none()) {
    py::array b = py::reinterpret_borrow<py::array>(bias);
    if (!b.dtype().equal(py::dtype::of<int32_t>())) throw py::type_error("bias: int32 expected");
    require_q(b, "bias", 1, false);
    if (b.shape(0) != weight.shape(0)) throw py::value_error("bias: length differs from weight's out channels");
    bias_ptr = static_cast<const int32_t*>(b.data());
  }
  const std::vector<int64_t> shape = shape_of(weight);
  const std::array<int64_t, 3> kernel = kernel_of(shape.data() + 2, shape.size() - 2);
  // A one-call plan packs only the algorithm its call runs (QConvPlan's pack_on_use).
  return std::make_unique<QConvPlan>(static_cast<const int16_t*>(weight.data()), bias_ptr, shape[0], shape[1],
                                     kernel[0], kernel[1], kernel[2], groups, /*pack_on_use=*/one_call);
}

ConvProblem qconv_problem(const QConvPlan& plan, const std::vector<int64_t>& x_shape, const std::vector<int64_t>* out,
                          const ConvParams& params) {
  if (params.groups != plan.groups()) throw py::value_error("groups differ from the plan's");
  if (params.padding_mode != int(PadMode::Zeros))
    throw py::value_error("padding_mode: quantized padding is x_zero_point");
  return make_problem(plan, x_shape.data(), x_shape.size(), out, params);
}

void run_qconv(const py::object& self, const py::array& x, const py::array& out, const ConvParams& params,
               int x_zero_point, const py::object& multiplier, int y_zero_point, int y_min, int y_max, float f_min,
               float f_max, const std::string& algorithm, int num_threads, NetProgram* program) {
  const QConvPlan& plan = self.cast<const QConvPlan&>();
  QConvCall call;
  if (x.dtype().equal(py::dtype::of<uint8_t>())) call.x_signed = false;
  else if (x.dtype().equal(py::dtype::of<int8_t>())) call.x_signed = true;
  else throw py::type_error("x: uint8 or int8 expected");
  if (out.dtype().equal(py::dtype::of<uint8_t>()) || out.dtype().equal(py::dtype::of<int8_t>())) {
    call.output = QOutput::Quantized;
    call.y_signed = out.dtype().equal(py::dtype::of<int8_t>());
  } else if (out.dtype().equal(py::dtype::of<int32_t>())) {
    call.output = QOutput::Int32;
  } else if (out.dtype().equal(py::dtype::of<float>())) {
    call.output = QOutput::Float32;
  } else {
    throw py::type_error("out: uint8, int8, int32 or float32 expected");
  }
  require_q(x, "x", params.rank + 2, false);
  require_q(out, "out", params.rank + 2, true);
  const std::vector<int64_t> xs = shape_of(x), os = shape_of(out);
  call.p = qconv_problem(plan, xs, &os, params);
  py::array_t<float> m;
  if (call.output != QOutput::Int32) {
    if (multiplier.is_none()) throw py::value_error("multiplier: needed for a quantized or float32 output");
    m = py::reinterpret_borrow<py::array>(multiplier);
    if (!m.dtype().equal(py::dtype::of<float>())) throw py::type_error("multiplier: float32 expected");
    require_q(m, "multiplier", 1, false);
    if (m.shape(0) != plan.out_channels()) throw py::value_error("multiplier: one per output channel");
    call.multiplier = m.data();
  }
  const int lo = call.y_signed ? -128 : 0, hi = call.y_signed ? 127 : 255;
  if (call.output == QOutput::Quantized &&
      (y_zero_point < lo || y_zero_point > hi || y_min < lo || y_max > hi || y_min > y_max))
    throw py::value_error("y_zero_point, y_min, y_max: outside the output dtype's range");
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0: the global setting)");
  call.x_zero_point = x_zero_point;
  call.y_zero_point = y_zero_point;
  call.y_min = y_min;
  call.y_max = y_max;
  call.f_min = f_min;
  call.f_max = f_max;
  call.x = x.data();
  call.y = const_cast<void*>(out.data());
  const QConvAlgorithm* forced = qconv_algorithm_named(algorithm);
  const QConvPlan* run_plan = &plan;  // (kept alive by self where recorded)
  run_recorded(program, {self, x, out, m}, [=] { run_plan->run(call, forced, num_threads); });
}

void bind_qconv(py::module_& m) {
  py::class_<QConvPlan>(m, "QConvPlan", "Centred int16 weights and int32 bias, packed once (internal).")
      .def(py::init(&make_qconv_plan), py::arg("weight"), py::arg("bias"), py::arg("groups"),
           py::arg("one_call") = false)
      .def("run", &run_qconv, py::arg("x"), py::arg("out"), py::arg("params"), py::arg("x_zero_point"),
           py::arg("multiplier"), py::arg("y_zero_point"), py::arg("y_min"), py::arg("y_max"), py::arg("f_min"),
           py::arg("f_max"), py::arg("algorithm") = "", py::arg("num_threads") = 0, py::arg("program") = nullptr)
      .def(
          "explain",
          [](const QConvPlan& plan, const std::vector<int64_t>& x_shape, const ConvParams& params,
             const std::string& algorithm, int num_threads) {
            const ConvProblem p = qconv_problem(plan, x_shape, nullptr, params);
            const QConvChoice c = plan.choose(p, num_threads, qconv_algorithm_named(algorithm));
            py::dict d;
            d["algorithm"] = c.algorithm->name;
            d["isa"] = c.isa;
            d["threads"] = c.threads;
            d["live_taps_only"] = c.live_taps_only;
            d["flops"] = conv_flops(p);
            return d;
          },
          py::arg("x_shape"), py::arg("params"), py::arg("algorithm") = "", py::arg("num_threads") = 0);
  m.def("qconv_algorithms", []() {
    std::vector<std::string> names;
    for (const QConvAlgorithm* a : all_qconv_algorithms()) names.emplace_back(a->name);
    return names;
  });
}

}  // namespace
