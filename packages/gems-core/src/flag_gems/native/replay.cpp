// Replayed launches: a dispatcher kernel in front of a served op's Python kernel.
//
// The first call of a signature runs the Python kernel while recording what it does: which Triton
// kernels it launched (function, grid, arguments), what it allocated and what it returned. When every
// pointer a launch took is one of the call's tensors, an output, or memory the call allocated for itself
// (partial results passed from one launch to the next), and nothing else ran (no other ATen op than
// allocations and views, no launch outside flag_gems.launch), the call is kept as a plan. Later calls
// with the same signature (dtypes, shapes, strides, alignment, scalar values, the global flags a kernel
// reads) allocate the outputs and that memory and launch the kernels from here: the call never reaches
// Python. Everything else goes to the Python kernel, as before.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Context.h>
#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace py = pybind11;

namespace {

// cuLaunchKernel from the driver Triton already loaded: no CUDA headers needed to build this.
using LaunchKernel = int (*)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             void*, void**, void**);

void* driver_symbol(const char* name) {
  static void* lib = [] {
    void* found = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    return found == nullptr ? dlopen("libcuda.so.1", RTLD_NOW) : found;
  }();
  return lib == nullptr ? nullptr : dlsym(lib, name);
}

LaunchKernel launch_kernel() {
  static LaunchKernel fn = reinterpret_cast<LaunchKernel>(driver_symbol("cuLaunchKernel"));
  return fn;
}

// cuMemsetD8Async: a recorded call's zero fill of memory it allocated.
using MemsetD8 = int (*)(uint64_t, unsigned char, size_t, void*);

MemsetD8 memset_d8() {
  static MemsetD8 fn = reinterpret_cast<MemsetD8>(driver_symbol("cuMemsetD8Async"));
  return fn;
}

constexpr size_t kMaxParams = 64;
constexpr size_t kMaxPlans = 4096;
constexpr size_t kMaxLaunches = 16;
// Where each buffer of a plan starts in the block a replay allocates for them: the caching allocator's
// own alignment, so that a pointer into a buffer keeps the alignment Triton specialised on.
constexpr uint64_t kBufferAlign = 512;

// Where a kernel parameter's value comes from at replay.
enum class Source : uint8_t { kInput, kOutput, kBuffer, kConstant };

struct Param {
  Source source;
  uint32_t index;  // argument, output or buffer position
  uint64_t bits;   // the constant, packed as the kernel takes it; else the byte offset into the tensor
};

struct Output {
  std::vector<int64_t> sizes, strides;
  c10::ScalarType dtype;
  bool defined;  // an optional result the call did not compute (a gradient not asked for) is undefined
};

// A step of a plan: a kernel launch, or (``zero_bytes`` set) a zero fill of the memory ``params[0]`` points to.
struct PlannedLaunch {
  uint64_t zero_bytes = 0;
  uint64_t function = 0;
  unsigned grid[3] = {1, 1, 1};
  unsigned threads = 0, shared = 0;
  uint64_t scratch = 0, scratch_align = 1;  // global scratch bytes a program takes, and their alignment
  std::vector<Param> params;
};

struct Plan {
  std::atomic<bool> used{false};
  bool ready = false;
  int failures = 0;
  std::vector<PlannedLaunch> launches;  // launches and zero fills, in the order the Python kernel made them
  std::vector<Output> outputs;
  // Memory the call allocated for itself and only its launches use: each buffer's start in one block that
  // a replay allocates (and frees after its launches are queued, as the Python kernel's tensors would be).
  std::vector<uint64_t> buffer_starts;
  uint64_t buffer_bytes = 0;
};

struct KeyHash {
  size_t operator()(const std::vector<int64_t>& key) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : key) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

// Plans of one op, shared by its kernels at every dispatch key.
struct Table {
  std::shared_mutex lock;
  std::unordered_map<std::vector<int64_t>, std::shared_ptr<Plan>, KeyHash> plans;
  std::atomic<int64_t> hits{0};
  // Plans made and plans replayed at least once: an op whose signatures keep changing (a scalar that
  // differs every call) stops recording once many plans went unused, for each recording costs a call.
  std::atomic<int64_t> made{0}, reused{0};
  std::string last_refusal;  // why the latest recording made no plan (under lock)
};

constexpr int64_t kUnusedPlansLimit = 256;

std::mutex tables_lock;
std::unordered_map<std::string, std::shared_ptr<Table>> tables;
std::atomic<bool> enabled{true};

std::shared_ptr<Table> table_for(const std::string& name) {
  std::lock_guard<std::mutex> guard(tables_lock);
  auto& table = tables[name];
  if (!table) table = std::make_shared<Table>();
  return table;
}

// One recorded launch, as flag_gems.launch reported it.
struct Launch {
  uint64_t function;
  unsigned grid[3];
  unsigned threads, shared;
  uint64_t scratch, scratch_align;
  std::vector<bool> pointer;
  std::vector<uint64_t> bits;
  size_t allocations_before;  // how many allocations the call had made when it launched this
  size_t fills_before;        // and how many zero fills
};

// A zero fill the call made of bytes [start, start + bytes) (a counter or accumulator it allocated).
struct Fill {
  uintptr_t start;
  uint64_t bytes;
  size_t allocations_before;
};

// The bytes [start, end) of a tensor the call allocated while recorded.
struct Allocation {
  uintptr_t start, end;
  bool holds(uintptr_t address) const { return start <= address && address < end; }
};

struct Recording {
  std::vector<Launch> launches;
  std::vector<Allocation> allocations;  // in the order made
  std::vector<Fill> fills;              // in the order made
  const char* tainted = nullptr;  // why the call cannot be replayed
  std::string op;                 // the op that tainted it, if one did
};

thread_local Recording* recording = nullptr;

// The device whose tensors calls are planned for: the GPU. Tests on a machine without one plan CPU tensors
// and launch through a Python function that plays the kernel (``test_launcher``).
c10::DeviceType device_type = c10::DeviceType::CUDA;
py::object* test_launcher = nullptr;

bool on_device(const at::Tensor& t) { return t.device().type() == device_type; }

// Python's side of a recording: flag_gems.native's begin() and end().
py::object* py_begin = nullptr;
py::object* py_end = nullptr;

// Ops a recorded Python kernel may call: allocations, views and metadata. Anything else (a copy, a fill,
// another served op) did work a replay would not repeat.
const std::unordered_set<std::string>& allowed_ops() {
  static const std::unordered_set<std::string> ops = {
      "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
      "view", "_unsafe_view", "as_strided", "expand", "expand_as", "t",
      "transpose", "permute", "reshape", "_reshape_alias", "unsqueeze",
      "squeeze", "select", "slice", "narrow", "alias", "detach", "unbind", "split", "split_with_sizes",
      "chunk", "unflatten", "movedim", "swapaxes", "diagonal",
      "flatten", "view_as", "contiguous", "result_type", "can_cast",
      "promote_types", "item", "_debug_has_internal_overlap", "is_same_size", "size", "stride",
      "sym_size", "sym_stride", "numel", "dim"};
  return ops;
}

bool is_zero(const c10::IValue& v) {
  if (v.isInt()) return v.toInt() == 0;
  if (v.isBool()) return !v.toBool();
  if (v.isDouble()) {
    const double d = v.toDouble();
    return d == 0.0 && !std::signbit(d);  // -0.0 is not all zero bytes
  }
  return false;
}

// A zero fill of a dense tensor, noted as a step of the plan: whether the op is one (``zeros`` and friends
// allocate and fill; ``zero_`` and ``fill_`` with 0 fill). A later check requires the memory to be the
// call's own. A kernel of ours that serves the fill also reports its launch: the plan then repeats both,
// the same zeros twice.
bool zero_fill(const at::RecordFunction& fn, const char* bare, Recording& rec) {
  if (std::strcmp(bare, "zeros") == 0 || std::strcmp(bare, "zeros_like") == 0 || std::strcmp(bare, "new_zeros") == 0) {
    return true;  // an allocation and a zero_, each seen on its own
  }
  const bool zero = std::strcmp(bare, "zero_") == 0;
  if (!zero && std::strcmp(bare, "fill_") != 0) return false;
  const auto inputs = fn.inputs();
  if (inputs.empty() || !inputs[0].isTensor()) return false;
  if (!zero && (inputs.size() < 2 || !is_zero(inputs[1]))) return false;
  const at::Tensor& t = inputs[0].toTensor();
  if (!t.defined() || !on_device(t) || !t.is_non_overlapping_and_dense()) return false;
  if (t.numel() != 0) {  // dense, with strides never negative: its bytes start at its data pointer
    rec.fills.push_back({reinterpret_cast<uintptr_t>(t.const_data_ptr()),
                         static_cast<uint64_t>(t.numel() * t.element_size()), rec.allocations.size()});
  }
  return true;
}

// ATen's ops, named with or without their namespace (bindings name some calls bare).
const char* bare_name(const at::RecordFunction& fn) {
  const char* name = fn.name();
  return std::strncmp(name, "aten::", 6) == 0 ? name + 6 : name;
}

std::unique_ptr<at::ObserverContext> on_op(const at::RecordFunction& fn) {
  Recording* rec = recording;
  if (rec == nullptr) return nullptr;
  const char* name = fn.name();
  const char* bare = bare_name(fn);
  if (std::strcmp(bare, "_local_scalar_dense") == 0) {
    // A CPU scalar's value is part of the call's key; a device tensor's value is not.
    auto inputs = fn.inputs();
    if (inputs.empty() || !inputs[0].isTensor() || on_device(inputs[0].toTensor())) {
      rec->tainted = "read a device tensor's value";
    }
    return nullptr;
  }
  if (zero_fill(fn, bare, *rec)) return nullptr;
  if (allowed_ops().count(bare) == 0 && rec->tainted == nullptr) {
    rec->tainted = "called another op";
    rec->op = name;
  }
  return nullptr;
}

// After an op: an allocation's memory is the call's own, which its launches may pass from one to the next.
void on_op_end(const at::RecordFunction& fn, at::ObserverContext*) {
  Recording* rec = recording;
  if (rec == nullptr) return;
  const char* bare = bare_name(fn);
  if (std::strncmp(bare, "empty", 5) != 0 && std::strncmp(bare, "new_empty", 9) != 0) return;
  const auto& outputs = fn.outputs();
  if (outputs.empty() || !outputs[0].isTensor()) return;
  const at::Tensor& t = outputs[0].toTensor();
  if (!t.defined() || !t.has_storage() || t.storage().nbytes() == 0) return;
  const auto start = reinterpret_cast<uintptr_t>(t.storage().data());
  rec->allocations.push_back({start, start + t.storage().nbytes()});
}

uint64_t scalar_bits(const at::Tensor& t) {
  uint64_t bits = 0;
  std::memcpy(&bits, t.const_data_ptr(), std::min<size_t>(t.element_size(), sizeof(bits)));
  return bits;
}

// Appends what decides a call's plan; false when the call cannot have one.
bool encode(const c10::IValue& v, std::vector<int64_t>& key, std::vector<const at::Tensor*>& tensors) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!t.defined()) {
      key.push_back(1);
      return true;
    }
    if (t.layout() != c10::kStrided || t.is_conj() || t.is_neg()) return false;
    const c10::Device device = t.device();
    const int64_t dim = t.dim();
    key.push_back(2 | (static_cast<int64_t>(t.scalar_type()) << 8) |
                  (static_cast<int64_t>(device.type()) << 16) | ((static_cast<int64_t>(device.index()) + 1) << 24) |
                  (dim << 32));
    if (device.type() != device_type) {
      // A CPU 0-d tensor beside device tensors is a scalar: its value decides the launch.
      if (dim != 0 || !device.is_cpu()) return false;
      key.push_back(static_cast<int64_t>(scalar_bits(t)));
      return true;
    }
    const auto sizes = t.sizes();
    const auto strides = t.strides();
    key.insert(key.end(), sizes.begin(), sizes.end());
    key.insert(key.end(), strides.begin(), strides.end());
    const uintptr_t address = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    // Triton specialises on 16-byte alignment; the same address as an earlier tensor fixes which
    // argument a recorded pointer was.
    int64_t same = -1;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (reinterpret_cast<uintptr_t>(tensors[i]->const_data_ptr()) == address) {
        same = static_cast<int64_t>(i);
        break;
      }
    }
    key.push_back(((address & 15) == 0) | ((same + 1) << 1));
    tensors.push_back(&t);
    return true;
  }
  if (v.isNone()) {
    key.push_back(3);
  } else if (v.isDouble()) {
    const double d = v.toDouble();
    int64_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    key.push_back(4);
    key.push_back(bits);
  } else if (v.isInt()) {
    key.push_back(5);
    key.push_back(v.toInt());
  } else if (v.isBool()) {
    key.push_back(6 | (static_cast<int64_t>(v.toBool()) << 8));
  } else if (v.isIntList()) {
    const auto list = v.toIntList();
    key.push_back(7 | (static_cast<int64_t>(list.size()) << 8));
    for (int64_t i : list) key.push_back(i);
  } else if (v.isBoolList()) {
    const auto list = v.toBoolList();
    key.push_back(10 | (static_cast<int64_t>(list.size()) << 8));
    int64_t bits = 0;
    for (size_t i = 0; i < list.size(); ++i) bits |= static_cast<int64_t>(list.get(i)) << (i % 64);
    key.push_back(bits);
  } else if (v.isString()) {
    const auto& s = v.toStringRef();
    key.push_back(8 | (static_cast<int64_t>(s.size()) << 8));
    for (size_t i = 0; i < s.size(); i += 8) {
      int64_t chunk = 0;
      std::memcpy(&chunk, s.data() + i, std::min<size_t>(8, s.size() - i));
      key.push_back(chunk);
    }
  } else if (v.isDevice()) {
    const c10::Device d = v.toDevice();
    key.push_back(9 | (static_cast<int64_t>(d.type()) << 8) | ((static_cast<int64_t>(d.index()) + 1) << 16));
  } else {
    return false;
  }
  return true;
}

// The global state a Python kernel may read besides its arguments.
int64_t global_flags() {
  auto& ctx = at::globalContext();
  return static_cast<int64_t>(ctx.allowTF32CuBLAS()) | (static_cast<int64_t>(ctx.deterministicAlgorithms()) << 1) |
         (static_cast<int64_t>(c10::GradMode::is_enabled()) << 2) |
         (static_cast<int64_t>(c10::InferenceMode::is_enabled()) << 3) |
         (static_cast<int64_t>(c10::typeMetaToScalarType(c10::get_default_dtype())) << 8);
}

class Replay final : public c10::OperatorKernel {
 public:
  // ``aliases``: per return, the argument it is (an in-place or out= op's written tensor), or -1 for a new
  // tensor; ``written``: the arguments the op writes.
  // ``autograd``: the kernel sits at an Autograd key, where only calls that record no graph are replayed.
  Replay(std::shared_ptr<Table> table, c10::SafeKernelFunction python, size_t num_args, std::vector<int> aliases,
         std::vector<int> written, bool autograd)
      : table_(std::move(table)), python_(std::move(python)), num_args_(num_args),
        num_returns_(aliases.size()), aliases_(std::move(aliases)), written_(std::move(written)),
        autograd_(autograd) {}

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
    thread_local std::vector<int64_t> key;
    thread_local std::vector<const at::Tensor*> tensors;
    key.clear();
    tensors.clear();
    key.push_back(global_flags());
    const c10::IValue* args = stack->data() + stack->size() - num_args_;
    bool plannable = enabled.load(std::memory_order_relaxed) && recording == nullptr;
    for (size_t i = 0; plannable && i < num_args_; ++i) plannable = encode(args[i], key, tensors);
    c10::DeviceIndex index = -1;
    if (plannable) {
      bool found = false;
      for (const at::Tensor* t : tensors) {
        if (on_device(*t)) {
          index = t->device().index();
          found = true;
          break;
        }
      }
      // Kernels launch on the current device: a call for another one goes through Python, which switches.
      plannable = found && (test_launcher != nullptr ||
                            c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getDevice().index() == index);
      // A written tensor sharing memory with another argument (other than being it) is the Python kernel's
      // to judge: ATen refuses some such calls, and the key does not tell them apart.
      plannable = plannable && (written_.empty() || !overlapping(args));
      if (autograd_ && plannable && c10::GradMode::is_enabled()) {
        for (const at::Tensor* t : tensors) plannable = plannable && !t->requires_grad();
      }
    }
    if (!plannable) {
      python_.callBoxed(op, keys, stack);
      return;
    }
    std::shared_ptr<Plan> plan;
    {
      std::shared_lock<std::shared_mutex> read(table_->lock);
      auto found = table_->plans.find(key);
      if (found != table_->plans.end()) plan = found->second;
    }
    if (plan && plan->ready) {
      table_->hits.fetch_add(1, std::memory_order_relaxed);
      if (!plan->used.load(std::memory_order_relaxed) && !plan->used.exchange(true)) table_->reused.fetch_add(1);
      run(*plan, stack, index);
      return;
    }
    if ((plan && plan->failures >= 2) || table_->made.load() - table_->reused.load() > kUnusedPlansLimit) {
      python_.callBoxed(op, keys, stack);
      return;
    }
    record(op, keys, stack, key, plan ? plan->failures : 0);
  }

 private:
  void run(const Plan& plan, torch::jit::Stack* stack, c10::DeviceIndex index) {
    const c10::Device device(device_type, index);
    const auto bytes = at::TensorOptions().dtype(at::kByte).device(device);
    c10::SmallVector<at::Tensor, 2> outputs;
    for (const Output& o : plan.outputs) {
      outputs.push_back(o.defined ? at::empty_strided(o.sizes, o.strides, at::TensorOptions().dtype(o.dtype).device(device))
                                  : at::Tensor());
    }
    // The buffers live until the launches are queued: the caching allocator hands their memory out again
    // only to work that the stream runs later.
    at::Tensor buffers;
    uint64_t buffers_start = 0;
    if (plan.buffer_bytes != 0) {
      buffers = at::empty({static_cast<int64_t>(plan.buffer_bytes)}, bytes);
      buffers_start = reinterpret_cast<uint64_t>(buffers.const_data_ptr());
    }
    const c10::IValue* args = stack->data() + stack->size() - num_args_;
    for (const PlannedLaunch& launched : plan.launches) {
      if (launched.zero_bytes != 0) {
        zero(address_of(launched.params[0], args, outputs, buffers_start, plan), launched.zero_bytes, device);
        continue;
      }
      uint64_t values[kMaxParams + 2];
      void* params[kMaxParams + 2];
      const size_t n = launched.params.size();
      for (size_t i = 0; i < n; ++i) {
        values[i] = address_of(launched.params[i], args, outputs, buffers_start, plan);
        params[i] = &values[i];
      }
      // Triton's global scratch (memory each program may use during the launch) and profile scratch.
      at::Tensor scratch;
      values[n] = values[n + 1] = 0;
      if (launched.scratch != 0) {
        const uint64_t size =
            launched.scratch * launched.grid[0] * launched.grid[1] * launched.grid[2] + launched.scratch_align;
        scratch = at::empty({static_cast<int64_t>(size)}, bytes);
        const uint64_t start = reinterpret_cast<uint64_t>(scratch.const_data_ptr());
        values[n] = (start + launched.scratch_align - 1) / launched.scratch_align * launched.scratch_align;
      }
      params[n] = &values[n];
      params[n + 1] = &values[n + 1];
      if (test_launcher != nullptr) {
        py::gil_scoped_acquire gil;
        (*test_launcher)(launched.function, py::make_tuple(launched.grid[0], launched.grid[1], launched.grid[2]),
                         std::vector<uint64_t>(values, values + n + 1));
      } else {
        launch(launched, device, params);
      }
    }
    c10::SmallVector<c10::IValue, 2> results;
    size_t fresh = 0;
    for (int alias : aliases_) results.push_back(alias >= 0 ? args[alias] : c10::IValue(std::move(outputs[fresh++])));
    torch::jit::drop(*stack, num_args_);
    for (auto& r : results) stack->push_back(std::move(r));
  }

  // A parameter's value for this call: an address in its tensors, outputs or buffers, or the constant.
  static uint64_t address_of(const Param& p, const c10::IValue* args, const c10::SmallVector<at::Tensor, 2>& outputs,
                             uint64_t buffers_start, const Plan& plan) {
    switch (p.source) {
      case Source::kInput:
        return reinterpret_cast<uint64_t>(args[p.index].toTensor().const_data_ptr()) + p.bits;
      case Source::kOutput:
        return reinterpret_cast<uint64_t>(outputs[p.index].const_data_ptr()) + p.bits;
      case Source::kBuffer:
        return buffers_start + plan.buffer_starts[p.index] + p.bits;
      default:
        return p.bits;
    }
  }

  static void zero(uint64_t address, uint64_t bytes, const c10::Device& device) {
    if (test_launcher != nullptr) {
      std::memset(reinterpret_cast<void*>(address), 0, bytes);
      return;
    }
    const auto* guard = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    void* stream = guard->getStreamNativeHandle(guard->getStream(device));
    const int status = memset_d8()(address, 0, bytes, stream);
    TORCH_CHECK(status == 0, "flag_gems: a replayed zero fill failed (CUDA driver error ", status, ")");
  }

  static void launch(const PlannedLaunch& plan, const c10::Device& device, void** params) {
    const auto* guard = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    void* stream = guard->getStreamNativeHandle(guard->getStream(device));
    const int status = launch_kernel()(reinterpret_cast<void*>(plan.function), plan.grid[0], plan.grid[1],
                                       plan.grid[2], plan.threads, 1, 1, plan.shared, stream, params, nullptr);
    TORCH_CHECK(status == 0, "flag_gems: a replayed kernel launch failed (CUDA driver error ", status, ")");
  }

  void record(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack,
              const std::vector<int64_t>& key, int failures) {
    std::vector<int64_t> saved_key = key;
    std::vector<at::Tensor> inputs(num_args_);
    std::vector<bool> is_tensor(num_args_, false);
    const c10::IValue* args = stack->data() + stack->size() - num_args_;
    for (size_t i = 0; i < num_args_; ++i) {
      if (args[i].isTensor() && args[i].toTensor().defined()) {
        inputs[i] = args[i].toTensor();
        is_tensor[i] = true;
      }
    }
    if (py_begin == nullptr) {  // the module was loaded without flag_gems.native (no launch reports)
      python_.callBoxed(op, keys, stack);
      return;
    }
    {
      py::gil_scoped_acquire gil;
      (*py_begin)();
    }
    Recording rec;
    recording = &rec;
    auto handle = at::addThreadLocalCallback(
        at::RecordFunctionCallback(on_op, on_op_end).needsInputs(true).needsOutputs(true).scopes(
            {at::RecordScope::FUNCTION}));
    try {
      python_.callBoxed(op, keys, stack);
    } catch (...) {
      finish(handle);
      throw;
    }
    finish(handle);
    auto plan = std::make_shared<Plan>();
    const char* refusal = plan_from(rec, *stack, inputs, is_tensor, *plan);
    plan->ready = refusal == nullptr;
    plan->failures = plan->ready ? 0 : failures + 1;
    if (plan->ready) table_->made.fetch_add(1);
    std::unique_lock<std::shared_mutex> write(table_->lock);
    if (!plan->ready) table_->last_refusal = rec.op.empty() ? refusal : std::string(refusal) + " " + rec.op;
    if (table_->plans.size() >= kMaxPlans) {
      table_->plans.clear();
      table_->made = table_->reused = 0;
    }
    table_->plans[std::move(saved_key)] = std::move(plan);
  }

  static void finish(at::CallbackHandle handle) {
    at::removeCallback(handle);
    recording = nullptr;
    py::gil_scoped_acquire gil;
    (*py_end)();
  }

  // Fills ``plan`` from what the Python kernel did; why it cannot be replayed, or nullptr.
  const char* plan_from(const Recording& rec, const torch::jit::Stack& stack, const std::vector<at::Tensor>& inputs,
                        const std::vector<bool>& is_tensor, Plan& plan) const {
    constexpr size_t kNone = static_cast<size_t>(-1);
    if (rec.tainted != nullptr) return rec.tainted;
    if (rec.launches.size() > kMaxLaunches) return "launched too many kernels";
    if (stack.size() < num_returns_) return "returned too little";
    const c10::IValue* returned = stack.data() + stack.size() - num_returns_;
    std::vector<size_t> out_allocation;  // per new result: the allocation that made it
    bool all_empty = true;
    for (size_t j = 0; j < num_returns_; ++j) {
      if (!returned[j].isTensor()) return "returned something else than a tensor";
      const at::Tensor& t = returned[j].toTensor();
      if (aliases_[j] >= 0) {
        if (!is_tensor[aliases_[j]] || !t.is_same(inputs[aliases_[j]])) return "returned another tensor than its output";
        all_empty = all_empty && t.numel() == 0;
        continue;
      }
      if (!t.defined()) {
        plan.outputs.push_back({{}, {}, c10::ScalarType::Undefined, false});
        out_allocation.push_back(kNone);
        continue;
      }
      if (!on_device(t) || t.storage_offset() != 0 || t.layout() != c10::kStrided) {
        return "returned a tensor it did not allocate on the device";
      }
      for (size_t i = 0; i < inputs.size(); ++i) {
        if (is_tensor[i] && inputs[i].is_alias_of(t)) return "returned a view of an argument";
      }
      // A replay allocates just the result's elements: a result that is the front of a larger buffer, whose
      // rest the launches also use, cannot be replayed.
      if (t.storage().nbytes() != at::detail::computeStorageNbytes(t.sizes(), t.strides(), t.element_size())) {
        return "returned part of a larger buffer";
      }
      size_t made = kNone;
      const auto start = reinterpret_cast<uintptr_t>(t.const_data_ptr());
      for (size_t a = rec.allocations.size(); t.numel() != 0 && a-- > 0;) {
        if (rec.allocations[a].start == start) {
          made = a;
          break;
        }
      }
      if (t.numel() != 0 && made == kNone) return "returned a tensor it did not allocate on the device";
      all_empty = all_empty && t.numel() == 0;
      plan.outputs.push_back({t.sizes().vec(), t.strides().vec(), t.scalar_type(), true});
      out_allocation.push_back(made);
    }
    if (!rec.fills.empty() && test_launcher == nullptr && memset_d8() == nullptr) return "zero-filled memory";
    if (rec.launches.empty() && rec.fills.empty()) {
      // Nothing launched is right only when there is nothing to compute.
      return all_empty ? nullptr : "launched nothing";
    }
    std::vector<size_t> buffer_allocation;  // per buffer: the allocation it stands for
    // Memory the call allocated: the latest allocation among the first ``before`` that holds [address,
    // address + bytes) (an earlier one there was freed), as a result or a buffer of the plan's own.
    const auto own = [&](uintptr_t address, uint64_t bytes, size_t before, Param& param) {
      for (size_t a = before; a-- > 0;) {
        const Allocation& made = rec.allocations[a];
        if (!made.holds(address)) continue;
        if (address + bytes > made.end) return false;
        const uint64_t offset = address - made.start;
        const auto result = std::find(out_allocation.begin(), out_allocation.end(), a);
        if (result != out_allocation.end()) {
          param = {Source::kOutput, static_cast<uint32_t>(result - out_allocation.begin()), offset};
          return true;
        }
        auto buffer = std::find(buffer_allocation.begin(), buffer_allocation.end(), a);
        if (buffer == buffer_allocation.end()) buffer = buffer_allocation.insert(buffer_allocation.end(), a);
        param = {Source::kBuffer, static_cast<uint32_t>(buffer - buffer_allocation.begin()), offset};
        return true;
      }
      return false;
    };
    size_t fills = 0;  // zero fills planned so far: each goes before the first launch made after it
    const auto plan_fills = [&](size_t until) {
      for (; fills < until; ++fills) {
        const Fill& fill = rec.fills[fills];
        PlannedLaunch zeroed;
        zeroed.zero_bytes = fill.bytes;
        zeroed.params.emplace_back();
        if (!own(fill.start, fill.bytes, fill.allocations_before, zeroed.params.back())) return false;
        plan.launches.push_back(std::move(zeroed));
      }
      return true;
    };
    for (const Launch& launch : rec.launches) {
      if (launch.bits.size() > kMaxParams) return "too many kernel parameters";
      // A fill of memory kept from outside the call, or of an argument, is work a replay would not repeat.
      if (!plan_fills(launch.fills_before)) return "filled memory it did not allocate";
      PlannedLaunch planned;
      planned.function = launch.function;
      std::copy(launch.grid, launch.grid + 3, planned.grid);
      planned.threads = launch.threads;
      planned.shared = launch.shared;
      planned.scratch = launch.scratch;
      planned.scratch_align = launch.scratch_align;
      for (size_t i = 0; i < launch.bits.size(); ++i) {
        const uint64_t bits = launch.bits[i];
        if (!launch.pointer[i] || bits == 0) {
          planned.params.push_back({Source::kConstant, 0, bits});
          continue;
        }
        Param param;
        if (own(bits, 1, launch.allocations_before, param)) {
          planned.params.push_back(param);
          continue;
        }
        // Else an argument: its first element, or one inside it (half of a glu's input) when no other
        // argument holds that address.
        int found = -1;
        bool ambiguous = false;
        for (size_t a = 0; a < inputs.size() && found < 0; ++a) {
          if (is_tensor[a] && on_device(inputs[a]) && reinterpret_cast<uintptr_t>(inputs[a].const_data_ptr()) == bits) {
            found = static_cast<int>(a);
          }
        }
        if (found < 0) {
          for (size_t a = 0; a < inputs.size(); ++a) {
            if (!is_tensor[a] || !on_device(inputs[a])) continue;
            const auto bytes = span(inputs[a]);
            if (bytes.first < bits && bits < bytes.second) {
              ambiguous = ambiguous || found >= 0;
              found = static_cast<int>(a);
            }
          }
        }
        if (ambiguous) return "launched on memory that several arguments hold";
        // Memory kept from outside the call (a cached buffer) would be shared by replays running apart.
        if (found < 0) return "launched on memory it did not allocate";
        const uint64_t offset = bits - reinterpret_cast<uintptr_t>(inputs[found].const_data_ptr());
        planned.params.push_back({Source::kInput, static_cast<uint32_t>(found), offset});
      }
      plan.launches.push_back(std::move(planned));
    }
    if (!plan_fills(rec.fills.size())) return "filled memory it did not allocate";
    for (size_t b : buffer_allocation) {
      const Allocation& made = rec.allocations[b];
      plan.buffer_starts.push_back(plan.buffer_bytes);
      plan.buffer_bytes += (made.end - made.start + kBufferAlign - 1) / kBufferAlign * kBufferAlign;
    }
    // Every result the call computes must be a parameter of a launch: a result filled some other way (a
    // tensor kept from an earlier call) would come back uninitialised.
    size_t fresh = 0;
    for (size_t j = 0; j < num_returns_; ++j) {
      const at::Tensor& t = returned[j].toTensor();
      const bool is_fresh = aliases_[j] < 0;
      const Source source = is_fresh ? Source::kOutput : Source::kInput;
      const uint32_t index = static_cast<uint32_t>(is_fresh ? fresh++ : aliases_[j]);
      if (!t.defined() || t.numel() == 0) continue;
      bool written = false;
      for (const PlannedLaunch& launched : plan.launches) {
        for (const Param& p : launched.params) written = written || (p.source == source && p.index == index);
      }
      if (!written) return "returned a tensor its launch did not take";
    }
    return nullptr;
  }

  // [first, last) bytes a tensor's elements span.
  static std::pair<uintptr_t, uintptr_t> span(const at::Tensor& t) {
    if (t.numel() == 0) return {0, 0};
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    const uintptr_t first = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    return {first, first + static_cast<uintptr_t>((last + 1) * t.element_size())};
  }

  bool overlapping(const c10::IValue* args) const {
    for (int w : written_) {
      if (!args[w].isTensor()) return true;
      const at::Tensor& out = args[w].toTensor();
      const auto written = span(out);
      if (written.first == written.second) continue;
      for (size_t i = 0; i < num_args_; ++i) {
        if (static_cast<int>(i) == w || !args[i].isTensor()) continue;
        const at::Tensor& t = args[i].toTensor();
        if (!t.defined() || !on_device(t)) continue;
        if (t.const_data_ptr() == out.const_data_ptr() && t.sizes() == out.sizes() && t.strides() == out.strides()) {
          continue;  // the same elements: an in-place op reading its own output (x.add_(x))
        }
        const auto read = span(t);
        if (read.first < written.second && written.first < read.second) return true;
      }
    }
    return false;
  }

  std::shared_ptr<Table> table_;
  c10::SafeKernelFunction python_;
  size_t num_args_, num_returns_;
  std::vector<int> aliases_, written_;
  bool autograd_;
};

// Registering in front of our own Python kernel is the point: torch's warning about overriding a kernel
// says nothing to the user here.
class Silent final : public c10::WarningHandler {
 public:
  void process(const c10::Warning&) override {}
};

// The kernels of one registration handle: dropping it gives the dispatcher back what was there before.
class Library {
 public:
  explicit Library(const std::string& key) : key_(c10::parseDispatchKey(key)) {}

  // Puts a replaying kernel in front of the kernel registered now for ``name`` at this key; false for an
  // op with results of other kinds than new tensors and the tensors it writes.
  bool install(const std::string& qualified) {
    // "add.Tensor" is ATen's; "ns::op.overload" another namespace's.
    const auto colons = qualified.find("::");
    const std::string ns = colons == std::string::npos ? "aten" : qualified.substr(0, colons);
    const std::string name = colons == std::string::npos ? qualified : qualified.substr(colons + 2);
    auto dot = name.find('.');
    const std::string base = ns + "::" + name.substr(0, dot);
    const std::string overload = dot == std::string::npos ? "" : name.substr(dot + 1);
    auto op = c10::Dispatcher::singleton().findSchema({base, overload});
    if (!op) return false;
    const auto& schema = op->schema();
    // A random op's Python kernel reads the generator's state, which no signature holds.
    if (schema.is_vararg() || schema.is_varret() || op->hasTag(at::Tag::nondeterministic_seeded)) return false;
    std::vector<int> written, aliases;
    const auto& arguments = schema.arguments();
    for (size_t i = 0; i < arguments.size(); ++i) {
      c10::TypePtr type = arguments[i].type();
      if (type->kind() == c10::TypeKind::OptionalType) type = type->castRaw<c10::OptionalType>()->getElementType();
      if (type->kind() == c10::TypeKind::GeneratorType) return false;
      const auto* alias = arguments[i].alias_info();
      if (alias == nullptr) continue;
      if (arguments[i].type()->kind() != c10::TypeKind::TensorType) return false;
      if (alias->isWrite()) written.push_back(static_cast<int>(i));
    }
    for (const auto& r : schema.returns()) {
      if (r.type()->kind() != c10::TypeKind::TensorType) return false;
      int alias = -1;
      if (r.alias_info() != nullptr) {
        for (int w : written) {
          if (*arguments[w].alias_info() == *r.alias_info()) alias = w;
        }
        if (alias < 0) return false;  // a view of an argument
      }
      aliases.push_back(alias);
    }
    // At an Autograd key an in-place op also bumps its tensor's version, which a replay would not.
    const bool autograd = c10::isIncludedInAlias(key_, c10::DispatchKey::Autograd);
    if ((autograd && !written.empty()) || !op->hasKernelForDispatchKey(key_)) return false;
    auto python = op->getComputedKernelForDispatchKey(key_);
    Silent silent;
    c10::WarningUtils::WarningHandlerGuard quiet(&silent);
    auto& library = libraries_[ns];
    if (!library) library = std::make_unique<torch::Library>(torch::Library::IMPL, ns, key_, "flag_gems", 0);
    library->impl(name.c_str(), torch::CppFunction::makeFromBoxedFunctor(std::make_unique<Replay>(
                                    table_for(qualified), std::move(python), arguments.size(), std::move(aliases),
                                    std::move(written), autograd)));
    return true;
  }

  void reset() { libraries_.clear(); }

 private:
  c10::DispatchKey key_;
  std::unordered_map<std::string, std::unique_ptr<torch::Library>> libraries_;
};

uint64_t pack(const std::string& type, const py::handle& value, bool& pointer) {
  pointer = type[0] == '*';
  if (pointer) return value.is_none() ? 0 : value.cast<uint64_t>();
  if (type == "fp32" || type == "f32") {
    const float f = static_cast<float>(value.cast<double>());
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    return bits;
  }
  if (type == "fp64") {
    const double d = value.cast<double>();
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    return bits;
  }
  if (type == "i1" || type == "i8" || type == "i16" || type == "i32" || type == "i64" || type == "u1" ||
      type == "u8" || type == "u16" || type == "u32" || type == "u64") {
    return static_cast<uint64_t>(value.cast<int64_t>());
  }
  throw std::invalid_argument("unplannable parameter type " + type);
}

// flag_gems.launch reports a launch made while this thread records.
void record_launch(uint64_t function, unsigned gx, unsigned gy, unsigned gz, unsigned warps, unsigned ctas,
                   unsigned shared, bool special, uint64_t scratch, uint64_t scratch_align,
                   const std::vector<std::string>& types, const py::list& values) {
  Recording* rec = recording;
  if (rec == nullptr) return;
  if (rec->tainted != nullptr) return;  // the first reason is the one reported
  if (ctas != 1 || special || types.size() != values.size() || scratch_align == 0 || scratch_align > 4096) {
    rec->tainted = "launched a kernel in a special mode (clusters, cooperative, profiled)";
    return;
  }
  Launch launch{function, {gx, gy, gz}, 32 * warps, shared, scratch, scratch_align, {}, {}, rec->allocations.size(),
                rec->fills.size()};
  try {
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] == "constexpr") continue;
      bool pointer = false;
      launch.bits.push_back(pack(types[i], values[i], pointer));
      launch.pointer.push_back(pointer);
    }
  } catch (const std::exception&) {
    rec->tainted = "launched a kernel with a parameter type not replayed";
    return;
  }
  rec->launches.push_back(std::move(launch));
}

void taint(const std::string& why) {
  thread_local std::unordered_set<std::string> reasons;  // the reasons outlive the recording
  if (recording != nullptr && recording->tainted == nullptr) recording->tainted = reasons.insert(why).first->c_str();
}

void clear() {
  std::lock_guard<std::mutex> guard(tables_lock);
  for (auto& entry : tables) {
    std::unique_lock<std::shared_mutex> write(entry.second->lock);
    entry.second->plans.clear();
    entry.second->made = 0;
    entry.second->reused = 0;
    entry.second->hits = 0;
    entry.second->last_refusal.clear();
  }
}

py::dict stats() {
  py::dict out;
  std::lock_guard<std::mutex> guard(tables_lock);
  for (auto& entry : tables) {
    std::shared_lock<std::shared_mutex> read(entry.second->lock);
    int64_t ready = 0, gave_up = 0;
    for (auto& plan : entry.second->plans) {
      ready += plan.second->ready;
      gave_up += !plan.second->ready && plan.second->failures >= 2;
    }
    out[py::str(entry.first)] = py::make_tuple(entry.second->hits.load(), ready, gave_up, entry.second->last_refusal);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_gems_replay, m) {
  py::class_<Library>(m, "Library")
      .def(py::init<const std::string&>())
      .def("install", &Library::install)
      .def("reset", &Library::reset);
  m.def("record_launch", &record_launch);
  m.def("taint", &taint);
  m.def("clear", &clear);
  m.def("stats", &stats);
  m.def("set_enabled", [](bool on) { enabled.store(on); });
  m.def("set_hooks", [](py::object begin, py::object end) {
    delete py_begin;
    delete py_end;
    py_begin = new py::object(std::move(begin));
    py_end = new py::object(std::move(end));
  });
  m.def("launch_available", [] { return launch_kernel() != nullptr; });
  // Tests without a GPU: plan CPU tensors and launch through ``launcher(function, grid, parameters)``
  // (None: the GPU again).
  m.def("set_test_launcher", [](py::object launcher) {
    delete test_launcher;
    test_launcher = launcher.is_none() ? nullptr : new py::object(std::move(launcher));
    device_type = test_launcher == nullptr ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  });
}
