"""CPU kernels of the BSS Eval fast path (numba): block cross-spectra and the block Levinson recursion.

On a CPU the recursion of :mod:`avtoolkit.metrics.bss_eval` is ~10 tiny tensor operations per lag, so torch
spends its time dispatching, not computing. These kernels run the same arithmetic compiled, one clip (or
system) per call and without the GIL, so the caller runs them in threads over the clips of a batch (no numba
threading layer: nothing to break in forked DataLoader workers). The torch implementation in ``bss_eval.py``
serves other devices and is the reference they are tested against.
"""

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True, nogil=True)
def cross_spectra(Z: np.ndarray, n_y: int) -> np.ndarray:  # pragma: no cover - compiled
    """``S[u, v, f] = Σ_q (Z_q + (-1)^f Z_{q+1})[u, f] · conj(Z_q[v, f])`` for ``v < n_y`` (eq. 4), one clip.

    Args:
        Z: ``(S, Q, F)`` complex spectra of the zero-padded blocks of every signal of the clip.
        n_y: How many leading signals play the second role.
    """
    S, Q, F = Z.shape
    out = np.zeros((S, n_y, F), dtype=np.complex128)
    for u in range(S):
        for v in range(n_y):
            acc = out[u, v]
            for q in range(Q):
                zu, zv = Z[u, q], Z[v, q]
                if q + 1 < Q:
                    zn = Z[u, q + 1]
                    for f in range(F):
                        sign = 1.0 - 2.0 * (f & 1)
                        acc[f] += (zu[f] + sign * zn[f]) * np.conj(zv[f])
                else:
                    for f in range(F):
                        acc[f] += zu[f] * np.conj(zv[f])
    return out


@njit(cache=True, nogil=True)
def _inverse(a: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Inverse of a small matrix (closed form up to 2×2); all NaN when exactly singular instead of raising."""
    n = a.shape[0]
    out = np.empty((n, n))
    if n == 1:
        out[0, 0] = 1.0 / a[0, 0] if a[0, 0] != 0.0 else np.nan
        return out
    if n == 2:
        det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
        if det == 0.0:
            out[:] = np.nan
            return out
        out[0, 0], out[0, 1], out[1, 0], out[1, 1] = (
            a[1, 1] / det,
            -a[0, 1] / det,
            -a[1, 0] / det,
            a[0, 0] / det,
        )
        return out
    if np.linalg.det(a) == 0.0:
        out[:] = np.nan
        return out
    return np.linalg.inv(a)


@njit(cache=True, nogil=True)
def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out = a @ b`` for small square matrices, without allocating."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            acc = 0.0
            for m in range(n):
                acc += a[i, m] * b[m, j]
            out[i, j] = acc


@njit(cache=True, fastmath=True, nogil=True)
def block_levinson(t: np.ndarray, y: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Solve one symmetric block-Toeplitz system (eq. 6; see ``bss_eval._block_levinson_torch``).

    Args:
        t: ``(p, N, N)`` blocks, block ``(a, b)`` of the matrix being ``t[a - b]`` (``t[-m] = t[m]ᵀ``).
        y: ``(p, N, M)`` right-hand sides.

    Returns:
        ``(N, M, p)`` solution (lag last).
    """
    p, N, _ = t.shape
    M = y.shape[2]
    # Lag-contiguous copies: R[i, l, q] = t_{p-1-q}[i, l] (for Σ_k t_{n-k} ·),
    # S[i, l, m] = t_m[l, i] = t_{-m}[i, l] (for Σ_k t_{-(k+1)} ·).
    R = np.empty((N, N, p))
    S = np.empty((N, N, p))
    for m in range(p):
        for i in range(N):
            for j in range(N):
                R[i, j, p - 1 - m] = t[m, i, j]
                S[i, j, m] = t[m, j, i]
    # f = T⁻¹ E_1 (first block column), g[..., k + 1] = b_k with b = T⁻¹ E_n (last block column).
    f = np.zeros((N, N, p + 1))
    g = np.zeros((N, N, p + 1))
    f_next = np.zeros((N, N, p + 1))
    g_next = np.zeros((N, N, p + 1))
    x = np.zeros((N, M, p))
    inv0 = _inverse(t[0])
    for i in range(N):
        for j in range(N):
            f[i, j, 0] = inv0[i, j]
            g[i, j, 1] = inv0[i, j]
        for e in range(M):
            acc = 0.0
            for j in range(N):
                acc += inv0[i, j] * y[0, j, e]
            x[i, e, 0] = acc
    eps_f = np.empty((N, N))
    eps_b = np.empty((N, N))
    residual = np.empty((N, M))
    eye = np.eye(N)
    product = np.empty((N, N))
    eps_f_alpha = np.empty((N, N))
    eps_b_delta = np.empty((N, N))
    for n in range(1, p):
        start = p - 1 - n
        for i in range(N):
            for j in range(N):
                acc_f = 0.0
                acc_b = 0.0
                for m in range(N):
                    r_im, f_mj = R[i, m, start : start + n], f[m, j, :n]
                    s_im, g_mj = S[i, m, 1 : n + 1], g[m, j, 1 : n + 1]
                    for k in range(n):
                        acc_f += r_im[k] * f_mj[k]  # ε_f = Σ_k t_{n-k} f_k
                        acc_b += s_im[k] * g_mj[k]  # ε_b = Σ_k t_{-(k+1)} b_k
                eps_f[i, j] = acc_f
                eps_b[i, j] = acc_b
            for e in range(M):
                acc = 0.0
                for m in range(N):
                    r_im, x_me = R[i, m, start : start + n], x[m, e, :n]
                    for k in range(n):
                        acc += r_im[k] * x_me[k]  # ε_x = Σ_k t_{n-k} x_k
                residual[i, e] = y[n, i, e] - acc
        _matmul(eps_b, eps_f, product)
        alpha = _inverse(eye - product)
        _matmul(eps_f, eps_b, product)
        delta = _inverse(eye - product)
        _matmul(eps_f, alpha, eps_f_alpha)
        _matmul(eps_b, delta, eps_b_delta)
        # f' = [f; 0] α − [0; b] ε_f α,   b' = −[f; 0] ε_b δ + [0; b] δ   (k = 0..n)
        for i in range(N):
            for j in range(N):
                new_f = f_next[i, j, : n + 1]
                new_g = g_next[i, j, 1 : n + 2]
                new_f[:] = 0.0
                new_g[:] = 0.0
                for m in range(N):
                    a, c, d, h = alpha[m, j], eps_f_alpha[m, j], eps_b_delta[m, j], delta[m, j]
                    f_im, g_im = f[i, m, : n + 1], g[i, m, : n + 1]
                    for k in range(n + 1):
                        new_f[k] += f_im[k] * a - g_im[k] * c
                        new_g[k] += g_im[k] * h - f_im[k] * d
        f, f_next = f_next, f
        g, g_next = g_next, g
        # x' = [x; 0] + b' (y_n − ε_x)
        for i in range(N):
            for e in range(M):
                x_ie = x[i, e, : n + 1]
                for m in range(N):
                    c = residual[m, e]
                    g_im = g[i, m, 1 : n + 2]
                    for k in range(n + 1):
                        x_ie[k] += g_im[k] * c
    return x
