import assert from "node:assert/strict";
import { kron, matrix, multiply, transpose as mTranspose } from "mathjs";
import { fwht, fwhtInPlace, fwhtPlan } from "../../core/fwht.ts";
import { hadamard } from "../../core/hadamard.ts";
import { prng, randn } from "../../core/prng.ts";
import { randomOrthogonal } from "../../core/rotation.ts";
import { tensor } from "../../core/tensor.ts";
import { assertClose } from "../_helpers.ts";

function rowsOf(data: ArrayLike<number>, rows: number, n: number): number[][] {
  return Array.from(
    { length: rows },
    (_, r) => Array.from({ length: n }, (_, j) => data[r * n + j]!),
  );
}

Deno.test("fwht() equals the mathjs product X·Hᵀ (and X·H with transpose) in f64 and f32", () => {
  const rng = prng(1);
  for (const n of [1, 2, 4, 8, 12, 20, 24, 28, 40, 48, 56, 100, 108, 120]) {
    const h = rowsOf(hadamard(n).matrix, n, n);
    const rows = 3;
    const x = randn(rows * n, rng);
    const expected = multiply(rowsOf(x, rows, n), mTranspose(h)) as number[][];
    const expectedT = multiply(rowsOf(x, rows, n), h) as number[][];
    assertClose(fwht(tensor("f64", [rows, n], x)).data, expected.flat(), { atol: 1e-12 });
    assertClose(fwht(tensor("f64", [rows, n], x), { transpose: true }).data, expectedT.flat(), {
      atol: 1e-12,
    });
    const y32 = fwht(tensor("f32", [rows, n], Float32Array.from(x)));
    assert.equal(y32.dtype, "f32");
    assertClose(y32.data, expected.flat(), { atol: 1e-5 * Math.sqrt(n), rtol: 1e-6 });
    const yn = fwht(tensor("f64", [rows, n], x), { normalize: true });
    assertClose(yn.data, expected.flat().map((v) => v / Math.sqrt(n)), { atol: 1e-12 });
  }
});

Deno.test("normalized fwht() is orthonormal: Hᵀ·(H·x)/n returns x for the hidden sizes", () => {
  const rng = prng(2);
  for (const n of [4096, 11008, 14336, 29568]) {
    const x = randn(n, rng);
    const y = fwht(tensor("f64", [1, n], x), { normalize: true });
    let nx = 0, ny = 0;
    for (let i = 0; i < n; i++) {
      nx += x[i]! * x[i]!;
      ny += y.data[i]! * y.data[i]!;
    }
    assertClose(ny, nx, { rtol: 1e-12 });
    assertClose(fwht(y, { normalize: true, transpose: true }).data, x, { atol: 1e-12 });
  }
});

Deno.test("fwht() with a custom block equals the mathjs product with kron(H, B)", () => {
  const rng = prng(3);
  for (const [outer, m] of [[1, 5], [4, 3], [8, 7], [12, 5], [2, 107]] as const) {
    const n = outer * m;
    const b = randomOrthogonal(m, 4);
    const k = kron(matrix(rowsOf(hadamard(outer).matrix, outer, outer)), matrix(rowsOf(b, m, m)));
    const x = randn(2 * n, rng);
    const xs = rowsOf(x, 2, n);
    const expected = (multiply(xs, mTranspose(k)).valueOf() as number[][]).flat();
    const expectedT = (multiply(xs, k).valueOf() as number[][]).flat();
    const block = { m, data: b };
    assertClose(fwht(tensor("f64", [2, n], x), { block }).data, expected, { atol: 1e-12 });
    assertClose(fwht(tensor("f64", [2, n], x), { block, transpose: true }).data, expectedT, {
      atol: 1e-12,
    });
    const norm = fwht(tensor("f64", [2, n], x), { block, normalize: true }).data;
    assertClose(norm, expected.map((v) => v / Math.sqrt(outer)), { atol: 1e-12 });
  }
});

Deno.test("fwht() works on the last axis of any rank, leaves its input alone, and matches fwhtInPlace", () => {
  const rng = prng(4);
  const n = 12;
  const x = randn(2 * 3 * n, rng);
  const copy = x.slice();
  const y = fwht(tensor("f64", [2, 3, n], x));
  assert.deepEqual(y.shape, [2, 3, n]);
  assert.deepEqual(x, copy);
  const flat = fwht(tensor("f64", [6, n], x));
  assert.deepEqual(y.data, flat.data);
  const raw = x.slice();
  fwhtInPlace(raw, fwhtPlan(n));
  assert.deepEqual(raw, flat.data);
});

Deno.test("fwht() rejects bad dtypes, orders and blocks with named errors", () => {
  assert.throws(() => fwht(tensor("i8", [1, 4]) as never), TypeError);
  assert.throws(() => fwht(tensor("f64", [2, 6])), /n = 6.*nearest supported orders: 4 and 8/);
  assert.throws(() => fwht(tensor("f64", [1, 92])), /n = 92.*88 and 96/);
  assert.throws(
    () => fwht(tensor("f64", [1, 12]), { block: { m: 5, data: new Float64Array(25) } }),
    /'block'/,
  );
  assert.throws(() => fwht(tensor("f64", [])), RangeError);
});
