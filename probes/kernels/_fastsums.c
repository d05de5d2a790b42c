/* One-pass reductions for SignalProbe on the CPU.
 *
 * The probe needs, for every tapped fp32 tensor, its channel sums, its sum of squares and
 * its counts of positive and negative elements. Built from torch operations that is five
 * passes over the tensor, one of them a write (sign(t) into a buffer); on a 2-core CPU
 * that made a probed step of ResNet-164 cost 1.25-1.3x an unprobed one. Here every
 * statistic comes from a single read of the tensor and nothing is written but the
 * results. The Python side (probes/kernels/c_module.py) checks dtype, device and layout,
 * passes raw pointers and PyTorch's thread count, and falls back to torch operations when
 * this module is not built.
 *
 * Threads: the module links libgomp, whose soname is the one PyTorch's CPU build loads, so
 * its parallel regions run on PyTorch's own OpenMP threads (probes.kernels.c_module imports torch
 * first). A single-threaded kernel is slower than it looks: PyTorch's idle OpenMP thread
 * keeps spinning on the other core meanwhile (measured: 1.26x -> 1.15x at 1001 layers).
 *
 * A tensor is seen as blocks [outer][C][inner] of contiguous floats:
 *   NCHW contiguous:        outer = N, inner = H*W;
 *   channels-last or (N,C): outer = N*H*W (or N), inner = 1.
 * Rows are added up in float SIMD lanes, at most ROWS_PER_FLUSH of them, then flushed
 * into double per channel, so results are as accurate as torch's own cascade sums
 * (checked to 1e-6 in the tests). The GIL is released while summing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The raw sums a read computes besides the channel sums, by name (exported as SUMS), in the
 * order of the enum below. Where each goes in the row of scalars is probes/stats.py's RAW_ROW:
 * probes.kernels.c_module passes the positions at load (set_row; -1: not in the row) and
 * refuses a RAW_ROW naming a sum this module does not compute. */
#define SUMS "sum_sq sign_sum sign_sq"
enum { SUM_SQ, SIGN_SUM, SIGN_SQ, N_SUMS };
static int row_at[N_SUMS] = {-1, -1, -1};

typedef struct {
    double sq;       /* sum x^2 */
    double pos, neg; /* elements > 0, < 0 */
    double masked;   /* sum h^2 where x == 0 (with h) */
} Totals;

/* Rows of the block summed in float before a flush into double: bounds the float error. */
#define ROWS_PER_FLUSH 32
/* Elements per thread below which waking more threads costs more than it saves. */
#define MIN_FLOATS_PER_THREAD (1 << 15)

/* Compiled for AVX-512, AVX2 and baseline x86-64; the loader picks what the CPU has. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* What the kernels do with each element besides the channel sum: add x^2 to the channel
 * sums of squares (MOMENTS), or add h^2 where x == 0 (MASKED: the masked energy of the
 * shortcut h under the unit's output x, read in the same pass as x's own sums). */
enum { PLAIN = 0, MOMENTS = 1, MASKED = 2 };

/* Four rows of K = C * inner floats each (x, x + K, ...; h likewise): a1 += their sum (a2,
 * tot->masked as `mode` says), plus their totals. Four rows per pass halve the traffic
 * through a1 and give the reductions independent work.
 *
 * `mode` must be a constant where this is inlined: a run-time `if (a2)` inside the loop is
 * control flow, which GCC vectorizes only with AVX-512's masked stores -- on an AVX2 CPU
 * the loop ran scalar, with a mispredicted branch per sign test, at ~1 GB/s (50x slower
 * than torch.sum; measured on a Zen 3 EPYC). */
static inline __attribute__((always_inline)) void rows4_body(
    const float *restrict x, const float *restrict h, Py_ssize_t K, float *restrict a1,
    float *restrict a2, Totals *tot, const int mode)
{
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K, *x3 = x + 3 * K;
    const float *h0 = h, *h1 = h + K, *h2 = h + 2 * K, *h3 = h + 3 * K;
    float q = 0.f, m = 0.f;
    int p = 0, n = 0;      /* integer counts: a compare mask subtracted, 17% faster than float 0/1 */
#pragma omp simd reduction(+ : q, p, n, m)
    for (Py_ssize_t k = 0; k < K; k++) {
        float v0 = x0[k], v1 = x1[k], v2 = x2[k], v3 = x3[k];
        float sq = (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3);
        a1[k] += (v0 + v1) + (v2 + v3);
        if (mode == MOMENTS)
            a2[k] += sq;
        if (mode == MASKED) {   /* a 0/1 factor: a conditional load or product is control flow */
            float g0 = h0[k], g1 = h1[k], g2 = h2[k], g3 = h3[k];
            m += ((v0 == 0.f ? 1.f : 0.f) * (g0 * g0) + (v1 == 0.f ? 1.f : 0.f) * (g1 * g1)) +
                 ((v2 == 0.f ? 1.f : 0.f) * (g2 * g2) + (v3 == 0.f ? 1.f : 0.f) * (g3 * g3));
        }
        q += sq;
        p += ((v0 > 0.f) + (v1 > 0.f)) + ((v2 > 0.f) + (v3 > 0.f));
        n += ((v0 < 0.f) + (v1 < 0.f)) + ((v2 < 0.f) + (v3 < 0.f));
    }
    tot->sq += q;
    tot->pos += p;
    tot->neg += n;
    tot->masked += m;
}

/* The same for one row. */
static inline __attribute__((always_inline)) void row_body(
    const float *restrict x, const float *restrict h, Py_ssize_t K, float *restrict a1,
    float *restrict a2, Totals *tot, const int mode)
{
    float q = 0.f, m = 0.f;
    int p = 0, n = 0;
#pragma omp simd reduction(+ : q, p, n, m)
    for (Py_ssize_t k = 0; k < K; k++) {
        float v = x[k];
        a1[k] += v;
        if (mode == MOMENTS)
            a2[k] += v * v;
        if (mode == MASKED) {
            float g = h[k];
            m += (v == 0.f ? 1.f : 0.f) * (g * g);
        }
        q += v * v;
        p += v > 0.f;
        n += v < 0.f;
    }
    tot->sq += q;
    tot->pos += p;
    tot->neg += n;
    tot->masked += m;
}

/* The compiled kernels, one per mode. */
CLONES static void rows4_plain(const float *x, const float *h, Py_ssize_t K, float *a1, float *a2, Totals *tot)
{
    rows4_body(x, h, K, a1, a2, tot, PLAIN);
}

CLONES static void rows4_moments(const float *x, const float *h, Py_ssize_t K, float *a1, float *a2, Totals *tot)
{
    rows4_body(x, h, K, a1, a2, tot, MOMENTS);
}

CLONES static void rows4_masked(const float *x, const float *h, Py_ssize_t K, float *a1, float *a2, Totals *tot)
{
    rows4_body(x, h, K, a1, a2, tot, MASKED);
}

CLONES static void row_plain(const float *x, const float *h, Py_ssize_t K, float *a1, float *a2, Totals *tot)
{
    row_body(x, h, K, a1, a2, tot, PLAIN);
}

CLONES static void row_moments(const float *x, const float *h, Py_ssize_t K, float *a1, float *a2, Totals *tot)
{
    row_body(x, h, K, a1, a2, tot, MOMENTS);
}

CLONES static void row_masked(const float *x, const float *h, Py_ssize_t K, float *a1, float *a2, Totals *tot)
{
    row_body(x, h, K, a1, a2, tot, MASKED);
}

typedef void (*RowsKernel)(const float *, const float *, Py_ssize_t, float *, float *, Totals *);

/* A tensor as blocks [outer][C][inner] of contiguous floats, and h (or NULL): a tensor laid
 * out alike whose energy where x == 0 is wanted. */
typedef struct {
    const float *x, *h;
    Py_ssize_t outer, C, inner;
} Block;

/* Adds the per-channel sums of a (C * inner floats, zeroed after) into s (C doubles). */
static void flush(float *a, Py_ssize_t C, Py_ssize_t inner, double *s)
{
    for (Py_ssize_t c = 0; c < C; c++) {
        double acc = 0.0;
        for (Py_ssize_t i = 0; i < inner; i++)
            acc += a[c * inner + i];
        s[c] += acc;
    }
    memset(a, 0, (size_t)(C * inner) * sizeof(float));
}

/* Rows [begin, end) of the block into s1 (and s2) and tot, one thread. -1: out of memory. */
static int rows_sums(const Block *b, Py_ssize_t begin, Py_ssize_t end, double *s1, double *s2, Totals *tot)
{
    Py_ssize_t K = b->C * b->inner;
    RowsKernel four = s2 ? rows4_moments : b->h ? rows4_masked : rows4_plain;
    RowsKernel one = s2 ? row_moments : b->h ? row_masked : row_plain;
    float *a1 = calloc((size_t)(s2 ? 2 * K : K), sizeof(float));
    if (!a1)
        return -1;
    float *a2 = s2 ? a1 + K : NULL;
    for (Py_ssize_t o = begin; o < end;) {
        Py_ssize_t stop = o + ROWS_PER_FLUSH < end ? o + ROWS_PER_FLUSH : end;
        for (; o + 4 <= stop; o += 4)
            four(b->x + o * K, b->h ? b->h + o * K : NULL, K, a1, a2, tot);
        for (; o < stop; o++)
            one(b->x + o * K, b->h ? b->h + o * K : NULL, K, a1, a2, tot);
        flush(a1, b->C, b->inner, s1);
        if (s2)
            flush(a2, b->C, b->inner, s2);
    }
    free(a1);
    return 0;
}

/* Channel sums s1[C] (and channel sums of squares s2[C] when not NULL, zeroed by the
 * caller) of the block, and its totals, on up to `threads` threads, each over a contiguous
 * range of rows. -1: out of memory. */
static int block_sums(const Block *b, double *s1, double *s2, Totals *tot, int threads)
{
    Py_ssize_t C = b->C, by_size = b->outer * C * b->inner / MIN_FLOATS_PER_THREAD;
    int T = threads;
    if (T > by_size)
        T = by_size > 1 ? (int)by_size : 1;
    if (T > b->outer)
        T = (int)b->outer;
    Py_ssize_t width = s2 ? 2 * C : C;     /* per thread: s1 then s2 */
    double *part = calloc((size_t)(T * width), sizeof(double));
    Totals *tots = calloc((size_t)T, sizeof(Totals));
    int failed = !part || !tots;
#pragma omp parallel num_threads(T) if (T > 1 && !failed) reduction(| : failed)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        double *p = part + t * width;
        failed |= rows_sums(b, b->outer * t / n, b->outer * (t + 1) / n, p, s2 ? p + C : NULL, &tots[t]) != 0;
    }
    if (!failed) {
        memset(tot, 0, sizeof(*tot));
        for (int t = 0; t < T; t++) {
            const double *p = part + t * width;
            for (Py_ssize_t c = 0; c < C; c++) {
                s1[c] += p[c];
                if (s2)
                    s2[c] += p[C + c];
            }
            tot->sq += tots[t].sq;
            tot->pos += tots[t].pos;
            tot->neg += tots[t].neg;
            tot->masked += tots[t].masked;
        }
    }
    free(part);
    free(tots);
    return failed ? -1 : 0;
}

/* channel_sums(x, outer, C, inner, s1c, s2c, scalars, threads[, h, energy]): s1c[C] = channel
 * sums; s2c[C] = channel sums of squares (skipped when s2c is 0); scalars (skipped when 0),
 * at the positions set_row gave: sum x^2, n_pos - n_neg, n_pos + n_neg (what sum sign(x) and
 * sum sign(x)^2 give; NaN when x holds a NaN, as torch.sign would make them); energy[0] = sum h^2 where x == 0, for
 * h laid out as x (when h and energy are given and s2c is 0: the masked energy of the
 * shortcut under the unit's output, in the same read). x, h and the outputs are addresses
 * of fp32 memory. */
/* What channel_sums does, callable from C without the GIL (the C++ taps and hooks of
 * _cpp_hooks.cpp get it through the capsule SUMS_INTO): 0, or -1 when out of memory. */
static int sums_into(const float *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, float *out1,
                     float *out2, float *sc, int threads, const float *h, float *energy)
{
    double *s = calloc((size_t)(out2 ? 2 * C : C), sizeof(double));
    if (!s)
        return -1;
    Block b = {x, h, outer, C, inner};
    Totals tot;
    int failed = block_sums(&b, s, out2 ? s + C : NULL, &tot, threads);
    if (!failed) {
        for (Py_ssize_t c = 0; c < C; c++)
            out1[c] = (float)s[c];
        for (Py_ssize_t c = 0; out2 && c < C; c++)
            out2[c] = (float)s[C + c];
        if (sc) {
            float sums[N_SUMS];
            sums[SUM_SQ] = (float)tot.sq;
            sums[SIGN_SUM] = isnan(tot.sq) ? NAN : (float)(tot.pos - tot.neg);
            sums[SIGN_SQ] = isnan(tot.sq) ? NAN : (float)(tot.pos + tot.neg);
            for (int k = 0; k < N_SUMS; k++)
                if (row_at[k] >= 0)
                    sc[row_at[k]] = sums[k];
        }
        if (energy)
            *energy = (float)tot.masked;
    }
    free(s);
    return failed ? -1 : 0;
}

static PyObject *channel_sums(PyObject *self, PyObject *args)
{
    unsigned long long px, ps1, ps2, psc, ph = 0, pe = 0;
    Py_ssize_t outer, C, inner;
    int threads, failed;
    if (!PyArg_ParseTuple(args, "KnnnKKKi|KK", &px, &outer, &C, &inner, &ps1, &ps2, &psc, &threads, &ph, &pe))
        return NULL;
    if ((ph != 0) != (pe != 0) || (ph && ps2)) {
        PyErr_SetString(PyExc_ValueError, "channel_sums: h and energy go together, and not with s2c");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    failed = sums_into((const float *)(uintptr_t)px, outer, C, inner, (float *)(uintptr_t)ps1,
                       (float *)(uintptr_t)ps2, (float *)(uintptr_t)psc, threads,
                       (const float *)(uintptr_t)ph, (float *)(uintptr_t)pe);
    Py_END_ALLOW_THREADS
    if (failed)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* set_row(at_sum_sq, at_sign_sum, at_sign_sq): where each of SUMS goes in a row of scalars
 * (probes/stats.py's RAW_ROW), -1 for a sum the row does not hold. Called once, at load. */
static PyObject *set_row(PyObject *self, PyObject *args)
{
    int at[N_SUMS];
    if (!PyArg_ParseTuple(args, "iii", &at[SUM_SQ], &at[SIGN_SUM], &at[SIGN_SQ]))
        return NULL;
    for (int k = 0; k < N_SUMS; k++)
        row_at[k] = at[k];
    Py_RETURN_NONE;
}

/* Sum of h^2 over the n elements where f == 0, in float lanes. */
CLONES static float masked_part(const float *restrict h, const float *restrict f, Py_ssize_t n)
{
    float part = 0.f;
#pragma omp simd reduction(+ : part)
    for (Py_ssize_t i = 0; i < n; i++) {
        float keep = f[i] == 0.f ? 1.f : 0.f;
        part += keep * h[i] * h[i];
    }
    return part;
}

/* masked_energy(h, f, n, out, threads): out[0] = sum of h^2 where f == 0, over n elements
 * laid out alike (the shortcut h and the unit's output f(y): the energy f zeroes). NaN in
 * f counts as not zero. */
static PyObject *masked_energy(PyObject *self, PyObject *args)
{
    unsigned long long ph, pf, pout;
    Py_ssize_t n;
    int threads;
    if (!PyArg_ParseTuple(args, "KKnKi", &ph, &pf, &n, &pout, &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    const float *h = (const float *)(uintptr_t)ph, *f = (const float *)(uintptr_t)pf;
    const Py_ssize_t chunk = 4096;   /* float partial sums, double across chunks */
    double total = 0.0;
    int T = n / MIN_FLOATS_PER_THREAD < threads ? (int)(n / MIN_FLOATS_PER_THREAD) : threads;
#pragma omp parallel for num_threads(T > 1 ? T : 1) if (T > 1) reduction(+ : total) schedule(static)
    for (Py_ssize_t start = 0; start < n; start += chunk)
        total += masked_part(h + start, f + start, start + chunk < n ? chunk : n - start);
    *(float *)(uintptr_t)pout = (float)total;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Sum of squares of n floats: float lanes per chunk, double across chunks. */
CLONES static double sum_squares(const float *restrict x, Py_ssize_t n)
{
    double total = 0.0;
    for (Py_ssize_t start = 0; start < n; start += 4096) {
        Py_ssize_t stop = start + 4096 < n ? start + 4096 : n;
        float part = 0.f;
#pragma omp simd reduction(+ : part)
        for (Py_ssize_t i = start; i < stop; i++)
            part += x[i] * x[i];
        total += part;
    }
    return total;
}

/* grouped_sq_sums(ptrs, numels, groups, n, out, n_groups, threads): out[groups[i]] += sum of
 * squares of the numels[i] floats at ptrs[i], for i < n (ptrs, numels, groups: addresses of
 * int64 arrays; out: of n_groups doubles, zeroed by the caller). The parameter-gradient
 * norms of every unit: thousands of small tensors, one call instead of one each. */
static PyObject *grouped_sq_sums(PyObject *self, PyObject *args)
{
    unsigned long long pp, pn, pg, pout;
    Py_ssize_t n, n_groups;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKnKni", &pp, &pn, &pg, &n, &pout, &n_groups, &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    const int64_t *ptrs = (const int64_t *)(uintptr_t)pp, *numels = (const int64_t *)(uintptr_t)pn,
                  *groups = (const int64_t *)(uintptr_t)pg;
    double *out = (double *)(uintptr_t)pout;
#pragma omp parallel for num_threads(threads > 1 ? threads : 1) reduction(+ : out[0 : n_groups]) schedule(dynamic, 16)
    for (Py_ssize_t i = 0; i < n; i++)
        out[groups[i]] += sum_squares((const float *)(uintptr_t)ptrs[i], numels[i]);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"channel_sums", channel_sums, METH_VARARGS, "channel sums (of squares), sum of squares, sign counts"},
    {"masked_energy", masked_energy, METH_VARARGS, "sum of h^2 where f == 0"},
    {"grouped_sq_sums", grouped_sq_sums, METH_VARARGS, "sums of squares of many fp32 tensors, by group"},
    {"set_row", set_row, METH_VARARGS, "where each of SUMS goes in a row of scalars (RAW_ROW)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastsums",
                                    "One-pass CPU reductions for probes.SignalProbe.", -1, methods};

PyMODINIT_FUNC PyInit__fastsums(void)
{
    PyObject *m = PyModule_Create(&module);
    PyObject *sums = m ? PyCapsule_New((void *)sums_into, "probes._fastsums.sums_into", NULL) : NULL;
    if (!sums || PyModule_AddObject(m, "SUMS_INTO", sums) < 0) {
        Py_XDECREF(sums);
        Py_XDECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "SUMS", SUMS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
