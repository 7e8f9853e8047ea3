import assert from "node:assert/strict";
import * as math from "mathjs";
import {
  CholeskyError,
  choleskyLowerInPlace,
  gemmInPlace,
  gemmSubInPlace,
  gemmSubInPlaceF32,
  gramRaw,
  inverseFromCholesky,
  invertLower,
  matmulRaw,
} from "../../core/_dense.ts";
import {
  cholesky,
  choleskyInverse,
  eigh,
  gram,
  matmul,
  solveTriangular,
  svd,
} from "../../core/linalg.ts";
import { prng, randn } from "../../core/prng.ts";
import { type Tensor, tensor, transpose } from "../../core/tensor.ts";
import { assertClose } from "../_helpers.ts";

// ---------- helpers: seeded matrices and mathjs conversions ----------

function randomMatrix(rows: number, cols: number, seed: number): Float64Array {
  return randn(rows * cols, prng(seed));
}

/** A random SPD matrix XᵀX/rows + damp·I, X [rows, n] with rows ≥ n. */
function randomSpd(n: number, seed: number, damp = 1e-2): Float64Array {
  const rows = n + 8;
  const x = randomMatrix(rows, n, seed);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let r = 0; r < rows; r++) s += x[r * n + i]! * x[r * n + j]!;
      a[i * n + j] = s / rows + (i === j ? damp : 0);
    }
  }
  return a;
}

function toNested(a: ArrayLike<number>, rows: number, cols: number): number[][] {
  return Array.from(
    { length: rows },
    (_, i) => Array.from({ length: cols }, (_, j) => a[i * cols + j]!),
  );
}

function flat(m: number[][]): number[] {
  return m.flat();
}

/** X = A⁻¹·B for A [n, n] and B [n, k] by mathjs's LU solve, column by column. */
function mathSolve(a: ArrayLike<number>, b: ArrayLike<number>, n: number, k: number): number[] {
  const x = new Array<number>(n * k);
  const lu = math.lup(toNested(a, n, n));
  for (let j = 0; j < k; j++) {
    const col = Array.from({ length: n }, (_, i) => b[i * k + j]!);
    const sol = math.flatten(math.matrix(math.lusolve(lu, col))).toArray() as number[];
    for (let i = 0; i < n; i++) x[i * k + j] = sol[i]!;
  }
  return x;
}

/** Textbook triple loop, the oracle for the blocked kernels at sizes mathjs is slow for. */
function naiveMatmul(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  k: number,
  n: number,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * n + j]!;
      c[i * n + j] = s;
    }
  }
  return c;
}

function transposeRaw(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

// ---------- raw kernels (core/_dense.ts) ----------

Deno.test("matmulRaw() matches mathjs on random general matrices up to 64×64", () => {
  for (
    const [m, k, n, seed] of [[1, 1, 1, 1], [3, 5, 7, 2], [17, 33, 9, 3], [64, 64, 64, 4], [
      61,
      2,
      63,
      5,
    ]]
  ) {
    const a = randomMatrix(m!, k!, seed!), b = randomMatrix(k!, n!, seed! + 100);
    const expected = flat(math.multiply(toNested(a, m!, k!), toNested(b, k!, n!)) as number[][]);
    assertClose(matmulRaw(a, b, m!, k!, n!), expected, { atol: 1e-12, rtol: 1e-12 });
  }
});

Deno.test("matmulRaw() matches a triple loop across block edges (sizes not multiples of 4, 64, 256)", () => {
  for (const [m, k, n] of [[67, 300, 129], [130, 257, 515], [5, 600, 3]]) {
    const a = randomMatrix(m!, k!, m!), b = randomMatrix(k!, n!, n!);
    assertClose(matmulRaw(a, b, m!, k!, n!), naiveMatmul(a, b, m!, k!, n!), {
      atol: 1e-11,
      rtol: 1e-12,
    });
  }
});

Deno.test("gramRaw() equals XᵀX, is exactly symmetric and accepts Float32Array input", () => {
  for (const [rows, cols] of [[1, 1], [10, 3], [70, 64], [300, 131], [5, 140]]) {
    const x = randomMatrix(rows!, cols!, rows! + cols!);
    const g = gramRaw(x, rows!, cols!);
    assertClose(g, naiveMatmul(transposeRaw(x, rows!, cols!), x, cols!, rows!, cols!), {
      atol: 1e-11,
      rtol: 1e-12,
    });
    for (let i = 0; i < cols!; i++) {
      for (let j = 0; j < i; j++) assert.equal(g[i * cols! + j], g[j * cols! + i]);
    }
    const x32 = Float32Array.from(x);
    const g32 = gramRaw(x32, rows!, cols!);
    assertClose(g32, naiveMatmul(transposeRaw(x32, rows!, cols!), x32, cols!, rows!, cols!), {
      atol: 1e-11,
      rtol: 1e-12,
    });
  }
});

Deno.test("choleskyLowerInPlace() gives L·Lᵀ = A with a zero upper triangle, across block sizes", () => {
  for (const n of [1, 2, 5, 64, 95, 96, 97, 200, 301]) {
    const a = randomSpd(n, n);
    const l = a.slice();
    choleskyLowerInPlace(l, n);
    for (let i = 0; i < n; i++) {
      assert.ok(l[i * n + i]! > 0);
      for (let j = i + 1; j < n; j++) assert.equal(l[i * n + j], 0);
    }
    assertClose(naiveMatmul(l, transposeRaw(l, n, n), n, n, n), a, { atol: 1e-12, rtol: 1e-11 });
  }
});

Deno.test("choleskyLowerInPlace() matches mathjs's inverse through inverseFromCholesky() up to 64×64", () => {
  for (const n of [1, 4, 33, 64]) {
    const a = randomSpd(n, 1000 + n, 0.5);
    const l = a.slice();
    choleskyLowerInPlace(l, n);
    const expected = flat(math.inv(toNested(a, n, n)) as number[][]);
    assertClose(inverseFromCholesky(l, n), expected, { atol: 1e-10, rtol: 1e-9 });
    // det(A) = Π L_ii²
    let logDet = 0;
    for (let i = 0; i < n; i++) logDet += 2 * Math.log(l[i * n + i]!);
    assertClose(logDet, Math.log(math.det(toNested(a, n, n))), { atol: 1e-9, rtol: 1e-10 });
  }
});

Deno.test("inverseFromCholesky() gives A⁻¹·A = I and an exactly symmetric result across blocks", () => {
  for (const n of [65, 130, 257]) {
    const a = randomSpd(n, 7 * n, 0.1);
    const l = a.slice();
    choleskyLowerInPlace(l, n);
    const inv = inverseFromCholesky(l, n);
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    assertClose(naiveMatmul(inv, a, n, n, n), eye, { atol: 1e-9, rtol: 0 });
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) assert.equal(inv[i * n + j], inv[j * n + i]);
    }
    const li = invertLower(l, n);
    assertClose(naiveMatmul(li, l, n, n, n), eye, { atol: 1e-10, rtol: 0 });
  }
});

Deno.test("choleskyLowerInPlace() throws CholeskyError with the failing pivot, also past the first block", () => {
  const a = new Float64Array([4, 2, 2, 1]); // singular: pivot 1 is 0
  assert.throws(
    () => choleskyLowerInPlace(a, 2),
    (e: unknown) => e instanceof CholeskyError && e.pivot === 1,
  );
  for (const bad of [0, 3, 150, 199]) {
    const n = 200;
    const m = randomSpd(n, 11, 0.1);
    // make the leading (bad+1)×(bad+1) block indefinite exactly at `bad`: A[bad][bad] = −1 with
    // zero coupling to earlier rows, so earlier pivots stay positive
    for (let j = 0; j < n; j++) {
      m[bad * n + j] = 0;
      m[j * n + bad] = 0;
    }
    m[bad * n + bad] = -1;
    assert.throws(
      () => choleskyLowerInPlace(m, n),
      (e: unknown) => e instanceof CholeskyError && e.pivot === bad,
    );
  }
});

Deno.test("gemmSubInPlace() updates a column slice in place exactly as C − A·B from matmulRaw()", () => {
  const rows = 37, cols = 150, j1 = 20, i1 = 10, i2 = 43, kk = i2 - i1;
  const w = randomMatrix(rows, cols, 1),
    e = randomMatrix(rows, kk, 2),
    h = randomMatrix(cols, cols, 3);
  const updated = w.slice();
  // W[:, j1:] -= E · H[i1:i2, j1:]
  gemmSubInPlace(updated, e, h, rows, kk, cols - j1, j1, cols, 0, kk, i1 * cols + j1, cols);
  const hBlock = new Float64Array(kk * (cols - j1));
  for (let p = 0; p < kk; p++) {
    for (let j = 0; j < cols - j1; j++) hBlock[p * (cols - j1) + j] = h[(i1 + p) * cols + j1 + j]!;
  }
  const prod = matmulRaw(e, hBlock, rows, kk, cols - j1);
  const expected = w.slice();
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols - j1; j++) {
      expected[r * cols + j1 + j] = w[r * cols + j1 + j]! - prod[r * (cols - j1) + j]!;
    }
  }
  assertClose(updated, expected, { atol: 1e-12, rtol: 1e-12 });
  // columns left of j1 untouched bit for bit
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < j1; j++) assert.equal(updated[r * cols + j], w[r * cols + j]);
  }

  // a sub-block of A with its own offset and stride, defaults elsewhere
  const big = randomMatrix(50, 60, 4), b = randomMatrix(7, 9, 5), c = randomMatrix(5, 9, 6);
  const c2 = c.slice();
  gemmSubInPlace(c2, big, b, 5, 7, 9, 0, 9, 3 * 60 + 11, 60);
  const aBlock = new Float64Array(5 * 7);
  for (let i = 0; i < 5; i++) {
    for (let p = 0; p < 7; p++) aBlock[i * 7 + p] = big[(3 + i) * 60 + 11 + p]!;
  }
  const prod2 = matmulRaw(aBlock, b, 5, 7, 9);
  assertClose(c2, c.map((v, i) => v - prod2[i]!), { atol: 1e-12, rtol: 1e-12 });
});

Deno.test("gemmInPlace() handles alpha and every transpose combination against a triple loop", () => {
  const m = 37, k = 70, n = 29;
  const a = randomMatrix(m, k, 11), b = randomMatrix(k, n, 12), c0 = randomMatrix(m, n, 13);
  const prod = naiveMatmul(a, b, m, k, n);
  const at = transposeRaw(a, m, k), bt = transposeRaw(b, k, n);
  const combos: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];
  for (const [transA, transB] of combos) {
    const c = c0.slice();
    gemmInPlace(c, transA ? at : a, transB ? bt : b, m, k, n, { alpha: -0.5, transA, transB });
    assertClose(c, c0.map((v, i) => v - 0.5 * prod[i]!), {
      atol: 1e-12,
      rtol: 1e-12,
      message: `transA=${transA} transB=${transB}`,
    });
  }
  assert.throws(() => gemmInPlace(new Float64Array(4), a, b, m, k, n), RangeError);
});

Deno.test("gemmSubInPlaceF32() matches the float64 update to float32 precision", () => {
  const m = 33, k = 70, n = 45;
  const a = Float32Array.from(randomMatrix(m, k, 7)), b = Float32Array.from(randomMatrix(k, n, 8));
  const c = Float32Array.from(randomMatrix(m, n, 9));
  const c64 = Float64Array.from(c);
  gemmSubInPlace(c64, Float64Array.from(a), Float64Array.from(b), m, k, n);
  const c32 = c.slice();
  gemmSubInPlaceF32(c32, a, b, m, k, n);
  assertClose(c32, c64, { atol: 1e-5, rtol: 1e-6 });
});

Deno.test("gemmSubInPlace() rejects sub-matrices that run past their arrays", () => {
  const c = new Float64Array(10), a = new Float64Array(10), b = new Float64Array(10);
  assert.throws(() => gemmSubInPlace(c, a, b, 3, 3, 4), RangeError);
  assert.throws(() => gemmSubInPlace(c, a, b, 2, 2, 2, 0, 1), RangeError);
  assert.throws(() => gemmSubInPlace(c, a, b, 2, 2, 2, -1), RangeError);
  assert.throws(() => gemmSubInPlace(c, a, b, -1, 2, 2), RangeError);
  gemmSubInPlace(c, a, b, 0, 5, 0); // empty update is fine
});

// ---------- public API (core/linalg.ts) ----------

function t64(rows: number, cols: number, data: Float64Array): Tensor<"f64"> {
  return tensor("f64", [rows, cols], data);
}

/** max |MᵀM − I| for M [rows, cols]. */
function orthogonalityError(m: ArrayLike<number>, rows: number, cols: number): number {
  let worst = 0;
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let r = 0; r < rows; r++) s += m[r * cols + i]! * m[r * cols + j]!;
      worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
    }
  }
  return worst;
}

Deno.test("matmul() and gram() match mathjs and accept f32 tensors", () => {
  const a = randomMatrix(20, 30, 1), b = randomMatrix(30, 11, 2);
  const expected = flat(math.multiply(toNested(a, 20, 30), toNested(b, 30, 11)) as number[][]);
  const c = matmul(t64(20, 30, a), tensor("f32", [30, 11], Float32Array.from(b)));
  assert.equal(c.dtype, "f64");
  assert.deepEqual(c.shape, [20, 11]);
  assertClose(
    c.data,
    flat(math.multiply(toNested(a, 20, 30), toNested(Float32Array.from(b), 30, 11)) as number[][]),
    {
      atol: 1e-12,
      rtol: 1e-12,
    },
  );
  assertClose(matmul(t64(20, 30, a), t64(30, 11, b)).data, expected, { atol: 1e-12, rtol: 1e-12 });
  const g = gram(t64(20, 30, a));
  const gExpected = flat(
    math.multiply(math.transpose(toNested(a, 20, 30)), toNested(a, 20, 30)) as number[][],
  );
  assert.deepEqual(g.shape, [30, 30]);
  assertClose(g.data, gExpected, { atol: 1e-12, rtol: 1e-12 });
  const g32 = gram(tensor("f32", [20, 30], Float32Array.from(a)));
  assertClose(g32.data, gExpected, { atol: 1e-4, rtol: 1e-5 });
});

Deno.test("cholesky() gives lower and upper factors with L·Lᵀ = A and UᵀU = A, and solves match mathjs", () => {
  for (const n of [1, 6, 40, 64]) {
    const a = randomSpd(n, 50 + n, 0.3);
    const at = t64(n, n, a);
    const l = cholesky(at);
    const u = cholesky(at, { upper: true });
    assertClose(matmul(l, transpose(l)).data, a, { atol: 1e-12, rtol: 1e-11 });
    assertClose(matmul(transpose(u), u).data, a, { atol: 1e-12, rtol: 1e-11 });
    assertClose(u.data, transpose(l).data, { atol: 0, rtol: 0 });
    // A·x = b through two triangular solves, against mathjs's LU solve
    const b = randomMatrix(n, 3, 60 + n);
    const y = solveTriangular(l, t64(n, 3, b), { lower: true });
    const x = solveTriangular(l, y, { lower: true, transpose: true });
    const expected = mathSolve(a, b, n, 3);
    assertClose(x.data, expected, { atol: 1e-9, rtol: 1e-9 });
    // the same with the upper factor and a vector right-hand side
    const bv = tensor("f64", [n], b.filter((_, i) => i % 3 === 0));
    const y2 = solveTriangular(u, bv, { lower: false, transpose: true });
    const x2 = solveTriangular(u, y2, { lower: false });
    assert.deepEqual(x2.shape, [n]);
    assertClose(x2.data, expected.filter((_, i) => i % 3 === 0), { atol: 1e-9, rtol: 1e-9 });
    // det(A) = Π L_ii²
    let det = 1;
    for (let i = 0; i < n; i++) det *= l.data[i * n + i]! ** 2;
    assertClose(det, math.det(toNested(a, n, n)), { atol: 0, rtol: 1e-9 });
  }
});

Deno.test("choleskyInverse() matches mathjs's inverse on random SPD matrices up to 64×64", () => {
  for (const n of [1, 3, 17, 64]) {
    const a = randomSpd(n, 70 + n, 0.2);
    const expected = flat(math.inv(toNested(a, n, n)) as number[][]);
    assertClose(choleskyInverse(t64(n, n, a)).data, expected, { atol: 1e-9, rtol: 1e-9 });
  }
});

Deno.test("solveTriangular() matches mathjs in all four modes, within one block and across blocks", () => {
  for (const n of [23, 150]) {
    const r = randomMatrix(n, n, 90 + n);
    // off-diagonal entries of size 1/√n keep random triangular matrices well conditioned
    const lower = r.map((v, i) => (i % n <= Math.floor(i / n) ? v / Math.sqrt(n) : 0));
    for (let i = 0; i < n; i++) lower[i * n + i] = 2 + Math.abs(lower[i * n + i]!);
    const upper = transposeRaw(lower, n, n);
    const b = randomMatrix(n, 4, 91);
    const cases: [Float64Array, boolean, boolean, Float64Array][] = [
      [lower, true, false, lower],
      [lower, true, true, upper],
      [upper, false, false, upper],
      [upper, false, true, lower],
    ];
    for (const [t, isLower, trans, effective] of cases) {
      // pollute the ignored triangle: it must not be read
      const polluted = t.map((v, i) => {
        const row = Math.floor(i / n), col = i % n;
        return (isLower ? col > row : col < row) ? 1e6 : v;
      });
      const x = solveTriangular(t64(n, n, polluted), t64(n, 4, b), {
        lower: isLower,
        transpose: trans,
      });
      const expected = mathSolve(effective, b, n, 4);
      assertClose(x.data, expected, {
        atol: 1e-10,
        rtol: 1e-10,
        message: `n=${n} lower=${isLower} transpose=${trans}`,
      });
    }
  }
});

Deno.test("eigh() matches mathjs's eigenvalues and gives QΛQᵀ = A with QᵀQ = I", () => {
  for (const n of [1, 2, 3, 10, 37, 64]) {
    const x = randomMatrix(n, n, 200 + n);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) a[i * n + j] = x[i * n + j]! + x[j * n + i]!;
    }
    const { values, vectors } = eigh(t64(n, n, a));
    assert.deepEqual(values.shape, [n]);
    assert.deepEqual(vectors.shape, [n, n]);
    for (let i = 1; i < n; i++) assert.ok(values.data[i - 1]! <= values.data[i]!);
    const ref = (math.eigs(toNested(a, n, n)).values as number[]).slice().sort((p, q) => p - q);
    assertClose(values.data, ref, { atol: 1e-10, rtol: 1e-10 });
    const q = vectors.data;
    assert.ok(orthogonalityError(q, n, n) < 1e-12, `QᵀQ − I: ${orthogonalityError(q, n, n)}`);
    const rec = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += q[i * n + k]! * values.data[k]! * q[j * n + k]!;
        rec[i * n + j] = s;
      }
    }
    assertClose(rec, a, { atol: 1e-11, rtol: 1e-11 });
  }
});

Deno.test("eigh() is accurate on a rank-deficient PSD matrix, a repeated spectrum and a larger size", () => {
  // rank 3 PSD 30×30: 27 zero eigenvalues
  const n = 30;
  const x = randomMatrix(3, n, 300);
  const a = gram(t64(3, n, x)).data;
  const { values, vectors } = eigh(t64(n, n, a));
  const ref = (math.eigs(toNested(a, n, n)).values as number[]).slice().sort((p, q) => p - q);
  assertClose(values.data, ref, { atol: 1e-11, rtol: 1e-10 });
  for (let i = 0; i < n - 3; i++) assert.ok(Math.abs(values.data[i]!) < 1e-12);
  assert.ok(orthogonalityError(vectors.data, n, n) < 1e-12);
  // identity plus a rank-one term: eigenvalue 1 repeated n−1 times
  const v = randomMatrix(1, n, 301);
  const b = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) b[i * n + j] = (i === j ? 1 : 0) + v[i]! * v[j]!;
  }
  const eb = eigh(t64(n, n, b));
  let vv = 0;
  for (const t of v) vv += t * t;
  assertClose(eb.values.data, [...Array(n - 1).fill(1), 1 + vv], { atol: 1e-12, rtol: 1e-12 });
  assert.ok(orthogonalityError(eb.vectors.data, n, n) < 1e-12);
  // 150×150: reconstruct A·Q = Q·Λ
  const m = 150;
  const y = randomMatrix(m, m, 302);
  const s = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) s[i * m + j] = y[i * m + j]! + y[j * m + i]!;
  }
  const es = eigh(t64(m, m, s));
  const aq = matmulRaw(s, es.vectors.data, m, m, m);
  const ql = es.vectors.data.map((q, i) => q * es.values.data[i % m]!);
  assertClose(aq, ql, { atol: 1e-11, rtol: 1e-10 });
  assert.ok(orthogonalityError(es.vectors.data, m, m) < 1e-12);
});

Deno.test("svd() gives U·S·Vᵀ = A with orthonormal U and V, descending s, matching mathjs's singular values", () => {
  for (const [m, n] of [[1, 1], [8, 8], [40, 12], [12, 40], [64, 64], [3, 1], [1, 5], [50, 90]]) {
    const a = randomMatrix(m!, n!, 400 + m! * n!);
    const { u, s, v } = svd(t64(m!, n!, a));
    const r = Math.min(m!, n!);
    assert.deepEqual(u.shape, [m, r]);
    assert.deepEqual(s.shape, [r]);
    assert.deepEqual(v.shape, [n, r]);
    for (let i = 1; i < r; i++) assert.ok(s.data[i - 1]! >= s.data[i]!);
    assert.ok(orthogonalityError(u.data, m!, r) < 1e-12, "UᵀU = I");
    assert.ok(orthogonalityError(v.data, n!, r) < 1e-12, "VᵀV = I");
    const us = u.data.map((x, i) => x * s.data[i % r]!);
    assertClose(matmul(t64(m!, r, us), transpose(v)).data, a, { atol: 1e-12, rtol: 1e-12 });
    // singular values are the square roots of the eigenvalues of AᵀA (mathjs)
    const small = m! <= n!
      ? math.multiply(toNested(a, m!, n!), math.transpose(toNested(a, m!, n!)))
      : math.multiply(math.transpose(toNested(a, m!, n!)), toNested(a, m!, n!));
    const ev = (math.eigs(small as number[][]).values as number[]).map((x) =>
      Math.sqrt(Math.max(0, x))
    )
      .sort((p, q) => q - p);
    assertClose(s.data, ev, { atol: 1e-10, rtol: 1e-10 });
  }
});

Deno.test("svd() of rank-deficient tall and wide matrices still gives orthonormal U and V", () => {
  for (
    const [m, n, rank] of [[30, 10, 4], [10, 30, 3], [20, 20, 1], [6, 4, 0], [80, 60, 5], [
      50,
      90,
      7,
    ]]
  ) {
    const a = rank === 0
      ? new Float64Array(m! * n!)
      : matmulRaw(randomMatrix(m!, rank!, m!), randomMatrix(rank!, n!, n!), m!, rank!, n!);
    const { u, s, v } = svd(t64(m!, n!, a));
    const r = Math.min(m!, n!);
    for (let i = rank!; i < r; i++) {
      assert.ok(s.data[i]! < 1e-12 * Math.max(1, s.data[0]!), `s[${i}] = ${s.data[i]}`);
    }
    for (let i = 0; i < rank!; i++) assert.ok(s.data[i]! > 1e-3);
    assert.ok(orthogonalityError(u.data, m!, r) < 1e-12, "UᵀU = I");
    assert.ok(orthogonalityError(v.data, n!, r) < 1e-12, "VᵀV = I");
    const us = u.data.map((x, i) => x * s.data[i % r]!);
    assertClose(matmul(t64(m!, r, us), transpose(v)).data, a, { atol: 1e-12, rtol: 1e-12 });
  }
});

Deno.test("cholesky() throws CholeskyError carrying the failing pivot on an indefinite matrix", () => {
  const a = t64(3, 3, new Float64Array([4, 2, 0, 2, 5, 3, 0, 3, 1])); // pivots 4, 4, then 1 − 9/4 < 0
  assert.throws(() => cholesky(a), (e: unknown) => e instanceof CholeskyError && e.pivot === 2);
  assert.throws(
    () => choleskyInverse(a),
    (e: unknown) => e instanceof CholeskyError && e.pivot === 2,
  );
  const nan = t64(2, 2, new Float64Array([1, 0, 0, NaN]));
  assert.throws(() => cholesky(nan), (e: unknown) => e instanceof CholeskyError && e.pivot === 1);
});

Deno.test("linalg functions reject non-square, mismatched and malformed inputs with clear errors", () => {
  const sq = t64(3, 3, new Float64Array(9).fill(1));
  const rect = t64(2, 3, new Float64Array(6));
  const vec = tensor("f64", [4], new Float64Array(4));
  assert.throws(() => matmul(rect, rect), /do not chain/);
  assert.throws(() => matmul(vec, sq), /must be 2-D/);
  assert.throws(() => gram(vec), /must be 2-D/);
  assert.throws(() => cholesky(rect), /must be square/);
  assert.throws(() => choleskyInverse(rect), /must be square/);
  assert.throws(() => eigh(rect), /must be square/);
  assert.throws(() => eigh(t64(2, 2, new Float64Array([1, 2, 3, 4]))), /must be symmetric/);
  assert.throws(() => eigh(t64(1, 1, new Float64Array([NaN]))), /must be finite/);
  assert.throws(() => svd(vec), /must be 2-D/);
  assert.throws(() => svd(t64(1, 2, new Float64Array([1, Infinity]))), /must be finite/);
  assert.throws(() => solveTriangular(rect, vec), /must be square/);
  assert.throws(() => solveTriangular(sq, vec), /must have shape \[3\] or \[3, k\]/);
  assert.throws(
    () =>
      solveTriangular(
        t64(2, 2, new Float64Array([1, 0, 1, 0])),
        tensor("f64", [2], new Float64Array(2)),
      ),
    /singular/,
  );
  // deno-lint-ignore no-explicit-any
  assert.throws(() => cholesky(sq, { upper: "yes" as any }), TypeError);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => matmul(null as any, sq), TypeError);
});

Deno.test("linalg functions never mutate their arguments", () => {
  const a = randomSpd(10, 5, 0.5);
  const copy = a.slice();
  const at = t64(10, 10, a);
  cholesky(at);
  choleskyInverse(at);
  eigh(at);
  svd(at);
  gram(at);
  matmul(at, at);
  solveTriangular(at, at);
  assert.deepEqual(a, copy);
});

Deno.test("the JavaScript fallback kernel gives bit-identical results to the WebAssembly one", async () => {
  // A child Deno that deletes the WebAssembly global before loading the kernels
  // takes the plain-JavaScript path.
  const dense = new URL("../../core/_dense.ts", import.meta.url).href;
  const prngUrl = new URL("../../core/prng.ts", import.meta.url).href;
  const script = `
    delete globalThis.WebAssembly;
    const { matmulRaw, gramRaw, choleskyLowerInPlace } = await import("${dense}");
    const { prng, randn } = await import("${prngUrl}");
    const a = randn(67 * 301, prng(1)), b = randn(301 * 130, prng(2));
    const c = matmulRaw(a, b, 67, 301, 130);
    const g = gramRaw(a, 67, 301).subarray(0, 301 * 66);
    const h = gramRaw(randn(150 * 100, prng(3)), 150, 100);
    choleskyLowerInPlace(h, 100);
    console.log(JSON.stringify({ wasm: typeof WebAssembly, c: [...c], g: [...g], h: [...h] }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(out.success, "child process failed");
  const child = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(child.wasm, "undefined", "the child still had WebAssembly");
  const a = randn(67 * 301, prng(1)), b = randn(301 * 130, prng(2));
  const h = gramRaw(randn(150 * 100, prng(3)), 150, 100);
  choleskyLowerInPlace(h, 100);
  const here = {
    c: matmulRaw(a, b, 67, 301, 130),
    g: gramRaw(a, 67, 301).subarray(0, 301 * 66),
    h,
  };
  for (const key of ["c", "g", "h"] as const) {
    const mine = here[key], theirs = child[key] as number[];
    assert.equal(mine.length, theirs.length);
    for (let i = 0; i < mine.length; i++) {
      if (!Object.is(mine[i], theirs[i])) assert.fail(`${key}[${i}]: ${mine[i]} vs ${theirs[i]}`);
    }
  }
});

Deno.test("eigh() and svd() stay accurate on matrices scaled by 1e-300 and 1e300", () => {
  const n = 50;
  const x = randomMatrix(n, n, 500);
  const base = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) base[i * n + j] = x[i * n + j]! + x[j * n + i]!;
  }
  const values = eigh(t64(n, n, base)).values.data;
  const sv = svd(t64(n, n, base)).s.data;
  for (const scale of [1e-300, 1e300]) {
    const a = base.map((v) => v * scale);
    const e = eigh(t64(n, n, a));
    const s = svd(t64(n, n, a));
    assertClose(e.values.data.map((v) => v / scale), values, { atol: 1e-12, rtol: 1e-12 });
    assertClose(s.s.data.map((v) => v / scale), sv, { atol: 1e-12, rtol: 1e-12 });
    assert.ok(orthogonalityError(e.vectors.data, n, n) < 1e-12);
    assert.ok(orthogonalityError(s.u.data, n, n) < 1e-12);
  }
});
