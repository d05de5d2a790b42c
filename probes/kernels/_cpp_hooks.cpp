// SignalProbe's taps and gradient hooks in C++, for CPU tensors.
//
// A probed step of ResNet-1001 passes ~1,665 taps and registers ~1,000 gradient hooks. In
// Python a tap cost ~5 us of interpreter time besides its read, and a gradient hook ~12 us
// (measured, 2-core CPU: ~3.7 us to register it, of which ~2 us make the node's Python object;
// ~1.6 us for the engine to call into Python; ~7 us of the hook's own Python). Here both run
// without the interpreter once a tap's tensor layout is known:
//
// * `Recorder.tap_function(slot)` is what a Tap module's forward becomes while the probe is in
//   (after the probe's first step, which lays the buffers out in Python). It does what the
//   Python tap (`probes/recorder.py`, `TapRecorder.on_tap`) does -- recognise the tensor of the previous tap (measured once),
//   remember a unit's shortcut and sum for the cut statistic, read the tensor (and at a
//   unit's output its shortcut, in the same pass), hook its gradient -- and hands the tensor to
//   Python where it cannot: a layout it has not kept, a tensor not on the CPU, gradient
//   checkpointing's recomputation inside the backward pass.
// * `Recorder.hook(t, slot)` adds a pre-hook to `t.grad_fn()`. When the gradient g arrives the
//   hook recognises a gradient seen at an earlier tap of this step (the same tensor, unchanged:
//   version counter; held by a weak reference, so autograd may still accumulate into it in
//   place) or reads g by its kept layout, or else hands it to Python.
// * Reads are the C module's kernel (`_fastsums.c`, through its capsule `SUMS_INTO`).
//
// The Python side (probes/recorder.py) owns the buffers and the statistics; a kept layout
// holds tensors (views into the buffers), so a hook that fires after the probe moved or dropped
// its buffers writes into memory that is still allocated. What C++ hands back to Python goes
// through one table of callbacks (`Callbacks` below; the Python side's `CppCallbacks`), each
// holding only a weak reference to the probe's recorder (a graph that outlives its probe keeps
// hooks, not the probe). Which slots were measured, and as which slot, is handed back by
// `take()` at `step()`.
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/extension.h>

#include <array>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

namespace py = pybind11;
using torch::autograd::variable_list;

// _fastsums.c's sums_into: channel sums, (channel sums of squares,) sum of squares and sign
// counts of the blocks [outer][C][inner] of floats at x, and the energy of h where x == 0;
// 0, or -1 when out of memory.
typedef int (*SumsInto)(const float *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, float *s1c,
                        float *s2c, float *scalars, int threads, const float *h, float *energy);

static bool reads_on = true;   // bench_probes.reads_skipped() turns the reads off

enum { FORWARD = 0, BACKWARD = 1 };
enum { SHORTCUT = 1, SUM = 3, OUTPUT = 4, PER_UNIT = 5 };   // resnet_lab.taps.TAP_NAMES order

// How one slot's tensor is read: its layout, and the views it is read into.
struct Kept {
    std::vector<int64_t> sizes, strides;
    bool masked = false;   // read together with the unit's shortcut (laid out alike)
    int64_t outer = 0, C = 0, inner = 0;
    at::Tensor s1c, row;   // channel sums, the 3 scalars
};

// Per direction: the kept layouts, and which slots were measured this step (as which slot).
struct Direction {
    explicit Direction(int n) : kept(n), source(n), seen(n, 0) {
        for (int i = 0; i < n; i++)
            source[i] = i;
    }
    void mark(int slot, int as) {
        source[slot] = as;
        seen[slot] = 1;
    }
    std::vector<Kept> kept;
    std::vector<int> source;
    std::vector<uint8_t> seen;
};

struct Recent {
    c10::weak_intrusive_ptr<c10::TensorImpl> ref;
    int64_t version;
    int slot;
};

static bool same_layout(const at::Tensor &t, const Kept &k) {
    return k.s1c.defined() && t.scalar_type() == at::kFloat && t.device().is_cpu() &&
           t.sizes().equals(k.sizes) && t.strides().equals(k.strides);
}

static bool laid_out_alike(const at::Tensor &h, const at::Tensor &t) {
    return h.scalar_type() == at::kFloat && h.device().is_cpu() && h.sizes().equals(t.sizes()) &&
           h.strides().equals(t.strides());
}

// What the C++ taps and hooks hand back to Python: the six entries of the Python side's table
// (probes/recorder.py, CppCallbacks), looked up by name once, here.
struct Callbacks {
    explicit Callbacks(const py::object &table)
        : begin_step(table.attr("begin_step")), on_tap(table.attr("on_tap")),
          hook_grad(table.attr("hook_grad")), masked_energy(table.attr("masked_energy")),
          measure_forward(table.attr("measure_forward")), measure_grad(table.attr("measure_grad")) {}
    // begin_step(): a probed step's first tap (the collector pauses).
    // on_tap(slot, x): a tap's tensor that C++ does not take (not on the CPU; gradient
    //   checkpointing's recomputation in the backward pass).
    // hook_grad(slot, x): hook the gradient of a leaf (a tensor hook, in Python).
    // masked_energy(h, x, unit): the cut numerator alone, where the output tap is not measured.
    // measure_forward(slot, x, h or None, unit), measure_grad(slot, g): a tensor of a layout not
    //   kept: measured in Python, which returns what to keep to read the next ones (or None).
    py::object begin_step, on_tap, hook_grad, masked_energy, measure_forward, measure_grad;

    void release() {   // with the GIL held
        for (py::object *f : {&begin_step, &on_tap, &hook_grad, &masked_energy, &measure_forward, &measure_grad})
            *f = py::object();
    }
    void leak() {      // the interpreter is gone: drop the references without touching Python
        for (py::object *f : {&begin_step, &on_tap, &hook_grad, &masked_energy, &measure_forward, &measure_grad})
            f->release();
    }
};

class Recorder : public std::enable_shared_from_this<Recorder> {
  public:
    // measured: per tap position, whether the probe measures it; cut_num: the per-unit cut
    // numerators (CPU fp32) or None; callbacks: the Python side's table (`Callbacks`).
    Recorder(int n_slots, std::vector<bool> measured, std::optional<at::Tensor> cut_num,
             const py::object &callbacks, py::capsule sums)
        : dir_{{Direction(n_slots), Direction(n_slots)}}, measured_(std::move(measured)),
          cut_num_(cut_num.value_or(at::Tensor())), cb_(callbacks),
          sums_(reinterpret_cast<SumsInto>(sums.get_pointer())) {}

    // The last hook may go in the autograd engine's thread: drop what may hold Python objects
    // (the callback; tensors whose Python objects torch may keep alive) with the GIL.
    ~Recorder() {
        if (!Py_IsInitialized()) {
            cb_.leak();
            return;
        }
        py::gil_scoped_acquire gil;
        cb_.release();
        for (Direction &d : dir_)
            d.kept.clear();
        cut_num_.reset();
        clear_step();
    }

    // ---- forward: a Tap's forward ---------------------------------------------------------
    py::object tap(int slot, py::object x) {
        if (!THPVariable_Check(x.ptr()))
            return x;
        const at::Tensor &t = THPVariable_Unpack(x.ptr());
        if (!started_) {               // the probe's first tap of the step (collector paused)
            started_ = true;
            cb_.begin_step();
        }
        if (!t.device().is_cpu() || torch::autograd::get_current_graph_task_id() != -1) {
            cb_.on_tap(slot, x);       // not a CPU tensor, or gradient checkpointing's recomputation
            return x;
        }
        int tap = slot % PER_UNIT, unit = slot / PER_UNIT;
        at::Tensor h;                  // at an output tap: the unit's shortcut, when its cut is wanted
        if (cut_num_.defined()) {
            if (tap == SHORTCUT) {
                unit_h_ = t;
            } else if (tap == SUM) {
                unit_y_ = t;
            } else if (tap == OUTPUT && unit_h_.defined()) {
                if (unit_y_.defined() && t.is_same(unit_y_))
                    cut_num_.data_ptr<float>()[unit] = 0.f;   // f is the identity: it cuts nothing
                else
                    h = unit_h_;
                unit_h_.reset();
                unit_y_.reset();
            }
        }
        if (measured_[tap]) {
            if (last_.defined() && t.is_same(last_)) {   // the previous tap's tensor
                dir_[FORWARD].mark(slot, last_slot_);
                if (t.requires_grad())
                    dir_[BACKWARD].mark(slot, last_slot_);
            } else {
                measure_forward(slot, x, t, h, unit);
                h.reset();
                last_ = t;
                last_slot_ = slot;
                if (t.requires_grad() && !hook(t, slot))
                    cb_.hook_grad(slot, x);             // a leaf: a tensor hook, in Python
            }
        }
        if (h.defined())               // the output tap is not measured: its cut alone
            cb_.masked_energy(h, x, unit);
        return x;
    }

    // ---- backward: a gradient hook ----------------------------------------------------------
    bool hook(const at::Tensor &t, int slot);

    void on_grad(int slot, const at::Tensor &g) {
        c10::TensorImpl *impl = g.unsafeGetTensorImpl();
        int64_t version = g._version();
        Direction &d = dir_[BACKWARD];
        for (const Recent &r : recent_) {
            auto alive = r.ref.lock();
            if (alive.get() == impl && r.version == version) {
                d.mark(slot, r.slot);
                return;
            }
        }
        Kept &k = d.kept[slot];
        if (same_layout(g, k)) {
            read(g, k, nullptr, nullptr, false);
        } else {
            py::gil_scoped_acquire gil;
            keep(k, g, false, cb_.measure_grad(slot, g));
        }
        d.mark(slot, slot);
        recent_.push_front({c10::weak_intrusive_ptr<c10::TensorImpl>(g.getIntrusivePtr()), version, slot});
        if (recent_.size() > 3)
            recent_.pop_back();
    }

    // ---- the probe's side -------------------------------------------------------------------
    py::object tap_function(int slot) {
        auto self = shared_from_this();
        return py::cpp_function([self, slot](py::object x) { return self->tap(slot, std::move(x)); });
    }

    void forget(int direction, int slot) { dir_.at(direction).kept.at(slot) = Kept(); }

    // The end of a step (or of the `with`): drop the tensors held for it.
    void clear_step() {
        last_.reset();
        unit_h_.reset();
        unit_y_.reset();
        last_slot_ = -1;
        started_ = false;
        recent_.clear();
    }

    // Per direction: (slots measured or aliased this step, the slot each was measured as); the
    // next step starts with none.
    std::vector<std::pair<std::vector<int>, std::vector<int>>> take() {
        std::vector<std::pair<std::vector<int>, std::vector<int>>> out;
        for (Direction &d : dir_) {
            std::vector<int> seen, source;
            for (size_t i = 0; i < d.seen.size(); i++)
                if (d.seen[i]) {
                    seen.push_back((int)i);
                    source.push_back(d.source[i]);
                    d.seen[i] = 0;
                    d.source[i] = (int)i;
                }
            out.emplace_back(std::move(seen), std::move(source));
        }
        return out;
    }

  private:
    void measure_forward(int slot, const py::object &x, const at::Tensor &t, const at::Tensor &h, int unit) {
        Kept &k = dir_[FORWARD].kept[slot];
        if (same_layout(t, k) && k.masked == h.defined() && (!h.defined() || laid_out_alike(h, t)))
            read(t, k, h.defined() ? h.const_data_ptr<float>() : nullptr,
                 h.defined() ? cut_num_.data_ptr<float>() + unit : nullptr, true);
        else
            keep(k, t, h.defined(), cb_.measure_forward(slot, x, h.defined() ? py::cast(h) : py::none(), unit));
        dir_[FORWARD].mark(slot, slot);
    }

    // The read; `release`: the caller holds the GIL (a forward), let other threads run meanwhile.
    void read(const at::Tensor &t, const Kept &k, const float *h, float *energy, bool release) {
        if (!reads_on)
            return;
        int failed;
        {
            std::unique_ptr<py::gil_scoped_release> unlocked(release ? new py::gil_scoped_release() : nullptr);
            failed = sums_(t.const_data_ptr<float>(), k.outer, k.C, k.inner, k.s1c.data_ptr<float>(), nullptr,
                           k.row.data_ptr<float>(), at::get_num_threads(), h, energy);
        }
        if (failed)
            throw std::runtime_error("SignalProbe: out of memory reading a tapped tensor");
    }

    // What Python's measurement said to keep: (outer, C, inner, channel-sums view, scalars row).
    static void keep(Kept &k, const at::Tensor &t, bool masked, const py::object &kept) {
        k = Kept();
        if (kept.is_none())
            return;
        auto v = kept.cast<py::tuple>();
        k.sizes = t.sizes().vec();
        k.strides = t.strides().vec();
        k.masked = masked;
        k.outer = v[0].cast<int64_t>();
        k.C = v[1].cast<int64_t>();
        k.inner = v[2].cast<int64_t>();
        k.s1c = v[3].cast<at::Tensor>();
        k.row = v[4].cast<at::Tensor>();
    }

    std::array<Direction, 2> dir_;
    std::vector<bool> measured_;
    at::Tensor cut_num_;
    Callbacks cb_;
    SumsInto sums_;
    // this step's state
    at::Tensor last_, unit_h_, unit_y_;
    int last_slot_ = -1;
    bool started_ = false;
    std::deque<Recent> recent_;
};

struct GradPreHook : torch::autograd::FunctionPreHook {
    GradPreHook(std::shared_ptr<Recorder> rec, int slot, uint32_t output)
        : rec(std::move(rec)), slot(slot), output(output) {}
    variable_list operator()(const variable_list &grads) override {
        if (output < grads.size() && grads[output].defined())
            rec->on_grad(slot, grads[output]);
        return grads;
    }
    std::shared_ptr<Recorder> rec;   // every hook holds the recorder: a graph may outlive the probe
    int slot;
    uint32_t output;
};

bool Recorder::hook(const at::Tensor &t, int slot) {
    const auto &node = t.grad_fn();
    if (!node)
        return false;
    node->add_pre_hook(std::make_unique<GradPreHook>(shared_from_this(), slot, t.output_nr()));
    return true;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "SignalProbe's taps and gradient hooks in C++ (CPU tensors)";
    py::class_<Recorder, std::shared_ptr<Recorder>>(m, "Recorder")
        .def(py::init<int, std::vector<bool>, std::optional<at::Tensor>, const py::object &, py::capsule>(),
             py::arg("n_slots"), py::arg("measured"), py::arg("cut_num"), py::arg("callbacks"), py::arg("sums"))
        .def("tap_function", &Recorder::tap_function, py::arg("slot"))
        .def("hook", &Recorder::hook, py::arg("t"), py::arg("slot"))
        .def("forget", &Recorder::forget, py::arg("direction"), py::arg("slot"))
        .def("clear_step", &Recorder::clear_step)
        .def("take", &Recorder::take);
    m.def("set_reads", [](bool on) { reads_on = on; }, "bench_probes.reads_skipped: skip the reads");
}
