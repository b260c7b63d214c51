/* Compiled CPU kernels of tdbn's eager training path (loaded by native.py; see its docstring).
 *
 * LIF (paper Eq. 1-3 forward, Eq. 14-18 backward): the recursions of lif.py's ATen loops (_integrate_aten,
 * _bptt_aten) with the same floating-point operations in the same order, but each neuron's time loop runs in
 * one pass over memory: a block of BLK neurons keeps its state in a stack buffer while the loop walks over T,
 * where the ATen loops launch a few whole-tensor operations per time step. When u itself is stored, time is
 * the outer loop instead (u[t-1] is the state; sequential streams measured faster there). Compiled without
 * floating-point contraction (-ffp-contract=off): every product and sum is rounded on its own, and fma() is
 * called exactly where ATen's addcmul rounds once; the tests check bit equality with the ATen loops.
 *
 * tdBN (Eq. 5-8): per-channel statistics and gradient sums with float64 accumulators, the affine map and the
 * input gradient, each one pass. The units (a LIF fed by one tdBN, or by the sum of two tdBNs / a tdBN and a
 * shortcut): forward in one pass (tdBN output(s), sum and LIF per block of neurons, nothing but the spikes
 * written), backward in one (recompute y and u per block, BPTT, and the per-channel sums the tdBN backward pass
 * needs).
 *
 * Layouts: LIF tensors are time-major and dense (element n of step t at t * M + n, any order of the trailing
 * dimensions); tdBN tensors are [outer, C, inner] (inner = spatial size for NCHW, 1 for channels-last).
 * dtype codes: 0 float32, 1 float64, 2 bfloat16. For the LIF kernels bfloat16 is computed in float32 and
 * rounded to bfloat16, to nearest even, after every operation ATen rounds (the LIF module's own bf16
 * arithmetic); for the tdBN and unit kernels it is a storage type only: values are read as float32 (exactly),
 * computed in float32 exactly as their float32 copy would be, and what is written for the tensor (spikes, the
 * input gradient) is rounded once. Surrogate codes: 0 rectangle, 1 triangle, 2 sigmoid,
 * 3 atan (bfloat16 LIF backward: rectangle only). Entry points return 0, or -1 for codes they lack.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef BLK
#define BLK 128 /* neurons per block: their state stays in L1 while the loop walks over time */
#endif

/* ---------------------------------------------------------------------------------------------------- */
/* threads: [0, n) split into `parts` contiguous ranges, each a multiple of `grain` items except the last */

typedef void (*range_fn)(const void *args, int64_t lo, int64_t hi, int part);

#define MAX_THREADS 64

/* the least work (elements) worth a parallel region: below it, waking the other threads costs more than the
 * work. Set by the loader from the OpenMP wait policy (sleeping threads take far longer to wake). */
static int64_t min_parallel_work = 32768;

void tdbn_set_min_parallel_work(int64_t elements) { min_parallel_work = elements < 1 ? 1 : elements; }

/* how many ranges: one per thread, fewer when the work (n items of `cost` elements) is too small to share */
static int plan(int64_t n, int64_t grain, int64_t cost, int nthreads) {
    int64_t chunks = (n + grain - 1) / grain;
    int64_t parts = nthreads < 1 ? 1 : nthreads;
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts > chunks) parts = chunks;
    if (n * cost < min_parallel_work) parts = 1;
    return parts < 1 ? 1 : (int)parts;
}

/* OpenMP: linked by soname, so in a process that loaded torch first this is torch's own runtime and thread
 * pool (threads already waiting, no second pool competing with it for the cores) */
static int64_t regions = 0; /* parallel regions started (read by the tests through tdbn_parallel_regions) */

int64_t tdbn_parallel_regions(void) { return regions; }

static void parallel(range_fn fn, const void *args, int64_t n, int64_t grain, int parts) {
    if (parts > 1) regions++;
    if (parts <= 1) {
        fn(args, 0, n, 0);
        return;
    }
    const int64_t chunks = (n + grain - 1) / grain, per = (chunks + parts - 1) / parts;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int i = 0; i < parts; i++) {
        const int64_t lo = i * per * grain, hi = (i + 1) * per * grain;
        if (lo < n) fn(args, lo, hi < n ? hi : n, i);
    }
}

/* Ask for the next block of every time step ahead of use: a block reads T short pieces far apart (one per
 * step), too short for the hardware prefetcher to pick up. */
static inline void prefetch_block(const void *base, int64_t b, int64_t hi, int64_t T, int64_t M, size_t elem) {
    if (b >= hi) return;
    const int64_t n = hi - b < BLK ? hi - b : BLK;
    for (int64_t t = 0; t < T; t++) {
        const char *p = (const char *)base + (size_t)(t * M + b) * elem;
        for (size_t o = 0; o < (size_t)n * elem; o += 64) __builtin_prefetch(p + o, 0, 3);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* bfloat16 */

static inline float bf16_load(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t bf16_store(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float bf16_round(float f) { return bf16_load(bf16_store(f)); }

/* ---------------------------------------------------------------------------------------------------- */
/* arguments shared by the range functions */

typedef struct {
    const void *x;   /* forward: input currents; backward: dL/do */
    const void *u;   /* backward: membrane potentials */
    void *out_u;     /* forward: u (may be x, or NULL) */
    void *spikes;    /* forward: 0/1 spikes (or NULL) */
    void *grad;      /* backward: dL/dx (may be u) */
    int64_t T, M;
    double tau, v_th, width;
    int surrogate;
    int64_t x_step; /* forward: distance between x[t] and x[t+1]: M, or 0 for an input repeated over time */
} lif_args;

/* surrogate derivatives (surrogate.py), operation by operation */

#define SURROGATE_FN(NAME, TYPE, ABS, EXP)                                                                 \
    static inline TYPE NAME(TYPE d, TYPE width, TYPE half_width, TYPE inv_width, const int kind) {         \
        switch (kind) {                                                                                    \
        case 0: return (ABS(d) < half_width ? (TYPE)1 : (TYPE)0) * inv_width;                              \
        case 1: {                                                                                          \
            TYPE r = (TYPE)1 - ABS(d) / width;                                                             \
            return (r < (TYPE)0 ? (TYPE)0 : r) * inv_width;                                                \
        }                                                                                                  \
        case 2: {                                                                                          \
            TYPE four = (TYPE)(4.0 / (double)width);                                                       \
            TYPE s = (TYPE)1 / ((TYPE)1 + EXP(-(d * four)));                                               \
            return s * ((TYPE)1 - s) * four;                                                               \
        }                                                                                                  \
        default: {                                                                                         \
            TYPE z = d * (TYPE)(3.141592653589793 / (double)width);                                        \
            return inv_width / ((TYPE)1 + z * z);                                                          \
        }                                                                                                  \
        }                                                                                                  \
    }

SURROGATE_FN(surrogate_f32, float, fabsf, expf)
SURROGATE_FN(surrogate_f64, double, fabs, exp)

/* one step of the membrane recursion (Eq. 1-2), for i in [LO, HI): u[t] = x[t] + (tau u[t-1]) (1 - o[t-1]), with
 * o[t-1] = u[t-1] > v_th; DST may be PREV (a state updated in place) or X. The one definition used by the LIF and
 * unit kernels of 32- and 64-bit floats (bfloat16 LIF: forward_bf16 rounds after each operation). */
#define LIF_STEP(TYPE, DST, X, PREV, LO, HI)                                                               \
    for (int64_t i = (LO); i < (HI); i++) {                                                                \
        const TYPE keep = (PREV)[i] <= v_th ? (TYPE)1 : (TYPE)0; /* 1 - o[t-1] */                          \
        (DST)[i] = (X)[i] + (tau * (PREV)[i]) * keep;                                                      \
    }

/* forward and backward for 32- and 64-bit floats; one backward function per surrogate, so that the surrogate
 * is a constant inside the vectorized loop */

#define LIF_FORWARD(SUF, TYPE)                                                                             \
    static void forward_##SUF(const void *p, int64_t lo, int64_t hi, int part) {                           \
        const lif_args *a = (const lif_args *)p;                                                           \
        const TYPE *x = (const TYPE *)a->x;                                                                \
        TYPE *u = (TYPE *)a->out_u, *s = (TYPE *)a->spikes;                                                \
        const TYPE tau = (TYPE)a->tau, v_th = (TYPE)a->v_th;                                               \
        const int64_t T = a->T, M = a->M;                                                                  \
        if (u) { /* u stored: time outermost, u[t-1] is the state (sequential streams beat blocking here) */ \
            for (int64_t t = 0; t < T; t++) {                                                              \
                const TYPE *xt = x + t * a->x_step, *prev = u + (t - 1) * M;                               \
                TYPE *ut = u + t * M, *sp = s ? s + t * M : NULL;                                          \
                if (t == 0) {                                                                              \
                    for (int64_t i = lo; i < hi; i++) ut[i] = xt[i];                                       \
                } else {                                                                                   \
                    LIF_STEP(TYPE, ut, xt, prev, lo, hi)                                                   \
                }                                                                                          \
                if (sp)                                                                                    \
                    for (int64_t i = lo; i < hi; i++) sp[i] = ut[i] > v_th ? (TYPE)1 : (TYPE)0;            \
            }                                                                                              \
            return;                                                                                        \
        }                                                                                                  \
        TYPE st[BLK];                                                                                      \
        for (int64_t b = lo; b < hi; b += BLK) {                                                           \
            const int64_t n = hi - b < BLK ? hi - b : BLK;                                                 \
            for (int64_t t = 0; t < T; t++) {                                                              \
                const int64_t o = t * M + b;                                                               \
                const TYPE *xt = x + t * a->x_step + b;                                                    \
                if (t == 0) {                                                                              \
                    for (int64_t i = 0; i < n; i++) st[i] = xt[i];                                         \
                } else {                                                                                   \
                    LIF_STEP(TYPE, st, xt, st, 0, n)                                                       \
                }                                                                                          \
                if (u)                                                                                     \
                    for (int64_t i = 0; i < n; i++) u[o + i] = st[i];                                      \
                if (s)                                                                                     \
                    for (int64_t i = 0; i < n; i++) s[o + i] = st[i] > v_th ? (TYPE)1 : (TYPE)0;           \
            }                                                                                              \
        }                                                                                                  \
    }

/* the torch kernels' addcmul rounds once: fma(value * t1, t2, self) */
#define LIF_BACKWARD(SUF, KIND, TYPE, SG, FMA)                                                             \
    static void backward_##SUF##_##KIND(const void *p, int64_t lo, int64_t hi, int part) {                 \
        const lif_args *a = (const lif_args *)p;                                                           \
        const TYPE *gs = (const TYPE *)a->x, *u = (const TYPE *)a->u;                                      \
        TYPE *gx = (TYPE *)a->grad;                                                                        \
        const TYPE tau = (TYPE)a->tau, neg_tau = (TYPE)(-a->tau), v_th = (TYPE)a->v_th;                    \
        const TYPE width = (TYPE)a->width, half = (TYPE)(0.5 * a->width), inv = (TYPE)(1.0 / a->width);    \
        const int64_t T = a->T, M = a->M;                                                                  \
        TYPE gn[BLK]; /* dL/du[t+1] */                                                                     \
        for (int64_t b = lo; b < hi; b += BLK) {                                                           \
            const int64_t n = hi - b < BLK ? hi - b : BLK;                                                 \
            for (int64_t t = T - 1; t >= 0; t--) {                                                         \
                const int64_t o = t * M + b;                                                               \
                const TYPE *ut = u + o, *gt = gs + o;                                                      \
                TYPE *out = gx + o;                                                                        \
                if (t == T - 1) {                                                                          \
                    for (int64_t i = 0; i < n; i++) {                                                      \
                        const TYPE sg = SG(ut[i] - v_th, width, half, inv, KIND);                          \
                        gn[i] = gt[i] * sg;                                                                \
                        out[i] = gn[i];                                                                    \
                    }                                                                                      \
                } else {                                                                                   \
                    for (int64_t i = 0; i < n; i++) {                                                      \
                        const TYPE v = ut[i];                                                              \
                        const TYPE sg = SG(v - v_th, width, half, inv, KIND);                              \
                        const TYPE go = FMA(neg_tau * v, gn[i], gt[i]) * sg; /* reset path, Eq. 15 */      \
                        const TYPE keep = v <= v_th ? (TYPE)1 : (TYPE)0;                                   \
                        gn[i] = FMA(tau * keep, gn[i], go); /* + decay path, Eq. 14 */                     \
                        out[i] = gn[i];                                                                    \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    }

LIF_FORWARD(f32, float)
LIF_FORWARD(f64, double)
LIF_BACKWARD(f32, 0, float, surrogate_f32, fmaf)
LIF_BACKWARD(f32, 1, float, surrogate_f32, fmaf)
LIF_BACKWARD(f32, 2, float, surrogate_f32, fmaf)
LIF_BACKWARD(f32, 3, float, surrogate_f32, fmaf)
LIF_BACKWARD(f64, 0, double, surrogate_f64, fma)
LIF_BACKWARD(f64, 1, double, surrogate_f64, fma)
LIF_BACKWARD(f64, 2, double, surrogate_f64, fma)
LIF_BACKWARD(f64, 3, double, surrogate_f64, fma)

/* bfloat16: values computed in float32 and rounded where the torch kernels round (after each operation) */

static void forward_bf16(const void *p, int64_t lo, int64_t hi, int part) {
    const lif_args *a = (const lif_args *)p;
    const uint16_t *x = (const uint16_t *)a->x;
    uint16_t *u = (uint16_t *)a->out_u, *s = (uint16_t *)a->spikes;
    const float tau = (float)a->tau, v_th = bf16_round((float)a->v_th); /* compared in bfloat16 */
    const int64_t T = a->T, M = a->M;
    float st[BLK];
    for (int64_t b = lo; b < hi; b += BLK) {
        const int64_t n = hi - b < BLK ? hi - b : BLK;
        for (int64_t t = 0; t < T; t++) {
            const int64_t o = t * M + b;
            const uint16_t *xt = x + t * a->x_step + b;
            if (t == 0) {
                for (int64_t i = 0; i < n; i++) st[i] = bf16_load(xt[i]);
            } else {
                for (int64_t i = 0; i < n; i++) {
                    const float keep = st[i] <= v_th ? 1.0f : 0.0f;
                    st[i] = bf16_round(bf16_load(xt[i]) + bf16_round(tau * st[i]) * keep);
                }
            }
            if (u)
                for (int64_t i = 0; i < n; i++) u[o + i] = bf16_store(st[i]);
            if (s)
                for (int64_t i = 0; i < n; i++) s[o + i] = st[i] > v_th ? 0x3f80u : 0u;
        }
    }
}

static void backward_bf16(const void *p, int64_t lo, int64_t hi, int part) { /* rectangle surrogate */
    const lif_args *a = (const lif_args *)p;
    const uint16_t *gs = (const uint16_t *)a->x, *u = (const uint16_t *)a->u;
    uint16_t *gx = (uint16_t *)a->grad;
    const float tau = (float)a->tau, neg_tau = (float)(-a->tau), v_th = bf16_round((float)a->v_th);
    const float half = bf16_round((float)(0.5 * a->width)), inv = (float)(1.0 / a->width);
    const int scaled = a->width != 1.0;
    const int64_t T = a->T, M = a->M;
    float gn[BLK];
    for (int64_t b = lo; b < hi; b += BLK) {
        const int64_t n = hi - b < BLK ? hi - b : BLK;
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t o = t * M + b;
            for (int64_t i = 0; i < n; i++) {
                const float v = bf16_load(u[o + i]);
                float sg = fabsf(bf16_round(v - v_th)) < half ? 1.0f : 0.0f;
                if (scaled) sg = bf16_round(sg * inv);
                const float g = bf16_load(gs[o + i]);
                float r;
                if (t == T - 1) {
                    r = bf16_round(g * sg);
                } else {
                    const float go = bf16_round(bf16_round(fmaf(neg_tau * v, gn[i], g)) * sg);
                    const float keep = v <= v_th ? 1.0f : 0.0f;
                    r = bf16_round(fmaf(tau * keep, gn[i], go));
                }
                gn[i] = r;
                gx[o + i] = bf16_store(r);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* tdBN (Eq. 5-8) on x viewed as [outer, C, inner]: inner = spatial size for the contiguous layout, 1 for
 * channels-last. Statistics and gradient sums are accumulated in float64, per thread, then combined.
 *
 * Storage and compute types: x (and the input gradient written for it) is stored in STYPE, everything else
 * (per-channel vectors, the output gradient g, the affine output) is CTYPE, the type of the arithmetic. For
 * float32 and float64 the two are one type; for bfloat16 x is read as float32 (exactly) and the input gradient
 * rounded once to bfloat16, so a bfloat16 tensor gives the float32 results of its float32 copy, without the
 * copy. LD reads one STYPE value as CTYPE, ST writes one CTYPE value as STYPE. */

#define LD_ID(v) (v)
#define LD_BF(v) bf16_load(v)
#define ST_ID(v) (v)
#define ST_BF(v) bf16_store(v)

typedef struct {
    const void *x, *g;       /* input (STYPE); gradient of the output (CTYPE) */
    void *y;                 /* output: affine (CTYPE), grad_input (STYPE) */
    const void *mean, *w, *b, *k, *c0, *cx; /* per-channel vectors (CTYPE; b may be NULL) */
    double *acc;             /* per-part accumulators: parts x 2C */
    int64_t C, inner;
    int pass;                /* stats: 0 sums x, 1 sums (x - mean)^2, 2 sums x and x^2 (sync tdBN) */
} bn_args;

#define BN_KERNELS(SUF, STYPE, CTYPE, LD, ST)                                                              \
    /* pass 0: acc[c] += x; pass 1: acc[C + c] += (x - mean[c])^2; pass 2: acc[c] += x, acc[C + c] += x^2 */ \
    static void bn_stats_##SUF(const void *p, int64_t lo, int64_t hi, int part) {                          \
        const bn_args *a = (const bn_args *)p;                                                             \
        const STYPE *x = (const STYPE *)a->x;                                                              \
        const CTYPE *mean = (const CTYPE *)a->mean;                                                        \
        const int64_t C = a->C, S = a->inner;                                                              \
        double *acc = a->acc + (int64_t)part * 2 * C + (a->pass == 1 ? C : 0);                             \
        for (int64_t r = lo; r < hi; r++) {                                                                \
            const STYPE *row = x + r * C * S;                                                              \
            if (a->pass == 2) {                                                                            \
                for (int64_t c = 0; c < C; c++) {                                                          \
                    double t1 = 0.0, t2 = 0.0;                                                             \
                    _Pragma("omp simd reduction(+ : t1, t2)")                                              \
                    for (int64_t s = 0; s < S; s++) {                                                      \
                        const double v = (double)LD(row[c * S + s]);                                       \
                        t1 += v;                                                                           \
                        t2 += v * v;                                                                       \
                    }                                                                                      \
                    acc[c] += t1;                                                                          \
                    acc[C + c] += t2;                                                                      \
                }                                                                                          \
                continue;                                                                                  \
            }                                                                                              \
            if (S == 1) {                                                                                  \
                if (a->pass == 0)                                                                          \
                    for (int64_t c = 0; c < C; c++) acc[c] += (double)LD(row[c]);                          \
                else                                                                                       \
                    for (int64_t c = 0; c < C; c++) {                                                      \
                        const double d = (double)LD(row[c]) - (double)mean[c];                             \
                        acc[c] += d * d;                                                                   \
                    }                                                                                      \
                continue;                                                                                  \
            }                                                                                              \
            for (int64_t c = 0; c < C; c++) {                                                              \
                const STYPE *v = row + c * S;                                                              \
                double total = 0.0;                                                                        \
                if (a->pass == 0) {                                                                        \
                    _Pragma("omp simd reduction(+ : total)")                                               \
                    for (int64_t s = 0; s < S; s++) total += (double)LD(v[s]);                             \
                } else {                                                                                   \
                    const double m = (double)mean[c];                                                      \
                    _Pragma("omp simd reduction(+ : total)")                                               \
                    for (int64_t s = 0; s < S; s++) {                                                      \
                        const double d = (double)LD(v[s]) - m;                                             \
                        total += d * d;                                                                    \
                    }                                                                                      \
                }                                                                                          \
                acc[c] += total;                                                                           \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
                                                                                                           \
    /* acc[c] += g, acc[C + c] += g * (x - mean[c]) */                                                     \
    static void bn_grad_sums_##SUF(const void *p, int64_t lo, int64_t hi, int part) {                      \
        const bn_args *a = (const bn_args *)p;                                                             \
        const STYPE *x = (const STYPE *)a->x;                                                              \
        const CTYPE *g = (const CTYPE *)a->g, *mean = (const CTYPE *)a->mean;                              \
        const int64_t C = a->C, S = a->inner;                                                              \
        double *sg = a->acc + (int64_t)part * 2 * C, *sgx = sg + C;                                        \
        for (int64_t r = lo; r < hi; r++) {                                                                \
            const STYPE *xr = x + r * C * S;                                                               \
            const CTYPE *gr = g + r * C * S;                                                               \
            if (S == 1) {                                                                                  \
                for (int64_t c = 0; c < C; c++) {                                                          \
                    sg[c] += (double)gr[c];                                                                \
                    sgx[c] += (double)gr[c] * ((double)LD(xr[c]) - (double)mean[c]);                       \
                }                                                                                          \
                continue;                                                                                  \
            }                                                                                              \
            for (int64_t c = 0; c < C; c++) {                                                              \
                const STYPE *xv = xr + c * S;                                                              \
                const CTYPE *gv = gr + c * S;                                                              \
                const double m = (double)mean[c];                                                          \
                double t0 = 0.0, t1 = 0.0;                                                                 \
                _Pragma("omp simd reduction(+ : t0, t1)")                                                  \
                for (int64_t s = 0; s < S; s++) {                                                          \
                    const double gg = (double)gv[s];                                                       \
                    t0 += gg;                                                                              \
                    t1 += gg * ((double)LD(xv[s]) - m);                                                    \
                }                                                                                          \
                sg[c] += t0;                                                                               \
                sgx[c] += t1;                                                                              \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
                                                                                                           \
    /* y = (x - mean[c]) * w[c] + b[c], each operation rounded (the recomputation repeats it exactly) */   \
    static void bn_affine_##SUF(const void *p, int64_t lo, int64_t hi, int part) {                         \
        const bn_args *a = (const bn_args *)p;                                                             \
        const STYPE *x = (const STYPE *)a->x;                                                              \
        const CTYPE *mean = (const CTYPE *)a->mean, *w = (const CTYPE *)a->w, *bias = (const CTYPE *)a->b; \
        CTYPE *y = (CTYPE *)a->y;                                                                          \
        const int64_t C = a->C, S = a->inner;                                                              \
        for (int64_t r = lo; r < hi; r++) {                                                                \
            const STYPE *xr = x + r * C * S;                                                               \
            CTYPE *yr = y + r * C * S;                                                                     \
            if (S == 1) {                                                                                  \
                if (bias)                                                                                  \
                    for (int64_t c = 0; c < C; c++) yr[c] = (LD(xr[c]) - mean[c]) * w[c] + bias[c];        \
                else                                                                                       \
                    for (int64_t c = 0; c < C; c++) yr[c] = (LD(xr[c]) - mean[c]) * w[c];                  \
                continue;                                                                                  \
            }                                                                                              \
            for (int64_t c = 0; c < C; c++) {                                                              \
                const CTYPE m = mean[c], wc = w[c], bc = bias ? bias[c] : (CTYPE)0;                        \
                const STYPE *xv = xr + c * S;                                                              \
                CTYPE *yv = yr + c * S;                                                                    \
                if (bias)                                                                                  \
                    for (int64_t s = 0; s < S; s++) yv[s] = (LD(xv[s]) - m) * wc + bc;                     \
                else                                                                                       \
                    for (int64_t s = 0; s < S; s++) yv[s] = (LD(xv[s]) - m) * wc;                          \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
                                                                                                           \
    /* dL/dx = (g * k[c] + c0[c]) + (x - mean[c]) * cx[c], rounded once to STYPE */                        \
    static void bn_grad_input_##SUF(const void *p, int64_t lo, int64_t hi, int part) {                     \
        const bn_args *a = (const bn_args *)p;                                                             \
        const STYPE *x = (const STYPE *)a->x;                                                              \
        const CTYPE *g = (const CTYPE *)a->g, *mean = (const CTYPE *)a->mean;                              \
        const CTYPE *k = (const CTYPE *)a->k, *c0 = (const CTYPE *)a->c0, *cx = (const CTYPE *)a->cx;      \
        STYPE *out = (STYPE *)a->y;                                                                        \
        const int64_t C = a->C, S = a->inner;                                                              \
        for (int64_t r = lo; r < hi; r++) {                                                                \
            const int64_t o = r * C * S;                                                                   \
            if (S == 1) {                                                                                  \
                for (int64_t c = 0; c < C; c++)                                                            \
                    out[o + c] = ST((g[o + c] * k[c] + c0[c]) + (LD(x[o + c]) - mean[c]) * cx[c]);         \
                continue;                                                                                  \
            }                                                                                              \
            for (int64_t c = 0; c < C; c++) {                                                              \
                const CTYPE m = mean[c], kc = k[c], c0c = c0[c], cxc = cx[c];                              \
                const int64_t oc = o + c * S;                                                              \
                for (int64_t s = 0; s < S; s++)                                                            \
                    out[oc + s] = ST((g[oc + s] * kc + c0c) + (LD(x[oc + s]) - m) * cxc);                  \
            }                                                                                              \
        }                                                                                                  \
    }

BN_KERNELS(f32, float, float, LD_ID, ST_ID)
BN_KERNELS(f64, double, double, LD_ID, ST_ID)
BN_KERNELS(bf16, uint16_t, float, LD_BF, ST_BF)

static int64_t combine(const double *acc, int parts, int64_t C, double *out) { /* out[2C] = sum over parts */
    for (int64_t c = 0; c < 2 * C; c++) {
        double t = 0.0;
        for (int i = 0; i < parts; i++) t += acc[(int64_t)i * 2 * C + c];
        out[c] = t;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The units: a LIF fed by tdBN (the lean training path), over z in the [T, M] time-major view.
 *
 *   mode 0: y = bn_a(za)                 (conv -> tdBN -> LIF)
 *   mode 1: y = bn_a(za) + zb            (the junction with an unnormalized identity shortcut)
 *   mode 2: y = bn_a(za) + bn_b(zb)      (the junction of Fig. 5b)
 *
 * with bn(z) = (z - mean) * w + b per channel (b optional), each operation rounded in CTYPE like bn_affine and
 * the torch additions, so that no [T, M] tensor of y or u is written. Forward: the LIF recursion (Eq. 1-3) over
 * each block of neurons, spikes written in STYPE. Backward: recompute y and u per block (the same operations,
 * so the same u bit for bit), walk BPTT back in time (Eq. 14-15, 18), write dL/dy (CTYPE) and optionally
 * accumulate the tdBN backward's per-channel sums of dL/dy and dL/dy * (z - mean) (mode 0 only).
 * Element n of a step belongs to channel (n / cdiv) % C. */

#define SUM_FN(SUF, TYPE) /* sum of a short run, in lanes (the compiler may not reorder a plain sum) */    \
    static inline double sum_##SUF(const TYPE *v, int64_t n) {                                             \
        double t = 0.0;                                                                                    \
        _Pragma("omp simd reduction(+ : t)")                                                               \
        for (int64_t i = 0; i < n; i++) t += (double)v[i];                                                 \
        return t;                                                                                          \
    }
SUM_FN(f32, float)
SUM_FN(f64, double)

typedef struct {
    const void *gs, *za, *zb;                 /* dL/do (backward; STYPE), the two inputs (STYPE; zb mode 1-2) */
    const void *mean_a, *w_a, *b_a, *mean_b, *w_b, *b_b; /* per-channel vectors (CTYPE; b_* may be NULL) */
    void *out;                                /* forward: spikes (STYPE); backward: dL/dy (CTYPE) */
    double *acc;                              /* parts x 2C, or NULL: no sums */
    void *ubuf;                               /* parts x T x BLK membrane potentials (backward) */
    int64_t T, M, C, cdiv;
    double tau, v_th, width;
    int mode;
} unit_args;

/* the per-channel vectors of block [b, b + n), spread per element */
#define SPREAD(CTYPE, SRC_M, SRC_W, SRC_B, DM, DW, DB)                                                     \
    for (int64_t i = 0, c = c_first, len = cdiv - r_first; i < n; i += len, len = cdiv) {                  \
        if (len > n - i) len = n - i;                                                                      \
        const CTYPE mc = SRC_M[c], wc = SRC_W[c], bc = SRC_B ? SRC_B[c] : (CTYPE)0;                        \
        for (int64_t j = i; j < i + len; j++) {                                                            \
            DM[j] = mc;                                                                                    \
            DW[j] = wc;                                                                                    \
            DB[j] = bc;                                                                                    \
        }                                                                                                  \
        if (++c == C) c = 0;                                                                               \
    }

/* y[0:n] of step t (offset o = t * M + b): the tdBN output(s) and their sum, operation by operation */
#define UNIT_Y(STYPE, LD, y, o)                                                                            \
    {                                                                                                      \
        const STYPE *restrict zat = za + (o);                                                              \
        if (ba)                                                                                            \
            for (int64_t i = 0; i < n; i++) y[i] = (LD(zat[i]) - ma[i]) * wa[i] + bav[i];                  \
        else                                                                                               \
            for (int64_t i = 0; i < n; i++) y[i] = (LD(zat[i]) - ma[i]) * wa[i];                           \
        if (mode == 1) {                                                                                   \
            const STYPE *restrict zbt = zb + (o);                                                          \
            for (int64_t i = 0; i < n; i++) y[i] = y[i] + LD(zbt[i]);                                      \
        } else if (mode == 2) {                                                                            \
            const STYPE *restrict zbt = zb + (o);                                                          \
            if (bb)                                                                                        \
                for (int64_t i = 0; i < n; i++) y[i] = y[i] + ((LD(zbt[i]) - mb[i]) * wbv[i] + bbv[i]);    \
            else                                                                                           \
                for (int64_t i = 0; i < n; i++) y[i] = y[i] + (LD(zbt[i]) - mb[i]) * wbv[i];               \
        }                                                                                                  \
    }

#define UNIT_PROLOGUE(STYPE, CTYPE)                                                                        \
    const unit_args *a = (const unit_args *)p;                                                             \
    const STYPE *za = (const STYPE *)a->za, *zb = (const STYPE *)a->zb;                                    \
    const CTYPE *ma_c = (const CTYPE *)a->mean_a, *wa_c = (const CTYPE *)a->w_a, *ba = (const CTYPE *)a->b_a; \
    const CTYPE *mb_c = (const CTYPE *)a->mean_b, *wb_c = (const CTYPE *)a->w_b, *bb = (const CTYPE *)a->b_b; \
    const int64_t T = a->T, M = a->M, C = a->C, cdiv = a->cdiv;                                            \
    const int mode = a->mode;                                                                              \
    const CTYPE tau = (CTYPE)a->tau, v_th = (CTYPE)a->v_th;                                                \
    CTYPE ma[BLK], wa[BLK], bav[BLK], mb[BLK], wbv[BLK], bbv[BLK];

#define UNIT_SPREAD(CTYPE)                                                                                 \
    const int64_t c_first = (b / cdiv) % C, r_first = b % cdiv;                                            \
    SPREAD(CTYPE, ma_c, wa_c, ba, ma, wa, bav)                                                             \
    if (mode == 2) SPREAD(CTYPE, mb_c, wb_c, bb, mb, wbv, bbv)

#define UNIT_FORWARD(SUF, STYPE, CTYPE, LD, ONE)                                                           \
    static void unit_forward_##SUF(const void *p, int64_t lo, int64_t hi, int part) {                      \
        UNIT_PROLOGUE(STYPE, CTYPE)                                                                        \
        STYPE *s = (STYPE *)a->out;                                                                        \
        CTYPE st[BLK], y[BLK];                                                                             \
        for (int64_t b = lo; b < hi; b += BLK) {                                                           \
            const int64_t n = hi - b < BLK ? hi - b : BLK;                                                 \
            UNIT_SPREAD(CTYPE)                                                                             \
            for (int64_t t = 0; t < T; t++) {                                                              \
                const int64_t o = t * M + b;                                                               \
                UNIT_Y(STYPE, LD, y, o)                                                                    \
                if (t == 0) {                                                                              \
                    for (int64_t i = 0; i < n; i++) st[i] = y[i];                                          \
                } else {                                                                                   \
                    LIF_STEP(CTYPE, st, y, st, 0, n)                                                       \
                }                                                                                          \
                STYPE *restrict so = s + o;                                                                \
                for (int64_t i = 0; i < n; i++) so[i] = st[i] > v_th ? (STYPE)(ONE) : (STYPE)0;            \
            }                                                                                              \
        }                                                                                                  \
    }

#define UNIT_BACKWARD(SUF, KIND, STYPE, CTYPE, LD, SG, FMA, SUM)                                           \
    static void unit_backward_##SUF##_##KIND(const void *p, int64_t lo, int64_t hi, int part) {            \
        UNIT_PROLOGUE(STYPE, CTYPE)                                                                        \
        const STYPE *gs = (const STYPE *)a->gs;                                                            \
        CTYPE *gy = (CTYPE *)a->out;                                                                       \
        const CTYPE neg_tau = (CTYPE)(-a->tau);                                                            \
        const CTYPE width = (CTYPE)a->width, half = (CTYPE)(0.5 * a->width), inv = (CTYPE)(1.0 / a->width); \
        double *sg_acc = a->acc ? a->acc + (int64_t)part * 2 * C : NULL, *sgx_acc = sg_acc ? sg_acc + C : NULL; \
        CTYPE *u = (CTYPE *)a->ubuf + (int64_t)part * T * BLK; /* [T][BLK] */                              \
        CTYPE gn[BLK], lg[BLK], lgx[BLK];                                                                  \
        for (int64_t b = lo; b < hi; b += BLK) {                                                           \
            const int64_t n = hi - b < BLK ? hi - b : BLK;                                                 \
            prefetch_block(za, b + BLK, hi, T, M, sizeof(STYPE));                                          \
            prefetch_block(gs, b + BLK, hi, T, M, sizeof(STYPE));                                          \
            UNIT_SPREAD(CTYPE)                                                                             \
            /* forward: y, then u (Eq. 1-2), with the forward pass's operations */                         \
            for (int64_t t = 0; t < T; t++) {                                                              \
                CTYPE *restrict ut = u + t * BLK;                                                          \
                UNIT_Y(STYPE, LD, ut, t * M + b)                                                           \
                if (t > 0) {                                                                               \
                    const CTYPE *restrict prev = u + (t - 1) * BLK;                                        \
                    LIF_STEP(CTYPE, ut, ut, prev, 0, n)                                                    \
                }                                                                                          \
            }                                                                                              \
            /* backward: Eq. 14-15, 18; per-neuron sums over time of dL/dy and dL/dy * (z - mean) */       \
            for (int64_t t = T - 1; t >= 0; t--) {                                                         \
                const int64_t o = t * M + b;                                                               \
                const CTYPE *restrict ut = u + t * BLK;                                                    \
                const STYPE *restrict gt = gs + o, *restrict zt = za + o;                                  \
                CTYPE *restrict out = gy + o;                                                              \
                if (t == T - 1) {                                                                          \
                    for (int64_t i = 0; i < n; i++) {                                                      \
                        const CTYPE g = LD(gt[i]) * SG(ut[i] - v_th, width, half, inv, KIND);              \
                        gn[i] = g;                                                                         \
                        out[i] = g;                                                                        \
                    }                                                                                      \
                } else {                                                                                   \
                    for (int64_t i = 0; i < n; i++) {                                                      \
                        const CTYPE v = ut[i];                                                             \
                        const CTYPE sg = SG(v - v_th, width, half, inv, KIND);                             \
                        const CTYPE go = FMA(neg_tau * v, gn[i], LD(gt[i])) * sg;                          \
                        const CTYPE keep = v <= v_th ? (CTYPE)1 : (CTYPE)0;                                \
                        const CTYPE g = FMA(tau * keep, gn[i], go);                                        \
                        gn[i] = g;                                                                         \
                        out[i] = g;                                                                        \
                    }                                                                                      \
                }                                                                                          \
                if (!sg_acc) continue;                                                                     \
                if (t == T - 1)                                                                            \
                    for (int64_t i = 0; i < n; i++) {                                                      \
                        lg[i] = gn[i];                                                                     \
                        lgx[i] = gn[i] * (LD(zt[i]) - ma[i]);                                              \
                    }                                                                                      \
                else                                                                                       \
                    for (int64_t i = 0; i < n; i++) {                                                      \
                        lg[i] += gn[i];                                                                    \
                        lgx[i] += gn[i] * (LD(zt[i]) - ma[i]);                                             \
                    }                                                                                      \
            }                                                                                              \
            if (!sg_acc) continue;                                                                         \
            if (cdiv == 1) { /* channels-last: neighbours belong to different channels, add one by one */  \
                for (int64_t i = 0, c = c_first; i < n; i++) {                                             \
                    sg_acc[c] += (double)lg[i];                                                            \
                    sgx_acc[c] += (double)lgx[i];                                                          \
                    if (++c == C) c = 0;                                                                   \
                }                                                                                          \
            } else {                                                                                       \
                for (int64_t i = 0, c = c_first, len = cdiv - r_first; i < n; i += len, len = cdiv) {      \
                    if (len > n - i) len = n - i;                                                          \
                    sg_acc[c] += SUM(lg + i, len);                                                         \
                    sgx_acc[c] += SUM(lgx + i, len);                                                       \
                    if (++c == C) c = 0;                                                                   \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    }

UNIT_FORWARD(f32, float, float, LD_ID, 1.0f)
UNIT_BACKWARD(f32, 0, float, float, LD_ID, surrogate_f32, fmaf, sum_f32)
UNIT_BACKWARD(f32, 1, float, float, LD_ID, surrogate_f32, fmaf, sum_f32)
UNIT_BACKWARD(f32, 2, float, float, LD_ID, surrogate_f32, fmaf, sum_f32)
UNIT_BACKWARD(f32, 3, float, float, LD_ID, surrogate_f32, fmaf, sum_f32)
UNIT_FORWARD(f64, double, double, LD_ID, 1.0)
UNIT_BACKWARD(f64, 0, double, double, LD_ID, surrogate_f64, fma, sum_f64)
UNIT_BACKWARD(f64, 1, double, double, LD_ID, surrogate_f64, fma, sum_f64)
UNIT_BACKWARD(f64, 2, double, double, LD_ID, surrogate_f64, fma, sum_f64)
UNIT_BACKWARD(f64, 3, double, double, LD_ID, surrogate_f64, fma, sum_f64)
UNIT_FORWARD(bf16, uint16_t, float, LD_BF, 0x3f80u)
UNIT_BACKWARD(bf16, 0, uint16_t, float, LD_BF, surrogate_f32, fmaf, sum_f32)
UNIT_BACKWARD(bf16, 1, uint16_t, float, LD_BF, surrogate_f32, fmaf, sum_f32)
UNIT_BACKWARD(bf16, 2, uint16_t, float, LD_BF, surrogate_f32, fmaf, sum_f32)
UNIT_BACKWARD(bf16, 3, uint16_t, float, LD_BF, surrogate_f32, fmaf, sum_f32)

/* ---------------------------------------------------------------------------------------------------- */
/* entry points */

int tdbn_lif_forward(int dtype, const void *x, int64_t x_step, void *u, void *spikes, int64_t T, int64_t M,
                     double tau, double v_th, int nthreads) {
    static const range_fn fns[3] = {forward_f32, forward_f64, forward_bf16};
    if (dtype < 0 || dtype > 2) return -1;
    lif_args a = {x, NULL, u, spikes, NULL, T, M, tau, v_th, 1.0, 0, x_step};
    parallel(fns[dtype], &a, M, BLK, plan(M, BLK, T, nthreads));
    return 0;
}

int tdbn_lif_backward(int dtype, const void *grad_spikes, const void *u, void *grad_x, int64_t T, int64_t M,
                      double tau, double v_th, double width, int surrogate, int nthreads) {
    static const range_fn fns[3][4] = {
        {backward_f32_0, backward_f32_1, backward_f32_2, backward_f32_3},
        {backward_f64_0, backward_f64_1, backward_f64_2, backward_f64_3},
        {backward_bf16, NULL, NULL, NULL},
    };
    if (dtype < 0 || dtype > 2 || surrogate < 0 || surrogate > 3 || !fns[dtype][surrogate]) return -1;
    lif_args a = {grad_spikes, u, NULL, NULL, grad_x, T, M, tau, v_th, width, surrogate};
    parallel(fns[dtype][surrogate], &a, M, BLK, plan(M, BLK, T, nthreads));
    return 0;
}

/* per-channel mean (into `mean`, in the compute dtype) and biased variance around that rounded mean (into
 * `var`, float64) of x [outer, C, inner] (Eq. 6-7); `scratch` holds 2C doubles per thread */
int tdbn_bn_stats(int dtype, const void *x, int64_t outer, int64_t C, int64_t inner, void *mean, double *var,
                  double *scratch, int nthreads) {
    static const range_fn fns[3] = {bn_stats_f32, bn_stats_f64, bn_stats_bf16};
    if (dtype < 0 || dtype > 2) return -1;
    const double n = (double)outer * (double)inner;
    const int parts = plan(outer, 1, C * inner, nthreads);
    bn_args a = {x, NULL, NULL, mean, NULL, NULL, NULL, NULL, NULL, scratch, C, inner, 0};
    for (int pass = 0; pass < 2; pass++) {
        a.pass = pass;
        memset(scratch, 0, sizeof(double) * 2 * C * parts);
        parallel(fns[dtype], &a, outer, 1, parts);
        for (int64_t c = 0; c < C; c++) {
            double t = 0.0;
            for (int i = 0; i < parts; i++) t += scratch[(int64_t)i * 2 * C + pass * C + c];
            if (pass == 1) var[c] = t / n;
            else if (dtype == 1) ((double *)mean)[c] = t / n;
            else ((float *)mean)[c] = (float)(t / n);
        }
    }
    return 0;
}

/* per-channel sums of x and of x^2 in one pass, float64: out[0:C], out[C:2C] (the share of one process in the
 * statistics of a tdBN synchronized across processes; reduced over the processes, then mean and variance) */
int tdbn_bn_sums(int dtype, const void *x, int64_t outer, int64_t C, int64_t inner, double *out, double *scratch,
                 int nthreads) {
    static const range_fn fns[3] = {bn_stats_f32, bn_stats_f64, bn_stats_bf16};
    if (dtype < 0 || dtype > 2) return -1;
    const int parts = plan(outer, 1, C * inner, nthreads);
    bn_args a = {x, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, scratch, C, inner, 2};
    memset(scratch, 0, sizeof(double) * 2 * C * parts);
    parallel(fns[dtype], &a, outer, 1, parts);
    combine(scratch, parts, C, out);
    return 0;
}

/* per-channel sums of g and of g * (x - mean) for the tdBN backward pass: out[0:C], out[C:2C] */
int tdbn_bn_grad_sums(int dtype, const void *g, const void *x, const void *mean, int64_t outer, int64_t C,
                      int64_t inner, double *out, double *scratch, int nthreads) {
    static const range_fn fns[3] = {bn_grad_sums_f32, bn_grad_sums_f64, bn_grad_sums_bf16};
    if (dtype < 0 || dtype > 2) return -1;
    const int parts = plan(outer, 1, C * inner, nthreads);
    bn_args a = {x, g, NULL, mean, NULL, NULL, NULL, NULL, NULL, scratch, C, inner, 0};
    memset(scratch, 0, sizeof(double) * 2 * C * parts);
    parallel(fns[dtype], &a, outer, 1, parts);
    combine(scratch, parts, C, out);
    return 0;
}

int tdbn_bn_affine(int dtype, const void *x, void *y, const void *mean, const void *w, const void *b, int64_t outer,
                   int64_t C, int64_t inner, int nthreads) {
    static const range_fn fns[3] = {bn_affine_f32, bn_affine_f64, bn_affine_bf16};
    if (dtype < 0 || dtype > 2) return -1;
    bn_args a = {x, NULL, y, mean, w, b, NULL, NULL, NULL, NULL, C, inner, 0};
    parallel(fns[dtype], &a, outer, 1, plan(outer, 1, C * inner, nthreads));
    return 0;
}

int tdbn_bn_grad_input(int dtype, const void *g, const void *x, void *grad_x, const void *mean, const void *k,
                       const void *c0, const void *cx, int64_t outer, int64_t C, int64_t inner, int nthreads) {
    static const range_fn fns[3] = {bn_grad_input_f32, bn_grad_input_f64, bn_grad_input_bf16};
    if (dtype < 0 || dtype > 2) return -1;
    bn_args a = {x, g, grad_x, mean, NULL, NULL, k, c0, cx, NULL, C, inner, 0};
    parallel(fns[dtype], &a, outer, 1, plan(outer, 1, C * inner, nthreads));
    return 0;
}

/* spikes (in the storage dtype) of a unit: LIF(y) for y of `mode` (see the units above) */
int tdbn_unit_forward(int dtype, int mode, const void *za, const void *zb, const void *mean_a, const void *w_a,
                      const void *b_a, const void *mean_b, const void *w_b, const void *b_b, void *spikes, int64_t T,
                      int64_t M, int64_t C, int64_t cdiv, double tau, double v_th, int nthreads) {
    static const range_fn fns[3] = {unit_forward_f32, unit_forward_f64, unit_forward_bf16};
    if (dtype < 0 || dtype > 2 || mode < 0 || mode > 2) return -1;
    unit_args a = {NULL, za, zb, mean_a, w_a, b_a, mean_b, w_b, b_b, spikes, NULL, NULL, T, M, C, cdiv, tau, v_th,
                   1.0, mode};
    parallel(fns[dtype], &a, M, BLK, plan(M, BLK, T, nthreads));
    return 0;
}

/* dL/dy (compute dtype) of a unit's LIF into grad_y; with `out` (2C doubles, mode 0), the tdBN backward's
 * per-channel sums of dL/dy and dL/dy * (za - mean_a) into out[0:C], out[C:2C] */
int tdbn_unit_backward(int dtype, int mode, const void *grad_spikes, const void *za, const void *zb,
                       const void *mean_a, const void *w_a, const void *b_a, const void *mean_b, const void *w_b,
                       const void *b_b, void *grad_y, int64_t T, int64_t M, int64_t C, int64_t cdiv, double tau,
                       double v_th, double width, int surrogate, double *out, double *scratch, int nthreads) {
    static const range_fn fns[3][4] = {
        {unit_backward_f32_0, unit_backward_f32_1, unit_backward_f32_2, unit_backward_f32_3},
        {unit_backward_f64_0, unit_backward_f64_1, unit_backward_f64_2, unit_backward_f64_3},
        {unit_backward_bf16_0, unit_backward_bf16_1, unit_backward_bf16_2, unit_backward_bf16_3},
    };
    if (dtype < 0 || dtype > 2 || mode < 0 || mode > 2 || surrogate < 0 || surrogate > 3) return -1;
    if (out && mode != 0) return -1;
    const int parts = plan(M, BLK, T, nthreads);
    void *ubuf = malloc(sizeof(double) * (size_t)(parts * T * BLK));
    if (!ubuf) return -2;
    unit_args a = {grad_spikes, za, zb, mean_a, w_a, b_a, mean_b, w_b, b_b, grad_y, out ? scratch : NULL, ubuf,
                   T, M, C, cdiv, tau, v_th, width, mode};
    if (out) memset(scratch, 0, sizeof(double) * 2 * C * parts);
    parallel(fns[dtype][surrogate], &a, M, BLK, parts);
    free(ubuf);
    if (out) combine(scratch, parts, C, out);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* spike masks as bits: what the units store of a spike tensor (values 0/1) for the backward pass. Bit j of
 * byte i is element 8 i + j (x != 0); the last byte's unused bits are 0. */

typedef struct {
    const void *in;
    void *out;
    int64_t n;
    int dtype;
} bits_args;

/* one function per dtype, full bytes with a constant trip count of 8 (unrolled and vectorized by the compiler),
 * then the partial last byte */
#define PACK_FN(NAME, TYPE, NONZERO)                                                                       \
    static void NAME(const void *p, int64_t lo, int64_t hi, int part) {                                    \
        const bits_args *a = (const bits_args *)p;                                                         \
        const TYPE *x = (const TYPE *)a->in;                                                               \
        uint8_t *out = (uint8_t *)a->out;                                                                  \
        const int64_t full = a->n / 8, end = hi < full ? hi : full;                                        \
        for (int64_t i = lo; i < end; i++) {                                                               \
            const TYPE *v = x + 8 * i;                                                                     \
            unsigned byte = 0;                                                                             \
            for (int j = 0; j < 8; j++) byte |= (unsigned)(NONZERO(v[j])) << j;                            \
            out[i] = (uint8_t)byte;                                                                        \
        }                                                                                                  \
        if (hi > full && full >= lo) {                                                                     \
            unsigned byte = 0;                                                                             \
            for (int64_t e = 8 * full; e < a->n; e++) byte |= (unsigned)(NONZERO(x[e])) << (e - 8 * full); \
            out[full] = (uint8_t)byte;                                                                     \
        }                                                                                                  \
    }

#define NZ_F(v) ((v) != 0)
#define NZ_BF16(v) (((v) & 0x7fffu) != 0)
PACK_FN(pack_f32, float, NZ_F)
PACK_FN(pack_f64, double, NZ_F)
PACK_FN(pack_bf16, uint16_t, NZ_BF16)
PACK_FN(pack_u8, uint8_t, NZ_F)

#define UNPACK_FN(NAME, TYPE, ONE)                                                                         \
    static void NAME(const void *p, int64_t lo, int64_t hi, int part) {                                    \
        const bits_args *a = (const bits_args *)p;                                                         \
        const uint8_t *bits = (const uint8_t *)a->in;                                                      \
        TYPE *out = (TYPE *)a->out;                                                                        \
        const int64_t full = a->n / 8, end = hi < full ? hi : full;                                        \
        for (int64_t i = lo; i < end; i++) {                                                               \
            const unsigned byte = bits[i];                                                                 \
            TYPE *o = out + 8 * i;                                                                         \
            for (int j = 0; j < 8; j++) o[j] = ((byte >> j) & 1u) ? (TYPE)(ONE) : (TYPE)0;                 \
        }                                                                                                  \
        if (hi > full && full >= lo) {                                                                     \
            const unsigned byte = bits[full];                                                              \
            for (int64_t e = 8 * full; e < a->n; e++)                                                      \
                out[e] = ((byte >> (e - 8 * full)) & 1u) ? (TYPE)(ONE) : (TYPE)0;                          \
        }                                                                                                  \
    }

UNPACK_FN(unpack_f32, float, 1.0f)
UNPACK_FN(unpack_f64, double, 1.0)
UNPACK_FN(unpack_bf16, uint16_t, 0x3f80u)

/* dtype codes as above, and 3 for bool/uint8 input (pack only) */
int tdbn_pack_bits(int dtype, const void *x, uint8_t *bits, int64_t n, int nthreads) {
    static const range_fn fns[4] = {pack_f32, pack_f64, pack_bf16, pack_u8};
    if (dtype < 0 || dtype > 3) return -1;
    bits_args a = {x, bits, n, dtype};
    const int64_t nbytes = (n + 7) / 8;
    parallel(fns[dtype], &a, nbytes, 512, plan(nbytes, 512, 8, nthreads));
    return 0;
}

int tdbn_unpack_bits(int dtype, const uint8_t *bits, void *out, int64_t n, int nthreads) {
    static const range_fn fns[3] = {unpack_f32, unpack_f64, unpack_bf16};
    if (dtype < 0 || dtype > 2) return -1;
    bits_args a = {bits, out, n, dtype};
    const int64_t nbytes = (n + 7) / 8;
    parallel(fns[dtype], &a, nbytes, 512, plan(nbytes, 512, 8, nthreads));
    return 0;
}
