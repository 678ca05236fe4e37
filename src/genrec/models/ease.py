"""EASE: an embarrassingly shallow autoencoder (Steck, WWW 2019).

A linear item-item model B with a zero diagonal, fitted in closed form by ridge regression of X on itself:

    P = (X^T X + l2 I)^-1,      B = I - P diag(1 / diag(P)),   so B[i, j] = -P[i, j] / P[j, j] and B[j, j] = 0
    score(u) = h_u @ B          (h_u: the user's binary history row; fold-in needs no retraining)

Memory is the whole story on real catalogues: one n_items^2 float32 array is 6.7 GB for Gowalla's 40,981 items.
The Gram matrix is built from the sparse X straight into one dense float32 array, which a Cholesky factorisation
and inversion (LAPACK's spotrf + spotri, blocked, see below) overwrite in place; symmetrising and scaling run a
block of rows at a time. The peak is one n^2 float32 array plus blocks and the sparse Gram matrix. (scipy's
OpenBLAS is used rather than torch.linalg.cholesky + cholesky_inverse: torch returns new tensors, three n^2 arrays
at the peak, and its MKL took 1.8x as long at n=8192 on the 2-core AMD reference machine.)

With fewer users than items (Gowalla: 29,858 users, 40,981 items) the Woodbury identity inverts the smaller
user Gram matrix instead, the same P exactly:

    P = (X^T X + l2 I)^-1 = (I - X^T K X) / l2,      K = (X X^T + l2 I)^-1      (n_users x n_users)

which costs n_users^3 instead of n_items^3 flops (2.6x fewer on Gowalla) plus two sparse-dense products; the
peak is P plus K (10.3 GB on Gowalla). The products sum in float32, which costs some accuracy: on a 2,000-user,
3,000-item long-tailed test B stayed within 3e-5 of float64 (entries up to 0.03) and every user's top 20 was
unchanged.
"""

from __future__ import annotations

import ctypes

import numpy as np
import scipy.sparse as sp

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import Recommender, register

BLOCK_FLOATS = 1 << 25  # floats in one temporary block while symmetrising (128 MB of float32)


@register("ease")
class EASE(Recommender):
    def __init__(self, l2: float = 500.0):
        """l2: ridge penalty on B (Steck 2019 uses 500 on ML-20M, Netflix and MSD; tune it on validation data)."""
        self.l2 = l2

    def fit(self, train: Interactions, validation=None) -> EASE:
        if not self.l2 > 0:
            raise ValueError(f"l2 must be positive (the Gram matrix is singular without it), got {self.l2}")
        self.weights_ = ease_weights(train.csr(binary=True), self.l2)
        self.n_items_ = train.n_items
        return self

    def score(self, histories: Histories) -> np.ndarray:
        """(n_users, n_items) float32: the binary history times B."""
        self._check_fitted(histories)
        return np.asarray(histories.binary().astype(np.float32) @ self.weights_, dtype=np.float32)

    def _get_state(self):
        return {"weights": self.weights_}, {}

    def _set_state(self, arrays, meta):
        self.weights_ = np.ascontiguousarray(arrays["weights"], dtype=np.float32)


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """(n_items, n_items) C-ordered float32 B from a (n_users, n_items) binary matrix, computed in place."""
    x = sp.csr_matrix(x, dtype=np.float32)
    precision = _precision_dual(x, l2) if x.shape[0] < x.shape[1] else _precision_primal(x, l2)
    diag = precision.diagonal().copy()
    for start, stop in _row_blocks(precision):
        precision[start:stop] /= -diag  # B[i, j] = -P[i, j] / P[j, j]
    precision[np.diag_indices_from(precision)] = 0.0
    return precision


def _precision_primal(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """(n_items, n_items) P = (X^T X + l2 I)^-1, inverted in place."""
    return _invert_spd_in_place(_dense_gram(x.T.tocsr(), l2))


def _precision_dual(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """(n_items, n_items) P = (I - X^T K X) / l2 with K = (X X^T + l2 I)^-1 (Woodbury), a block of rows at a time."""
    k = _invert_spd_in_place(_dense_gram(x, l2))  # (n_users, n_users)
    xt = x.T.tocsr()  # (n_items, n_users)
    n = x.shape[1]
    precision = np.empty((n, n), dtype=np.float32)
    for start, stop in _row_blocks(precision):
        left = np.ascontiguousarray((xt[start:stop] @ k).T)  # (n_users, b) = (X^T K)[rows].T
        precision[start:stop] = (xt @ left).T  # (b, n_items) = (X^T K X)[rows]
        precision[start:stop] *= np.float32(-1.0 / l2)
        precision[np.arange(start, stop), np.arange(start, stop)] += np.float32(1.0 / l2)
    return precision


def _dense_gram(a: sp.csr_matrix, l2: float) -> np.ndarray:
    """C-ordered float32 A A^T + l2 I for a sparse A."""
    gram = (a @ a.T).toarray()  # dense float32, symmetric; scipy may hand it back in Fortran order
    gram = gram if gram.flags.c_contiguous else np.ascontiguousarray(gram.T)  # the same matrix, C order
    gram[np.diag_indices_from(gram)] += np.float32(l2)
    return gram


def _invert_spd_in_place(a: np.ndarray) -> np.ndarray:
    """Overwrite the symmetric positive definite C-ordered float32 `a` with its inverse and return it.

    a.T is the same matrix in Fortran order, so LAPACK and BLAS work on it in place; its lower triangle is a's
    upper triangle, which is copied to the lower one at the end."""
    if a.dtype != np.float32 or not a.flags.c_contiguous or a.shape[0] != a.shape[1]:
        raise ValueError("the in-place inversion needs a square C-ordered float32 array")
    blocks = _InPlaceBlocks(a.T)
    n = a.shape[0]
    _cholesky(blocks, 0, n)  # lower triangle <- L, A = L L^T
    _triangular_inverse(blocks, 0, n)  # lower triangle <- M = L^-1
    _lower_gram(blocks, 0, n)  # lower triangle <- M^T M = A^-1
    _symmetrize_from_upper(a)
    return a


# In-place blocked LAPACK. OpenBLAS's threaded spotrf (0.3.30 in scipy's wheels, and numpy's 0.3.31) crashes on
# matrices above about 37,000 rows, which Gowalla's 40,981 items exceed, and scipy's Python wrappers cannot work
# on a sub-block of a larger array without copying it. So the three steps of spotrf + spotri split the matrix
# in two recursively, calling LAPACK on blocks of at most LAPACK_BLOCK rows and level-3 BLAS (trsm, trmm, syrk)
# on the off-diagonal blocks, all through the raw routines that scipy.linalg.cython_lapack / cython_blas export,
# with pointers into the one array. The flop count (n^3) is that of spotrf + spotri.
LAPACK_BLOCK = 16384


def _routine(module, name: str, n_args: int):
    """A scipy.linalg.cython_blas / cython_lapack routine as a ctypes function (every argument a pointer)."""
    capsule = module.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * n_args)(address)


class _InPlaceBlocks:
    """Level-3 BLAS and LAPACK on square and rectangular blocks of one Fortran-ordered float32 matrix."""

    def __init__(self, fortran: np.ndarray):
        import scipy.linalg.cython_blas as blas
        import scipy.linalg.cython_lapack as lapack

        self.array = fortran  # keeps the memory alive
        self.lda = ctypes.c_int(fortran.shape[0])
        self.base = fortran.ctypes.data
        self._lapack = {name: _routine(lapack, name, n) for name, n in (("spotrf", 5), ("strtri", 6),
                                                                          ("slauum", 5))}
        self._blas = {name: _routine(blas, name, n) for name, n in (("strsm", 11), ("strmm", 11), ("ssyrk", 10))}

    def at(self, row: int, col: int) -> ctypes.c_void_p:
        return ctypes.c_void_p(self.base + 4 * (row + col * self.lda.value))

    def lapack(self, name: str, lo: int, n: int) -> None:
        """spotrf / strtri / slauum on the lower triangle of the diagonal block [lo, lo + n)."""
        info, size = ctypes.c_int(0), ctypes.c_int(n)
        flags = (_char("L"), _char("N")) if name == "strtri" else (_char("L"),)
        self._lapack[name](*flags, ctypes.byref(size), self.at(lo, lo), ctypes.byref(self.lda), ctypes.byref(info))
        if info.value > 0:
            raise ValueError(f"Gram matrix + l2 I is not positive definite ({name} at row {lo + info.value}); "
                             "increase l2")
        if info.value < 0:
            raise RuntimeError(f"{name} rejected argument {-info.value}")

    def triangular(self, name: str, side: str, trans: str, alpha: float, tri: tuple, m: int, n: int,
                   rhs: tuple) -> None:
        """strsm / strmm: rhs (m x n block at rhs) <- alpha op(T)^-1 rhs, alpha op(T) rhs, or with T on the right;
        T is the lower triangular diagonal block at tri."""
        self._blas[name](_char(side), _char("L"), _char(trans), _char("N"), ctypes.byref(ctypes.c_int(m)),
                         ctypes.byref(ctypes.c_int(n)), ctypes.byref(ctypes.c_float(alpha)), self.at(*tri),
                         ctypes.byref(self.lda), self.at(*rhs), ctypes.byref(self.lda))

    def syrk(self, trans: str, alpha: float, a: tuple, n: int, k: int, c: tuple) -> None:
        """Lower triangle of the n x n block at c <- c + alpha A A^T (trans 'N', A n x k) or A^T A ('T', A k x n)."""
        self._blas["ssyrk"](_char("L"), _char(trans), ctypes.byref(ctypes.c_int(n)), ctypes.byref(ctypes.c_int(k)),
                            ctypes.byref(ctypes.c_float(alpha)), self.at(*a), ctypes.byref(self.lda),
                            ctypes.byref(ctypes.c_float(1.0)), self.at(*c), ctypes.byref(self.lda))


def _char(flag: str):
    return ctypes.byref(ctypes.c_char(flag.encode()))


def _cholesky(m: _InPlaceBlocks, lo: int, n: int) -> None:
    """Block [lo, lo + n) <- its lower Cholesky factor L (spotrf): L11, L21 = A21 L11^-T, L22 of A22 - L21 L21^T."""
    if n <= LAPACK_BLOCK:
        return m.lapack("spotrf", lo, n)
    h = n // 2
    _cholesky(m, lo, h)
    m.triangular("strsm", "R", "T", 1.0, (lo, lo), n - h, h, (lo + h, lo))
    m.syrk("N", -1.0, (lo + h, lo), n - h, h, (lo + h, lo + h))
    _cholesky(m, lo + h, n - h)


def _triangular_inverse(m: _InPlaceBlocks, lo: int, n: int) -> None:
    """Lower triangular block <- its inverse (strtri): M11 = L11^-1, M21 = -L22^-1 L21 M11, M22 = L22^-1."""
    if n <= LAPACK_BLOCK:
        return m.lapack("strtri", lo, n)
    h = n // 2
    _triangular_inverse(m, lo, h)
    m.triangular("strmm", "R", "N", 1.0, (lo, lo), n - h, h, (lo + h, lo))
    m.triangular("strsm", "L", "N", -1.0, (lo + h, lo + h), n - h, h, (lo + h, lo))
    _triangular_inverse(m, lo + h, n - h)


def _lower_gram(m: _InPlaceBlocks, lo: int, n: int) -> None:
    """Lower triangular block M <- lower triangle of M^T M (slauum): M11^T M11 + M21^T M21, M22^T M21, M22^T M22."""
    if n <= LAPACK_BLOCK:
        return m.lapack("slauum", lo, n)
    h = n // 2
    _lower_gram(m, lo, h)
    m.syrk("T", 1.0, (lo + h, lo), h, n - h, (lo, lo))
    m.triangular("strmm", "L", "T", 1.0, (lo + h, lo + h), n - h, h, (lo + h, lo))
    _lower_gram(m, lo + h, n - h)


def _symmetrize_from_upper(a: np.ndarray) -> None:
    """Copy the upper triangle of square `a` onto its lower triangle, one block of rows at a time."""
    for start, stop in _row_blocks(a):
        a[start:stop, :start] = a[:start, start:stop].T
        block = a[start:stop, start:stop]
        lower = np.tril_indices(stop - start, -1)
        block[lower] = block.T[lower]


def _row_blocks(a: np.ndarray):
    n = a.shape[0]
    step = max(1, BLOCK_FLOATS // max(n, 1))
    for start in range(0, n, step):
        yield start, min(start + step, n)
