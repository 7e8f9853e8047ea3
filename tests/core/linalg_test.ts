import assert from "node:assert/strict";
import * as math from "mathjs";
import {
  CholeskyError,
  choleskyLowerInPlace,
  gemmSubInPlace,
  gemmSubInPlaceF32,
  gramRaw,
  inverseFromCholesky,
  invertLower,
  matmulRaw,
} from "../../core/_dense.ts";
import { prng, randn } from "../../core/prng.ts";
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
