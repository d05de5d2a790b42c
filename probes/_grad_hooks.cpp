// SignalProbe's gradient hooks in C++, for CPU tensors.
//
// The probe measures the gradient at a tap by a pre-hook on the autograd node that made the
// tapped tensor. Made and called through Python, such a hook cost ~12 us of the interpreter
// per tensor (measured at ResNet-1001, 2-core CPU: ~3.7 us to register it, of which ~2 us make
// the node's Python object; ~1.6 us for the engine to call into Python; ~7 us of the hook's
// own Python), ~1,000 times a V1 step. Here a hook is registered and runs without Python:
//
// * `Recorder.hook(t, slot)` adds a pre-hook to `t.grad_fn()` for output `t.output_nr()`;
// * when the gradient g arrives, the hook (1) recognises a gradient it has seen at an earlier
//   tap of this step -- the same tensor, unchanged (version counter), held by a weak reference
//   so that autograd may still accumulate into it in place -- and records the slot as an
//   alias; (2) else, if the slot has a kept layout (sizes, strides; fp32, CPU) and buffers,
//   reads g once by the C module's kernel (`_fastsums.c`, through the capsule `SUMS_INTO`)
//   into them; (3) else calls back the probe's Python (`slow(slot, g)`, with the GIL), which
//   measures g as the Python hooks do and returns what to keep for the next steps, or None.
//
// The Python side (probes/signal_probe.py) owns the buffers; a kept entry holds tensors
// (views into them), so a hook that fires after the probe moved or dropped its buffers writes
// into memory that is still allocated, never into freed memory. Which slots were measured or
// aliased is handed back by `take()` at the probe's step().
#include <torch/extension.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>

#include <deque>
#include <memory>
#include <stdexcept>
#include <vector>

namespace py = pybind11;
using torch::autograd::variable_list;

// _fastsums.c's sums_into: channel sums, (channel sums of squares,) sum of squares and sign
// counts of the blocks [outer][C][inner] of floats at x; 0, or -1 when out of memory.
typedef int (*SumsInto)(const float *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, float *s1c,
                        float *s2c, float *scalars, int threads, const float *h, float *energy);

static bool reads_on = true;   // bench_probes.reads_skipped() turns the reads off

struct Kept {
    std::vector<int64_t> sizes, strides;
    int64_t outer = 0, C = 0, inner = 0;
    at::Tensor s1c, row;   // views into the probe's buffers: channel sums, the 3 scalars
};

struct Recent {
    c10::weak_intrusive_ptr<c10::TensorImpl> ref;
    int64_t version;
    int slot;
};

class Recorder {
  public:
    Recorder(int n_slots, py::object slow, py::capsule sums)
        : kept_(n_slots), source_(n_slots), seen_(n_slots, 0), slow_(std::move(slow)),
          sums_(reinterpret_cast<SumsInto>(sums.get_pointer())) {
        for (int i = 0; i < n_slots; i++)
            source_[i] = i;
    }

    ~Recorder() {   // the last hook may go in the autograd engine's thread: drop the callback with the GIL
        if (!Py_IsInitialized()) {
            slow_.release();
            return;
        }
        py::gil_scoped_acquire gil;
        slow_ = py::object();
    }

    void on_grad(int slot, const at::Tensor &g) {
        c10::TensorImpl *impl = g.unsafeGetTensorImpl();
        int64_t version = g._version();
        for (const Recent &r : recent_) {
            auto alive = r.ref.lock();
            if (alive.get() == impl && r.version == version) {
                source_[slot] = r.slot;
                seen_[slot] = 1;
                return;
            }
        }
        Kept &k = kept_[slot];
        if (k.s1c.defined() && g.device().is_cpu() && g.scalar_type() == at::kFloat &&
            g.sizes().equals(k.sizes) && g.strides().equals(k.strides)) {
            if (reads_on && sums_(g.const_data_ptr<float>(), k.outer, k.C, k.inner, k.s1c.data_ptr<float>(),
                                  nullptr, k.row.data_ptr<float>(), at::get_num_threads(), nullptr, nullptr) != 0)
                throw std::runtime_error("SignalProbe gradient hook: out of memory");
        } else {
            py::gil_scoped_acquire gil;
            py::object keep = slow_(slot, g);
            k = Kept();
            if (!keep.is_none()) {
                auto t = keep.cast<py::tuple>();
                k.sizes = g.sizes().vec();
                k.strides = g.strides().vec();
                k.outer = t[0].cast<int64_t>();
                k.C = t[1].cast<int64_t>();
                k.inner = t[2].cast<int64_t>();
                k.s1c = t[3].cast<at::Tensor>();
                k.row = t[4].cast<at::Tensor>();
            }
        }
        source_[slot] = slot;
        seen_[slot] = 1;
        recent_.push_front({c10::weak_intrusive_ptr<c10::TensorImpl>(g.getIntrusivePtr()), version, slot});
        if (recent_.size() > 3)
            recent_.pop_back();
    }

    // Forget what slot keeps (its buffers moved), or every slot's.
    void forget(int slot) { kept_.at(slot) = Kept(); }
    void forget_all() {
        for (Kept &k : kept_)
            k = Kept();
    }

    // (slots seen this step, the slot each was measured as), and a fresh step.
    std::pair<std::vector<int>, std::vector<int>> take() {
        std::vector<int> seen, source;
        for (size_t i = 0; i < seen_.size(); i++)
            if (seen_[i]) {
                seen.push_back((int)i);
                source.push_back(source_[i]);
                seen_[i] = 0;
                source_[i] = (int)i;
            }
        recent_.clear();
        return {seen, source};
    }

  private:
    std::vector<Kept> kept_;
    std::vector<int> source_;
    std::vector<uint8_t> seen_;
    std::deque<Recent> recent_;
    py::object slow_;
    SumsInto sums_;
};

struct GradPreHook : torch::autograd::FunctionPreHook {
    GradPreHook(std::shared_ptr<Recorder> rec, int slot, uint32_t output)
        : rec(std::move(rec)), slot(slot), output(output) {}
    variable_list operator()(const variable_list &grads) override {
        if (output < grads.size() && grads[output].defined())
            rec->on_grad(slot, grads[output]);
        return grads;
    }
    std::shared_ptr<Recorder> rec;
    int slot;
    uint32_t output;
};

// Recorder is held by a shared_ptr from Python and from every hook it registered, so a graph
// that outlives the probe still has a live recorder to call.
static bool hook(const std::shared_ptr<Recorder> &rec, const at::Tensor &t, int slot) {
    const auto &node = t.grad_fn();
    if (!node)
        return false;
    node->add_pre_hook(std::make_unique<GradPreHook>(rec, slot, t.output_nr()));
    return true;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "SignalProbe's gradient hooks in C++ (CPU tensors)";
    py::class_<Recorder, std::shared_ptr<Recorder>>(m, "Recorder")
        .def(py::init<int, py::object, py::capsule>(), py::arg("n_slots"), py::arg("slow"), py::arg("sums"))
        .def("hook", &hook, py::arg("t"), py::arg("slot"))
        .def("forget", &Recorder::forget)
        .def("forget_all", &Recorder::forget_all)
        .def("take", &Recorder::take);
    m.def("set_reads", [](bool on) { reads_on = on; }, "bench_probes.reads_skipped: the hooks skip their reads");
}
