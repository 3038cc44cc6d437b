// Fused CPU kernels of the four recurrent families of trainer/models.py for a pack of K members:
// the paper's GRU (eq. 2-5, Algorithm 1), the Elman RNN, the LSTM and the diagonal RNN, plus the
// family-agnostic tail of a training step (softmax cross-entropy, closed-form penalties, SGD with
// the trace row).
//
// One call runs the forward (or the backward through time) of every member, member after member:
// all T time steps of a member stay in L1/L2 instead of every elementwise op streaming the whole
// pack through the cache. Each member's numbers depend on its own row only, so a pack gives the
// same result as K solo runs, bit for bit.
//
// Layouts (as trainer/models.py, "x @ W" form), all in one row of the flat (K, P) buffer:
//   gru:      Wx (D, 3H) gates [z, r, h~], Wh_zr (H, 2H), Wh_h (H, H), b (3H), W_out (H, C), b_out (C)
//   rnn:      Wx (D, H), Wh (H, H), b (H), W_out (H, C), b_out (C)
//   lstm:     Wx (D, 4H), Wh (H, 4H) gates [i, f, c~, o], b (4H), W_out (H, C), b_out (C)
//   diag_rnn: U (D, H), w (H), W_out (H, C); no biases
// (bias = 0 drops b and b_out). The equations are at each family's kernels below.
// h_0 = 0 (and c_0 = 0), so step 0 has no recurrent matmul (h_0 W = 0 exactly).
//
// Built with -O3 -march=native and WITHOUT -ffast-math (NaN and inf must propagate: the trainer
// detects divergence from them). exp is a branch-free polynomial the compiler vectorises:
// float within ~2 ulp (Cephes expf), double within ~1e-16 (degree-13 Taylor after Cody-Waite
// reduction). sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 2 sigmoid(2x) - 1 (as the eager engine).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

inline float exp_poly(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
    float fx = x * 1.44269504088896341f + magic;
    fx = fx - magic;
    int32_t n = static_cast<int32_t>(fx);
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

inline double exp_poly(double x) {
    x = x > 708.0 ? 708.0 : x;
    x = x < -708.0 ? -708.0 : x;
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    double fx = x * 1.4426950408889634074 + magic;
    fx = fx - magic;
    int64_t n = static_cast<int64_t>(fx);
    double r = x - fx * 6.93145751953125e-1;
    r = r - fx * 1.42860682030941723212e-6;
    double p = 1.0 / 6227020800.0;  // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    int64_t bits = (n + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

template <typename T>
void sigmoid_inplace(T* __restrict a, int64_t n) {
    for (int64_t i = 0; i < n; ++i) a[i] = T(1) / (T(1) + exp_poly(-a[i]));
}

template <typename T>
void tanh_inplace(T* __restrict a, int64_t n) {
    for (int64_t i = 0; i < n; ++i) a[i] = T(2) / (T(1) + exp_poly(T(-2) * a[i])) - T(1);
}

#if defined(__AVX512F__)
// float with AVX-512: exp_poly on 16 lanes, and 1 / d as rcp14 refined by one Newton step (relative
// error ~2^-28, below float's 2^-24) instead of the ~10-cycle vdivps; NaN stays NaN.
inline __m512 exp_poly16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);  // min(88, x) and max(-87, x) keep a NaN x
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    __m512 fx = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic), magic);
    __m512i n = _mm512_cvttps_epi32(fx);
    __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(p, scale);
}

inline __m512 recip16(__m512 d) {
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

// a <- scale_out / (1 + exp(-scale_in a)) - shift: sigmoid (1, 1, 0) and tanh (2, 2, 1)
inline void logistic16(float* __restrict a, int64_t n, float scale_in, float scale_out, float shift) {
    const __m512 one = _mm512_set1_ps(1.0f), si = _mm512_set1_ps(-scale_in), so = _mm512_set1_ps(scale_out),
                 sh = _mm512_set1_ps(shift);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, a + i);
        const __m512 e = exp_poly16(_mm512_mul_ps(si, v));
        const __m512 s = _mm512_fmsub_ps(so, recip16(_mm512_add_ps(one, e)), sh);
        _mm512_mask_storeu_ps(a + i, m, s);
    }
}

template <>
void sigmoid_inplace<float>(float* __restrict a, int64_t n) {
    logistic16(a, n, 1.0f, 1.0f, 0.0f);
}

template <>
void tanh_inplace<float>(float* __restrict a, int64_t n) {
    logistic16(a, n, 2.0f, 2.0f, 1.0f);
}
#endif

// Register tile of C (RT x CT, row stride ldc) += A (RT x Kd) @ B (Kd x CT, ldb), A(i, k) = A[i * sai + k * sak]:
// the accumulators stay in vector registers for the whole k loop (the sum over k runs in order).
template <typename T, int RT, int CT>
inline void mm_tile(int64_t Kd, const T* __restrict A, int64_t sai, int64_t sak, const T* __restrict B, int64_t ldb,
                    T* __restrict C, int64_t ldc) {
    T acc[RT][CT];
    for (int r = 0; r < RT; ++r)
        for (int j = 0; j < CT; ++j) acc[r][j] = C[r * ldc + j];
    for (int64_t k = 0; k < Kd; ++k) {
        const T* b = B + k * ldb;
        for (int r = 0; r < RT; ++r) {
            const T a = A[r * sai + k * sak];
            for (int j = 0; j < CT; ++j) acc[r][j] += a * b[j];
        }
    }
    for (int r = 0; r < RT; ++r)
        for (int j = 0; j < CT; ++j) C[r * ldc + j] = acc[r][j];
}

// The columns of C (M x N, N < one register tile) += A (M x Kd) @ B (Kd x N): a readout's few classes, a
// tile's leftover columns. Vectorised over rows instead: a block of one vector of rows of A is copied
// transposed (KC k at a time) and each column's accumulator holds that block's rows. Each element's
// sum runs over k in order, as in mm_tile, so the numbers are those of a scalar loop, bit for bit.
// (Scalar loops over the 3 classes of the Iris readout were ~15 % of a GRU forward on a Xeon.)
template <typename T, int CT>
void mm_narrow(int64_t M, int64_t N, int64_t Kd, const T* __restrict A, int64_t sai, int64_t sak,
               const T* __restrict B, int64_t ldb, T* __restrict C, int64_t ldc) {
    constexpr int R = 64 / sizeof(T), KC = 32;
    T acc[CT][R];
    T at[KC][R];
    for (int64_t i = 0; i < M; i += R) {
        const int rows = static_cast<int>(std::min<int64_t>(R, M - i));
        for (int64_t j = 0; j < N; ++j)
            for (int r = 0; r < R; ++r) acc[j][r] = r < rows ? C[(i + r) * ldc + j] : T(0);
        for (int64_t k0 = 0; k0 < Kd; k0 += KC) {
            const int64_t kn = std::min<int64_t>(KC, Kd - k0);
            for (int64_t k = 0; k < kn; ++k)
                for (int r = 0; r < R; ++r) at[k][r] = r < rows ? A[(i + r) * sai + (k0 + k) * sak] : T(0);
            for (int64_t k = 0; k < kn; ++k) {
                const T* b = B + (k0 + k) * ldb;
                for (int64_t j = 0; j < N; ++j) {
                    const T bv = b[j];
                    for (int r = 0; r < R; ++r) acc[j][r] += at[k][r] * bv;
                }
            }
        }
        for (int64_t j = 0; j < N; ++j)
            for (int r = 0; r < rows; ++r) C[(i + r) * ldc + j] = acc[j][r];
    }
}

// C (M x N, row stride ldc) += A (M x Kd) @ B (Kd x N, ldb) with A(i, k) = A[i * sai + k * sak], in tiles
// of 8 rows x two vectors of columns (4-row tiles: forward and evaluation ~15 % slower, backward ~20 %,
// on an AMD EPYC with AVX-512); the columns beyond the last whole tile by mm_narrow
template <typename T>
void mm_strided(int64_t M, int64_t N, int64_t Kd, const T* __restrict A, int64_t sai, int64_t sak,
                const T* __restrict B, int64_t ldb, T* __restrict C, int64_t ldc) {
    constexpr int RT = 8, CT = 64 / sizeof(T) * 2;
    const int64_t whole = N - N % CT;
    int64_t i = 0;
    for (; i + RT <= M; i += RT)
        for (int64_t j = 0; j < whole; j += CT)
            mm_tile<T, RT, CT>(Kd, A + i * sai, sai, sak, B + j, ldb, C + i * ldc + j, ldc);
    for (; i < M; ++i)
        for (int64_t j = 0; j < whole; j += CT)
            mm_tile<T, 1, CT>(Kd, A + i * sai, sai, sak, B + j, ldb, C + i * ldc + j, ldc);
    if (whole < N) mm_narrow<T, CT>(M, N - whole, Kd, A, sai, sak, B + whole, ldb, C + whole, ldc);
}

// C (M x N, ldc) += A (M x Kd, lda) @ B (Kd x N, ldb)
template <typename T>
inline void mm_acc(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                   int64_t ldc) {
    mm_strided(M, N, Kd, A, lda, int64_t(1), B, ldb, C, ldc);
}

// C (M x N, ldc) += A^T @ B with A (Kd x M, lda), B (Kd x N, ldb): the weight gradients
template <typename T>
inline void mm_tn_acc(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                      int64_t ldc) {
    mm_strided(M, N, Kd, A, int64_t(1), lda, B, ldb, C, ldc);
}

template <typename T>
void transpose(int64_t R, int64_t Cc, const T* __restrict A, T* __restrict out) {  // A (R x Cc) -> out (Cc x R)
    for (int64_t j = 0; j < Cc; ++j)  // contiguous writes, strided reads (loads are the cheaper side)
        for (int64_t i = 0; i < R; ++i) out[j * R + i] = A[i * Cc + j];
}

// The shapes of one call and where each parameter starts in a member's row: oWx the input weights
// (Wx, or U of diag_rnn), oWh the first recurrent ones (Wh_zr of the GRU, Wh, or w of diag_rnn),
// oWh2 the GRU's Wh_h, ob the gate biases, oWo / obo the readout; xs is x's member stride (0: shared).
struct Dims {
    int64_t K, B, T, D, H, C, bias, P, oWx, oWh, oWh2, ob, oWo, obo, xs, threads;
    explicit Dims(const int64_t* d)
        : K(d[0]), B(d[1]), T(d[2]), D(d[3]), H(d[4]), C(d[5]), bias(d[6]), P(d[7]), oWx(d[8]), oWh(d[9]),
          oWh2(d[10]), ob(d[11]), oWo(d[12]), obo(d[13]), xs(d[14]), threads(d[15]) {}
};

// body(k, work) for every member k: with threads > 1 the members are split between OpenMP threads
// (static schedule), each member computed by the same code as alone; work is the calling thread's
// scratch of n_work elements.
template <typename T, typename F>
void over_members(const Dims& d, int64_t n_work, F body) {
#pragma omp parallel num_threads(static_cast<int>(d.threads)) if (d.threads > 1)
    {
        std::vector<T> work(n_work);
#pragma omp for schedule(static)
        for (int64_t k = 0; k < d.K; ++k) body(k, work.data());
    }
}

// ---- GRU --------------------------------------------------------------------------------------

// Forward of member k. keep: hs (T+1, B, H), zr (T, B, 2H), rh (T, B, H), cc (T, B, H) of this member
// are kept for the backward; otherwise every step reuses slot 0 (h ping-pongs between 0 and 1).
// z = s(x Wz + h Wzh + bz), r = s(x Wr + h Wrh + br), c = tanh(x Wh + (r*h) Wh~ + bh),
// h' = h + z (c - h);  out = h_T W_out + b_out.
template <typename T>
void gru_forward_member(const Dims& d, const T* w, const T* x, T* out, T* hs, T* zr_all, T* rh_all, T* cc_all,
                        bool keep) {
    const int64_t B = d.B, H = d.H, D = d.D, G = 3 * H, TT = d.T, Dx = d.T * d.D;
    const T* Wx = w + d.oWx;
    const T* Wzr = w + d.oWh;
    const T* Whh = w + d.oWh2;
    const T* bb = d.bias ? w + d.ob : nullptr;
    std::memset(hs, 0, sizeof(T) * B * H);
    for (int64_t t = 0; t < TT; ++t) {
        const int64_t s = keep ? t : 0;
        const T* h = hs + (keep ? t : (t & 1)) * B * H;
        T* hn = hs + (keep ? t + 1 : ((t + 1) & 1)) * B * H;
        T* zr = zr_all + s * B * 2 * H;
        T* rh = rh_all + s * B * H;
        T* c = cc_all + s * B * H;
        for (int64_t b = 0; b < B; ++b) {  // input projection x_t Wx + b
            T* az = zr + b * 2 * H;
            T* ac = c + b * H;
            for (int64_t g = 0; g < 2 * H; ++g) az[g] = bb ? bb[g] : T(0);
            for (int64_t g = 0; g < H; ++g) ac[g] = bb ? bb[2 * H + g] : T(0);
            const T* xb = x + b * Dx + t * D;
            for (int64_t q = 0; q < D; ++q) {
                const T xv = xb[q];
                const T* wr = Wx + q * G;
                for (int64_t g = 0; g < 2 * H; ++g) az[g] += xv * wr[g];
                for (int64_t g = 0; g < H; ++g) ac[g] += xv * wr[2 * H + g];
            }
        }
        if (t > 0) mm_acc(B, 2 * H, H, h, H, Wzr, 2 * H, zr, 2 * H);
        sigmoid_inplace(zr, B * 2 * H);
        if (t > 0) {
            for (int64_t b = 0; b < B; ++b)
                for (int64_t i = 0; i < H; ++i) rh[b * H + i] = zr[b * 2 * H + H + i] * h[b * H + i];
            mm_acc(B, H, H, rh, H, Whh, H, c, H);
        } else {
            std::memset(rh, 0, sizeof(T) * B * H);
        }
        tanh_inplace(c, B * H);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < H; ++i) {
                const T hv = h[b * H + i];
                hn[b * H + i] = hv + zr[b * 2 * H + i] * (c[b * H + i] - hv);
            }
    }
    const T* hT = hs + (keep ? TT : (TT & 1)) * B * H;
    const T* Wo = w + d.oWo;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < d.C; ++j) out[b * d.C + j] = d.bias ? w[d.obo + j] : T(0);
    mm_acc(B, d.C, H, hT, H, Wo, d.C, out, d.C);
}

template <typename T>
void gru_forward(const T* flat, const T* x, T* out, T* hs, T* zr, T* rh, T* cc, const int64_t* dims) {
    const Dims d(dims);
    const bool keep = hs != nullptr;
    const int64_t B = d.B, H = d.H, TB = d.T * d.B;
    over_members<T>(d, keep ? 0 : B * H * 6, [&](int64_t k, T* s) {
        if (keep)
            gru_forward_member(d, flat + k * d.P, x + k * d.xs, out + k * B * d.C, hs + k * (TB + B) * H,
                               zr + k * TB * 2 * H, rh + k * TB * H, cc + k * TB * H, true);
        else
            gru_forward_member(d, flat + k * d.P, x + k * d.xs, out + k * B * d.C, s, s + 2 * B * H, s + 4 * B * H,
                               s + 5 * B * H, false);
    });
}

// One backward time step's gradient of the reset gate's pre-activation (the second half of each row of
// gzr, B x 2H) and the part of dE/dh_{t-1} that does not pass through a matmul (dhn). Its own function so
// that the pointers are __restrict: inline in gru_backward_member, the loop stayed scalar (the
// compiler could not rule out that gzr and dhn alias the rest of the scratch).
template <typename T>
inline void gru_reset_and_state_grad(int64_t B, int64_t H, const T* __restrict zr, const T* __restrict h,
                                     const T* __restrict drh, const T* __restrict dh, T* __restrict gzr,
                                     T* __restrict dhn) {
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < H; ++i) {
            const int64_t j = b * H + i;
            const T z = zr[b * 2 * H + i], r = zr[b * 2 * H + H + i];
            gzr[b * 2 * H + H + i] = drh[j] * h[j] * (r * (T(1) - r));
            dhn[j] = dh[j] - dh[j] * z + drh[j] * r;
        }
}

// Backward through time of member k from dE/d out (B, C); writes the whole gradient row g (P).
template <typename T>
void gru_backward_member(const Dims& d, const T* w, const T* x, const T* dout, const T* hs, const T* zr_all,
                         const T* rh_all, const T* cc_all, T* g, T* work) {
    const int64_t B = d.B, H = d.H, D = d.D, C = d.C, G = 3 * H, TT = d.T, Dx = d.T * d.D;
    std::memset(g, 0, sizeof(T) * d.P);
    T* gWx = g + d.oWx;
    T* gWzr = g + d.oWh;
    T* gWhh = g + d.oWh2;
    T* gb = d.bias ? g + d.ob : nullptr;
    T* dh = work;
    T* dhn = dh + B * H;
    T* dah = dhn + B * H;
    T* drh = dah + B * H;
    T* gzr = drh + B * H;  // B x 2H
    T* WzrT = gzr + B * 2 * H;  // 2H x H
    T* WhhT = WzrT + 2 * H * H;  // H x H
    T* WoT = WhhT + H * H;  // C x H
    const T* hT = hs + TT * B * H;
    mm_tn_acc(H, C, B, hT, H, dout, C, g + d.oWo, C);
    if (d.bias)
        for (int64_t b = 0; b < B; ++b)
            for (int64_t j = 0; j < C; ++j) g[d.obo + j] += dout[b * C + j];
    transpose(H, C, w + d.oWo, WoT);
    transpose(H, 2 * H, w + d.oWh, WzrT);
    transpose(H, H, w + d.oWh2, WhhT);
    std::memset(dh, 0, sizeof(T) * B * H);
    mm_acc(B, H, C, dout, C, WoT, H, dh, H);
    for (int64_t t = TT - 1; t >= 0; --t) {
        const T* h = hs + t * B * H;
        const T* zr = zr_all + t * B * 2 * H;
        const T* rh = rh_all + t * B * H;
        const T* c = cc_all + t * B * H;
        for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < H; ++i) {
                const int64_t j = b * H + i;
                const T z = zr[b * 2 * H + i], cv = c[j];
                dah[j] = dh[j] * z * (T(1) - cv * cv);
                gzr[b * 2 * H + i] = dh[j] * (cv - h[j]) * (z * (T(1) - z));
            }
        if (t > 0) {
            std::memset(drh, 0, sizeof(T) * B * H);
            mm_acc(B, H, H, dah, H, WhhT, H, drh, H);
            gru_reset_and_state_grad(B, H, zr, h, drh, dh, gzr, dhn);
            mm_acc(B, H, 2 * H, gzr, 2 * H, WzrT, H, dhn, H);
            mm_tn_acc(H, 2 * H, B, h, H, gzr, 2 * H, gWzr, 2 * H);
            mm_tn_acc(H, H, B, rh, H, dah, H, gWhh, H);
        } else {
            for (int64_t b = 0; b < B; ++b)
                for (int64_t i = 0; i < H; ++i) gzr[b * 2 * H + H + i] = T(0);
        }
        for (int64_t b = 0; b < B; ++b) {
            const T* xb = x + b * Dx + t * D;
            const T* gz = gzr + b * 2 * H;
            const T* gh = dah + b * H;
            for (int64_t q = 0; q < D; ++q) {
                const T xv = xb[q];
                T* row = gWx + q * G;
                for (int64_t i = 0; i < 2 * H; ++i) row[i] += xv * gz[i];
                for (int64_t i = 0; i < H; ++i) row[2 * H + i] += xv * gh[i];
            }
            if (gb) {
                for (int64_t i = 0; i < 2 * H; ++i) gb[i] += gz[i];
                for (int64_t i = 0; i < H; ++i) gb[2 * H + i] += gh[i];
            }
        }
        std::swap(dh, dhn);
    }
}

template <typename T>
void gru_backward(const T* flat, const T* x, const T* dout, const T* hs, const T* zr, const T* rh, const T* cc,
                  T* grad, const int64_t* dims) {
    const Dims d(dims);
    const int64_t B = d.B, H = d.H, TB = d.T * d.B;
    over_members<T>(d, B * H * 6 + 3 * H * H + d.C * H, [&](int64_t k, T* work) {
        gru_backward_member(d, flat + k * d.P, x + k * d.xs, dout + k * B * d.C, hs + k * (TB + B) * H,
                            zr + k * TB * 2 * H, rh + k * TB * H, cc + k * TB * H, grad + k * d.P, work);
    });
}

// ---- helpers of the other families ----------------------------------------------------------

// a (B x G, row stride lda) = b + x_t W: xt points at x[0, t, 0] (rows Dx apart), W (D x G); b may be null.
template <typename T>
void project_input(const Dims& d, const T* xt, const T* W, const T* b, int64_t G, T* a, int64_t lda) {
    const int64_t Dx = d.T * d.D;
    for (int64_t r = 0; r < d.B; ++r) {
        T* row = a + r * lda;
        for (int64_t g = 0; g < G; ++g) row[g] = b ? b[g] : T(0);
        const T* xb = xt + r * Dx;
        for (int64_t q = 0; q < d.D; ++q) {
            const T xv = xb[q];
            const T* wr = W + q * G;
            for (int64_t g = 0; g < G; ++g) row[g] += xv * wr[g];
        }
    }
}

// gW (D x G) += x_t^T da and gb (G) += the column sums of da (B x G, row stride lda); gb may be null.
template <typename T>
void input_grad(const Dims& d, const T* xt, const T* da, int64_t G, int64_t lda, T* gW, T* gb) {
    const int64_t Dx = d.T * d.D;
    for (int64_t r = 0; r < d.B; ++r) {
        const T* xb = xt + r * Dx;
        const T* dr = da + r * lda;
        for (int64_t q = 0; q < d.D; ++q) {
            const T xv = xb[q];
            T* row = gW + q * G;
            for (int64_t i = 0; i < G; ++i) row[i] += xv * dr[i];
        }
        if (gb)
            for (int64_t i = 0; i < G; ++i) gb[i] += dr[i];
    }
}

// The rest of backward time step t once da = dE/d(gate pre-activations) (B x G; Elman RNN G = H,
// LSTM G = 4H) is known: gWh += h_t^T da (t > 0: h_0 = 0), dhn = dE/dh_{t-1} = da Wh^T (WhT: G x H),
// gWx += x_t^T da, gb += the column sums of da.
template <typename T>
void gates_step_grad(const Dims& d, const T* x, const T* hs, const T* da, const T* WhT, int64_t G, int64_t t, T* g,
                     T* dhn) {
    const int64_t B = d.B, H = d.H;
    if (t > 0) {
        mm_tn_acc(H, G, B, hs + t * B * H, H, da, G, g + d.oWh, G);
        std::memset(dhn, 0, sizeof(T) * B * H);
        mm_acc(B, H, G, da, G, WhT, H, dhn, H);
    }
    input_grad(d, x + t * d.D, da, G, G, g + d.oWx, d.bias ? g + d.ob : nullptr);
}

// out (B x C) = h_T W_out + b_out
template <typename T>
void readout(const Dims& d, const T* w, const T* hT, T* out) {
    for (int64_t r = 0; r < d.B; ++r)
        for (int64_t j = 0; j < d.C; ++j) out[r * d.C + j] = d.bias ? w[d.obo + j] : T(0);
    mm_acc(d.B, d.C, d.H, hT, d.H, w + d.oWo, d.C, out, d.C);
}

// g[W_out] += h_T^T dout, g[b_out] += column sums of dout; dh (B x H) = dout W_out^T (WoT: C x H scratch)
template <typename T>
void readout_backward(const Dims& d, const T* w, const T* hT, const T* dout, T* g, T* WoT, T* dh) {
    const int64_t B = d.B, H = d.H, C = d.C;
    mm_tn_acc(H, C, B, hT, H, dout, C, g + d.oWo, C);
    if (d.bias)
        for (int64_t r = 0; r < B; ++r)
            for (int64_t j = 0; j < C; ++j) g[d.obo + j] += dout[r * C + j];
    transpose(H, C, w + d.oWo, WoT);
    std::memset(dh, 0, sizeof(T) * B * H);
    mm_acc(B, H, C, dout, C, WoT, H, dh, H);
}

// ---- Elman RNN ---------------------------------------------------------------------------------

// h' = tanh(x Wx + h Wh + b);  out = h_T W_out + b_out. keep: hs (T+1, B, H) of this member is kept
// for the backward; otherwise h ping-pongs between slots 0 and 1.
template <typename T>
void rnn_forward_member(const Dims& d, const T* w, const T* x, T* out, T* hs, bool keep) {
    const int64_t B = d.B, H = d.H;
    const T* bb = d.bias ? w + d.ob : nullptr;
    std::memset(hs, 0, sizeof(T) * B * H);
    for (int64_t t = 0; t < d.T; ++t) {
        const T* h = hs + (keep ? t : (t & 1)) * B * H;
        T* hn = hs + (keep ? t + 1 : ((t + 1) & 1)) * B * H;
        project_input(d, x + t * d.D, w + d.oWx, bb, H, hn, H);
        if (t > 0) mm_acc(B, H, H, h, H, w + d.oWh, H, hn, H);
        tanh_inplace(hn, B * H);
    }
    readout(d, w, hs + (keep ? d.T : (d.T & 1)) * B * H, out);
}

template <typename T>
void rnn_forward(const T* flat, const T* x, T* out, T* hs, const int64_t* dims) {
    const Dims d(dims);
    const bool keep = hs != nullptr;
    const int64_t B = d.B, H = d.H;
    over_members<T>(d, keep ? 0 : 2 * B * H, [&](int64_t k, T* s) {
        rnn_forward_member(d, flat + k * d.P, x + k * d.xs, out + k * B * d.C,
                           keep ? hs + k * (d.T + 1) * B * H : s, keep);
    });
}

// Backward through time: a_t = dE/d(pre-activation) = dh_{t+1} (1 - h_{t+1}^2), dh_t = a_t Wh^T;
// gWh += h_t^T a_t (t > 0: h_0 = 0), gWx += x_t^T a_t, gb += sum_rows a_t.
template <typename T>
void rnn_backward_member(const Dims& d, const T* w, const T* x, const T* dout, const T* hs, T* g, T* work) {
    const int64_t B = d.B, H = d.H;
    std::memset(g, 0, sizeof(T) * d.P);
    T* dh = work;
    T* dhn = dh + B * H;
    T* da = dhn + B * H;
    T* WhT = da + B * H;  // H x H
    T* WoT = WhT + H * H;  // C x H
    readout_backward(d, w, hs + d.T * B * H, dout, g, WoT, dh);
    transpose(H, H, w + d.oWh, WhT);
    for (int64_t t = d.T - 1; t >= 0; --t) {
        const T* hn = hs + (t + 1) * B * H;
        for (int64_t j = 0; j < B * H; ++j) da[j] = dh[j] * (T(1) - hn[j] * hn[j]);
        gates_step_grad(d, x, hs, da, WhT, H, t, g, dhn);
        std::swap(dh, dhn);
    }
}

template <typename T>
void rnn_backward(const T* flat, const T* x, const T* dout, const T* hs, T* grad, const int64_t* dims) {
    const Dims d(dims);
    const int64_t B = d.B, H = d.H;
    over_members<T>(d, 3 * B * H + H * H + d.C * H, [&](int64_t k, T* work) {
        rnn_backward_member(d, flat + k * d.P, x + k * d.xs, dout + k * B * d.C, hs + k * (d.T + 1) * B * H,
                            grad + k * d.P, work);
    });
}

// ---- LSTM --------------------------------------------------------------------------------------

// a = x Wx + h Wh + b, gates [i, f, c~, o]: i = s(a_i), f = s(a_f), c~ = tanh(a_c), o = s(a_o);
// c' = f c + i c~ (step 0: c' = i c~), h' = o tanh(c');  out = h_T W_out + b_out.
// keep: hs (T+1, B, H), gates (T, B, 4H) after their activations, cs (T+1, B, H) and tanh(c')
// tc (T, B, H) of this member are kept for the backward; otherwise h and c ping-pong between slots
// 0 and 1 and every step reuses slot 0 of gates and tc.
template <typename T>
void lstm_forward_member(const Dims& d, const T* w, const T* x, T* out, T* hs, T* gates, T* cs, T* tcs,
                         bool keep) {
    const int64_t B = d.B, H = d.H, G = 4 * H;
    const T* bb = d.bias ? w + d.ob : nullptr;
    std::memset(hs, 0, sizeof(T) * B * H);
    std::memset(cs, 0, sizeof(T) * B * H);
    for (int64_t t = 0; t < d.T; ++t) {
        const int64_t now = keep ? t : (t & 1), next = keep ? t + 1 : ((t + 1) & 1);
        const T* h = hs + now * B * H;
        const T* c = cs + now * B * H;
        T* hn = hs + next * B * H;
        T* cn = cs + next * B * H;
        T* a = gates + (keep ? t : 0) * B * G;
        T* tc = tcs + (keep ? t : 0) * B * H;
        project_input(d, x + t * d.D, w + d.oWx, bb, G, a, G);
        if (t > 0) mm_acc(B, G, H, h, H, w + d.oWh, G, a, G);
        for (int64_t r = 0; r < B; ++r) {
            T* row = a + r * G;
            sigmoid_inplace(row, 2 * H);
            tanh_inplace(row + 2 * H, H);
            sigmoid_inplace(row + 3 * H, H);
        }
        for (int64_t r = 0; r < B; ++r) {
            const T* row = a + r * G;
            for (int64_t i = 0; i < H; ++i) {
                const int64_t j = r * H + i;
                const T ig = row[i] * row[2 * H + i];
                cn[j] = t > 0 ? row[H + i] * c[j] + ig : ig;
                tc[j] = cn[j];
            }
        }
        tanh_inplace(tc, B * H);
        for (int64_t r = 0; r < B; ++r)
            for (int64_t i = 0; i < H; ++i) hn[r * H + i] = a[r * G + 3 * H + i] * tc[r * H + i];
    }
    readout(d, w, hs + (keep ? d.T : (d.T & 1)) * B * H, out);
}

template <typename T>
void lstm_forward(const T* flat, const T* x, T* out, T* hs, T* gates, T* cs, T* tcs, const int64_t* dims) {
    const Dims d(dims);
    const bool keep = hs != nullptr;
    const int64_t B = d.B, H = d.H, T1B = (d.T + 1) * d.B, TB = d.T * d.B;
    over_members<T>(d, keep ? 0 : 9 * B * H, [&](int64_t k, T* s) {
        if (keep)
            lstm_forward_member(d, flat + k * d.P, x + k * d.xs, out + k * B * d.C, hs + k * T1B * H,
                                gates + k * TB * 4 * H, cs + k * T1B * H, tcs + k * TB * H, true);
        else
            lstm_forward_member(d, flat + k * d.P, x + k * d.xs, out + k * B * d.C, s, s + 2 * B * H,
                                s + 6 * B * H, s + 8 * B * H, false);
    });
}

// One backward time step's gradient of the four gates' pre-activations da (B x 4H) from dE/dh (dh) and
// dE/dc (dc, updated in place to dE/dc_{t-1}). Its own function so that the pointers are __restrict
// (inline, the loop stayed scalar: see gru_reset_and_state_grad).
template <typename T>
inline void lstm_gate_grad(int64_t B, int64_t H, const T* __restrict a, const T* __restrict c,
                           const T* __restrict tc, const T* __restrict dh, T* __restrict dc, T* __restrict da) {
    const int64_t G = 4 * H;
    for (int64_t r = 0; r < B; ++r) {
        const T* row = a + r * G;
        T* drow = da + r * G;
        for (int64_t i = 0; i < H; ++i) {
            const int64_t j = r * H + i;
            const T ig = row[i], fg = row[H + i], cg = row[2 * H + i], og = row[3 * H + i], tv = tc[j];
            const T dcv = dc[j] + dh[j] * og * (T(1) - tv * tv);
            drow[i] = dcv * cg * (ig * (T(1) - ig));
            drow[H + i] = dcv * c[j] * (fg * (T(1) - fg));
            drow[2 * H + i] = dcv * ig * (T(1) - cg * cg);
            drow[3 * H + i] = dh[j] * tv * (og * (T(1) - og));
            dc[j] = dcv * fg;
        }
    }
}

// Backward through time, with dc the gradient carried along the cell state:
//   dc += dh o (1 - tanh(c')^2);  da_i = dc c~ i (1 - i), da_f = dc c f (1 - f),
//   da_c = dc i (1 - c~^2), da_o = dh tanh(c') o (1 - o);  dc <- dc f, dh <- da Wh^T;
//   gWh += h_t^T da (t > 0: h_0 = 0), gWx += x_t^T da, gb += sum_rows da.
template <typename T>
void lstm_backward_member(const Dims& d, const T* w, const T* x, const T* dout, const T* hs, const T* gates,
                          const T* cs, const T* tcs, T* g, T* work) {
    const int64_t B = d.B, H = d.H, G = 4 * H;
    std::memset(g, 0, sizeof(T) * d.P);
    T* dh = work;
    T* dhn = dh + B * H;
    T* dc = dhn + B * H;
    T* da = dc + B * H;  // B x 4H
    T* WhT = da + B * G;  // 4H x H
    T* WoT = WhT + G * H;  // C x H
    readout_backward(d, w, hs + d.T * B * H, dout, g, WoT, dh);
    transpose(H, G, w + d.oWh, WhT);
    std::memset(dc, 0, sizeof(T) * B * H);
    for (int64_t t = d.T - 1; t >= 0; --t) {
        const T* a = gates + t * B * G;
        const T* c = cs + t * B * H;
        const T* tc = tcs + t * B * H;
        lstm_gate_grad(B, H, a, c, tc, dh, dc, da);
        gates_step_grad(d, x, hs, da, WhT, G, t, g, dhn);
        std::swap(dh, dhn);
    }
}

template <typename T>
void lstm_backward(const T* flat, const T* x, const T* dout, const T* hs, const T* gates, const T* cs,
                   const T* tcs, T* grad, const int64_t* dims) {
    const Dims d(dims);
    const int64_t B = d.B, H = d.H, T1B = (d.T + 1) * d.B, TB = d.T * d.B;
    over_members<T>(d, 7 * B * H + 4 * H * H + d.C * H, [&](int64_t k, T* work) {
        lstm_backward_member(d, flat + k * d.P, x + k * d.xs, dout + k * B * d.C, hs + k * T1B * H,
                             gates + k * TB * 4 * H, cs + k * T1B * H, tcs + k * TB * H, grad + k * d.P, work);
    });
}

// ---- diagonal RNN --------------------------------------------------------------------------------

// h' = tanh(w * h + x U) (w: the diagonal of the recurrence), out = (h_T[:m] W_out[:m] + h_T[m:] W_out[m:])
// / sqrt(H) with m = H / 2: the two halves are summed apart, so the symmetric initialisation (second
// half = first half with the readout negated) gives an exact 0, as trainer/cells.py. No biases.
// keep: hs (T+1, B, H) is kept; otherwise h ping-pongs between slots 0 and 1. tmp: B x C scratch.
template <typename T>
void diag_forward_member(const Dims& d, const T* w, const T* x, T* out, T* hs, T* tmp, bool keep) {
    const int64_t B = d.B, H = d.H, C = d.C, m = H / 2;
    const T* wd = w + d.oWh;
    std::memset(hs, 0, sizeof(T) * B * H);
    for (int64_t t = 0; t < d.T; ++t) {
        const T* h = hs + (keep ? t : (t & 1)) * B * H;
        T* hn = hs + (keep ? t + 1 : ((t + 1) & 1)) * B * H;
        project_input(d, x + t * d.D, w + d.oWx, static_cast<const T*>(nullptr), H, hn, H);
        if (t > 0)
            for (int64_t r = 0; r < B; ++r)
                for (int64_t i = 0; i < H; ++i) hn[r * H + i] += wd[i] * h[r * H + i];
        tanh_inplace(hn, B * H);
    }
    const T* hT = hs + (keep ? d.T : (d.T & 1)) * B * H;
    const T* Wo = w + d.oWo;
    std::memset(out, 0, sizeof(T) * B * C);
    std::memset(tmp, 0, sizeof(T) * B * C);
    mm_acc(B, C, m, hT, H, Wo, C, out, C);
    mm_acc(B, C, H - m, hT + m, H, Wo + m * C, C, tmp, C);
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(H)));
    for (int64_t j = 0; j < B * C; ++j) out[j] = (out[j] + tmp[j]) * scale;
}

template <typename T>
void diag_forward(const T* flat, const T* x, T* out, T* hs, const int64_t* dims) {
    const Dims d(dims);
    const bool keep = hs != nullptr;
    const int64_t B = d.B, H = d.H;
    over_members<T>(d, (keep ? 0 : 2 * B * H) + B * d.C, [&](int64_t k, T* s) {
        diag_forward_member(d, flat + k * d.P, x + k * d.xs, out + k * B * d.C,
                            keep ? hs + k * (d.T + 1) * B * H : s + B * d.C, s, keep);
    });
}

// Backward through time: dout' = dout / sqrt(H), gW_out = h_T^T dout', dh_T = dout' W_out^T;
// a_t = dh_{t+1} (1 - h_{t+1}^2), dh_t = w * a_t; gw += sum_rows h_t * a_t, gU += x_t^T a_t.
template <typename T>
void diag_backward_member(const Dims& d, const T* w, const T* x, const T* dout, const T* hs, T* g, T* work) {
    const int64_t B = d.B, H = d.H, C = d.C;
    std::memset(g, 0, sizeof(T) * d.P);
    T* dh = work;
    T* da = dh + B * H;
    T* ds = da + B * H;  // B x C
    T* WoT = ds + B * C;  // C x H
    const T* wd = w + d.oWh;
    T* gw = g + d.oWh;
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(H)));
    for (int64_t j = 0; j < B * C; ++j) ds[j] = dout[j] * scale;
    mm_tn_acc(H, C, B, hs + d.T * B * H, H, ds, C, g + d.oWo, C);
    transpose(H, C, w + d.oWo, WoT);
    std::memset(dh, 0, sizeof(T) * B * H);
    mm_acc(B, H, C, ds, C, WoT, H, dh, H);
    for (int64_t t = d.T - 1; t >= 0; --t) {
        const T* h = hs + t * B * H;
        const T* hn = h + B * H;
        for (int64_t j = 0; j < B * H; ++j) da[j] = dh[j] * (T(1) - hn[j] * hn[j]);
        if (t > 0)
            for (int64_t r = 0; r < B; ++r)
                for (int64_t i = 0; i < H; ++i) {
                    gw[i] += h[r * H + i] * da[r * H + i];
                    dh[r * H + i] = wd[i] * da[r * H + i];
                }
        input_grad(d, x + t * d.D, da, H, H, g + d.oWx, static_cast<T*>(nullptr));
    }
}

template <typename T>
void diag_backward(const T* flat, const T* x, const T* dout, const T* hs, T* grad, const int64_t* dims) {
    const Dims d(dims);
    const int64_t B = d.B, H = d.H;
    over_members<T>(d, 2 * B * H + B * d.C + d.C * H, [&](int64_t k, T* work) {
        diag_backward_member(d, flat + k * d.P, x + k * d.xs, dout + k * B * d.C, hs + k * (d.T + 1) * B * H,
                             grad + k * d.P, work);
    });
}

// ---- the step's tail (every family) ------------------------------------------------------------

// One plain-SGD update of the whole pack with its trace row (trainer/step.py's FastStep.step for
// optimizer sgd, fused): per member, in one pass over its row, ||g||, ||g_out||, ||w||, the sparsity
// of W_out and of all weights (|w| < eps, eq. 42), delta = -lr g and ||delta||; a member whose E,
// ||g|| or ||delta|| is not finite becomes inactive (diverged at this step); active members take
// w += delta. row (9, K): E, E_data, penalty, ||g||, ||g_out||, ||w||, ||update||, sparsity_out,
// sparsity_all.
template <typename T>
void sgd_step(T* flat, const T* grad, const T* loss, const T* dloss, const T* pen, const T* lr, uint8_t* active,
              uint8_t* diverged, int64_t* div_step, int64_t* step_no, const T* share, T* row, const int64_t* dims,
              double eps) {
    const int64_t K = dims[0], P = dims[1], lo = dims[2], hi = dims[3], threads = dims[4];
    const T teps = static_cast<T>(eps);
    const int64_t now = *step_no;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (threads > 1)
    for (int64_t k = 0; k < K; ++k) {
        T* w = flat + k * P;
        const T* g = grad + k * P;
        const T step = -lr[k];
        // L independent partial sums per statistic (lanes of one vector), added up at the end
        constexpr int L = 16;
        T gv[L] = {}, wv[L] = {}, dv[L] = {}, sv[L] = {};
        int64_t j0 = 0;
        for (; j0 + L <= P; j0 += L)
            for (int l = 0; l < L; ++l) {
                const T gj = g[j0 + l], wj = w[j0 + l], dj = step * gj;
                gv[l] += gj * gj;
                wv[l] += wj * wj;
                dv[l] += dj * dj;
                const T aw = wj < 0 ? -wj : wj;
                sv[l] += aw < teps ? share[j0 + l] : T(0);
            }
        for (int64_t j = j0; j < P; ++j) {
            const T gj = g[j], wj = w[j], dj = step * gj;
            const int l = static_cast<int>(j - j0);
            gv[l] += gj * gj;
            wv[l] += wj * wj;
            dv[l] += dj * dj;
            const T aw = wj < 0 ? -wj : wj;
            sv[l] += aw < teps ? share[j] : T(0);
        }
        T gn = 0, go = 0, wn = 0, dn = 0, sp_all = 0;
        for (int l = 0; l < L; ++l) {
            gn += gv[l];
            wn += wv[l];
            dn += dv[l];
            sp_all += sv[l];
        }
        int64_t sp_out = 0;
        for (int64_t j = lo; j < hi; ++j) {
            go += g[j] * g[j];
            const T aw = w[j] < 0 ? -w[j] : w[j];
            sp_out += aw < teps;
        }
        const T gnorm = std::sqrt(gn), dnorm = std::sqrt(dn);
        const bool finite = std::isfinite(loss[k]) && std::isfinite(gnorm) && std::isfinite(dnorm);
        if (active[k] && !finite) {
            diverged[k] = 1;
            div_step[k] = now;
        }
        active[k] = active[k] && finite;
        if (active[k])
            for (int64_t j = 0; j < P; ++j) w[j] += step * g[j];
        const T vals[9] = {loss[k], dloss[k], pen[k], gnorm, std::sqrt(go), std::sqrt(wn),
                           active[k] ? dnorm : T(0), T(sp_out) / T(hi - lo), sp_all};
        for (int i = 0; i < 9; ++i) row[i * K + k] = vals[i];
    }
    *step_no += 1;
}

// Cross-entropy of softmax outputs (classification, ``data_loss``'s default), per member: value[k] =
// -scale * sum_n log softmax(out[k, n])[y[k, n]] and dout = scale * (softmax - onehot(y)), as
// trainer/train.py's data_loss (log-softmax with the row's max subtracted, softmax = exp(logp)).
template <typename T>
void cross_entropy(const T* out, const int64_t* y, T* value, T* dout, const int64_t* dims, double scale) {
    const int64_t K = dims[0], n = dims[1], C = dims[2], threads = dims[3];
    const T s = static_cast<T>(scale);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (threads > 1)
    for (int64_t k = 0; k < K; ++k) {
        T total = 0;
        for (int64_t i = 0; i < n; ++i) {
            const T* o = out + (k * n + i) * C;
            T* d = dout + (k * n + i) * C;
            T m = o[0];
            for (int64_t c = 1; c < C; ++c) m = o[c] > m ? o[c] : m;
            T sum = 0;
            for (int64_t c = 0; c < C; ++c) sum += std::exp(o[c] - m);
            const T lse = std::log(sum);
            const int64_t label = y[k * n + i];
            for (int64_t c = 0; c < C; ++c) {
                const T logp = (o[c] - m) - lse;
                d[c] = (std::exp(logp) - (c == label ? T(1) : T(0))) * s;
                if (c == label) total += logp;
            }
        }
        value[k] = -total * s;
    }
}

// The closed-form penalties of trainer/regularizers.py on the columns [lo, hi) of each member's row:
// pen[k] = sum_j c_l1 |w| + c_l2 w^2 + c_sl1 h_alpha(w) (eq. 14), and grad[k, j] += c_l1 sign(w) +
// c_l2 2w + c_sl1 h_alpha'(w). Coefficients are (K, hi - lo); a null one is a penalty no member uses.
template <typename T>
void penalty(const T* flat, T* grad, T* pen, const T* c_l1, const T* c_l2, const T* c_sl1, const T* alpha,
             const int64_t* dims) {
    const int64_t K = dims[0], P = dims[1], lo = dims[2], hi = dims[3], threads = dims[4];
    const int64_t n = hi - lo;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (threads > 1)
    for (int64_t k = 0; k < K; ++k) {
        const T* w = flat + k * P + lo;
        T* g = grad + k * P + lo;
        const T a = alpha[k];
        T total = 0;
        for (int64_t j = 0; j < n; ++j) {
            const T wj = w[j], aw = wj < 0 ? -wj : wj;
            const T sign = wj > 0 ? T(1) : (wj < 0 ? T(-1) : T(0));
            T value = 0, part = 0;
            if (c_l1) {
                const T c = c_l1[k * n + j];
                value += c * aw;
                part += c * sign;
            }
            if (c_l2) {
                const T c = c_l2[k * n + j];
                value += c * wj * wj;
                part += c * (T(2) * wj);
            }
            if (c_sl1) {
                const T c = c_sl1[k * n + j];
                value += c * (aw >= a ? aw : wj * wj / (T(2) * a) + a / T(2));
                part += c * (aw >= a ? sign : wj / a);
            }
            total += value;
            g[j] += part;
        }
        pen[k] = total;
    }
}

}  // namespace

extern "C" {
// dims: K, B, T, D, H, C, bias, P, offsets of Wx, Wh_zr, Wh_h, b, W_out, b_out, x's member stride (0: shared),
// threads
// hs == nullptr: forward only (nothing kept).
void gru_forward_f32(const float* flat, const float* x, float* out, float* hs, float* zr, float* rh, float* cc,
                     const int64_t* dims) {
    gru_forward(flat, x, out, hs, zr, rh, cc, dims);
}
void gru_forward_f64(const double* flat, const double* x, double* out, double* hs, double* zr, double* rh,
                     double* cc, const int64_t* dims) {
    gru_forward(flat, x, out, hs, zr, rh, cc, dims);
}
void gru_backward_f32(const float* flat, const float* x, const float* dout, const float* hs, const float* zr,
                      const float* rh, const float* cc, float* grad, const int64_t* dims) {
    gru_backward(flat, x, dout, hs, zr, rh, cc, grad, dims);
}
void gru_backward_f64(const double* flat, const double* x, const double* dout, const double* hs,
                      const double* zr, const double* rh, const double* cc, double* grad, const int64_t* dims) {
    gru_backward(flat, x, dout, hs, zr, rh, cc, grad, dims);
}
// rnn / diag_rnn: hs (T+1, B, H) per member, or null: forward only. lstm: hs (T+1, B, H), gates
// (T, B, 4H), cs (T+1, B, H), tc (T, B, H) per member, or all null. dims as the GRU's (oWh: Wh, or w
// of diag_rnn; oWh2 unused).
void rnn_forward_f32(const float* flat, const float* x, float* out, float* hs, const int64_t* dims) {
    rnn_forward(flat, x, out, hs, dims);
}
void rnn_forward_f64(const double* flat, const double* x, double* out, double* hs, const int64_t* dims) {
    rnn_forward(flat, x, out, hs, dims);
}
void rnn_backward_f32(const float* flat, const float* x, const float* dout, const float* hs, float* grad,
                      const int64_t* dims) {
    rnn_backward(flat, x, dout, hs, grad, dims);
}
void rnn_backward_f64(const double* flat, const double* x, const double* dout, const double* hs, double* grad,
                      const int64_t* dims) {
    rnn_backward(flat, x, dout, hs, grad, dims);
}
void diag_rnn_forward_f32(const float* flat, const float* x, float* out, float* hs, const int64_t* dims) {
    diag_forward(flat, x, out, hs, dims);
}
void diag_rnn_forward_f64(const double* flat, const double* x, double* out, double* hs, const int64_t* dims) {
    diag_forward(flat, x, out, hs, dims);
}
void diag_rnn_backward_f32(const float* flat, const float* x, const float* dout, const float* hs, float* grad,
                           const int64_t* dims) {
    diag_backward(flat, x, dout, hs, grad, dims);
}
void diag_rnn_backward_f64(const double* flat, const double* x, const double* dout, const double* hs,
                           double* grad, const int64_t* dims) {
    diag_backward(flat, x, dout, hs, grad, dims);
}
void lstm_forward_f32(const float* flat, const float* x, float* out, float* hs, float* gates, float* cs,
                      float* tc, const int64_t* dims) {
    lstm_forward(flat, x, out, hs, gates, cs, tc, dims);
}
void lstm_forward_f64(const double* flat, const double* x, double* out, double* hs, double* gates, double* cs,
                      double* tc, const int64_t* dims) {
    lstm_forward(flat, x, out, hs, gates, cs, tc, dims);
}
void lstm_backward_f32(const float* flat, const float* x, const float* dout, const float* hs, const float* gates,
                       const float* cs, const float* tc, float* grad, const int64_t* dims) {
    lstm_backward(flat, x, dout, hs, gates, cs, tc, grad, dims);
}
void lstm_backward_f64(const double* flat, const double* x, const double* dout, const double* hs,
                       const double* gates, const double* cs, const double* tc, double* grad, const int64_t* dims) {
    lstm_backward(flat, x, dout, hs, gates, cs, tc, grad, dims);
}
// dims: K, P, first and end column of W_out, threads. Bool tensors are bytes.
void sgd_step_f32(float* flat, const float* grad, const float* loss, const float* dloss, const float* pen,
                  const float* lr, uint8_t* active, uint8_t* diverged, int64_t* div_step, int64_t* step_no,
                  const float* share, float* row, const int64_t* dims, double eps) {
    sgd_step(flat, grad, loss, dloss, pen, lr, active, diverged, div_step, step_no, share, row, dims, eps);
}
void sgd_step_f64(double* flat, const double* grad, const double* loss, const double* dloss, const double* pen,
                  const double* lr, uint8_t* active, uint8_t* diverged, int64_t* div_step, int64_t* step_no,
                  const double* share, double* row, const int64_t* dims, double eps) {
    sgd_step(flat, grad, loss, dloss, pen, lr, active, diverged, div_step, step_no, share, row, dims, eps);
}
// dims: K, n, C, threads; y: (K, n) class indices; value (K,), dout (K, n, C).
void cross_entropy_f32(const float* out, const int64_t* y, float* value, float* dout, const int64_t* dims,
                       double scale) {
    cross_entropy(out, y, value, dout, dims, scale);
}
void cross_entropy_f64(const double* out, const int64_t* y, double* value, double* dout, const int64_t* dims,
                       double scale) {
    cross_entropy(out, y, value, dout, dims, scale);
}
// dims: K, P, first and end penalised column, threads.
void penalty_f32(const float* flat, float* grad, float* pen, const float* c_l1, const float* c_l2,
                 const float* c_sl1, const float* alpha, const int64_t* dims) {
    penalty(flat, grad, pen, c_l1, c_l2, c_sl1, alpha, dims);
}
void penalty_f64(const double* flat, double* grad, double* pen, const double* c_l1, const double* c_l2,
                 const double* c_sl1, const double* alpha, const int64_t* dims) {
    penalty(flat, grad, pen, c_l1, c_l2, c_sl1, alpha, dims);
}
}
