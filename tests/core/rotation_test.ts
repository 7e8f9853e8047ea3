import assert from "node:assert/strict";
import { multiply, transpose as mTranspose } from "mathjs";
import { prng, randn } from "../../core/prng.ts";
import {
  randomHadamard,
  randomOrthogonal,
  rotateActivations,
  rotateWeight,
  unrotateWeight,
} from "../../core/rotation.ts";
import { tensor } from "../../core/tensor.ts";
import { assertClose } from "../_helpers.ts";

function rowsOf(data: ArrayLike<number>, rows: number, n: number): number[][] {
  return Array.from(
    { length: rows },
    (_, r) => Array.from({ length: n }, (_, j) => data[r * n + j]!),
  );
}

function assertOrthogonal(q: Float64Array, n: number, atol: number): void {
  const m = rowsOf(q, n, n);
  const g = multiply(m, mTranspose(m)) as number[][];
  const eye = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => +(i === j)));
  assertClose(g.flat(), eye.flat(), { atol });
}

Deno.test("randomHadamard() is orthogonal (Q·Qᵀ = I by mathjs) for Hadamard orders and both fallbacks", () => {
  for (
    const [n, fallback, kind] of [
      [12, "none", "hadamard"],
      [64, "none", "hadamard"],
      [44, "none", "hadamard"],
      [214, "kronecker", "kronecker"],
      [90, "kronecker", "kronecker"],
      [120 + 6, "blockDiagonal", "blockDiagonal"],
      [7, "kronecker", "kronecker"],
    ] as const
  ) {
    const q = randomHadamard(n, { seed: 5, fallback });
    assert.equal(q.kind, kind);
    assertOrthogonal(q.dense(), n, 1e-12);
  }
  assert.match(
    randomHadamard(428, { fallback: "kronecker" }).description,
    /random orthogonal\(107\)/,
  );
  assert.match(randomHadamard(428, { fallback: "blockDiagonal" }).description, /^I\(107\) ⊗ /);
});

Deno.test("a Hadamard rotation's entries are ±1/√n with seeded signs: same seed same Q, other seeds differ", () => {
  const n = 20;
  const a = randomHadamard(n, { seed: 1 }).dense();
  const b = randomHadamard(n, { seed: 1 }).dense();
  const c = randomHadamard(n, { seed: 2 }).dense();
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  for (const v of a) assertClose(Math.abs(v), 1 / Math.sqrt(n), { atol: 1e-15 });
});

Deno.test("applyToRows and applyToColumns equal the dense products with Q and Qᵀ", () => {
  const rng = prng(6);
  for (const [n, fallback] of [[24, "none"], [30, "kronecker"], [30, "blockDiagonal"]] as const) {
    const rot = randomHadamard(n, { seed: 9, fallback });
    const q = rowsOf(rot.dense(), n, n);
    const x = randn(4 * n, rng);
    const xs = rowsOf(x, 4, n);
    const t = tensor("f64", [4, n], x);
    assertClose(rot.applyToRows(t).data, (multiply(xs, mTranspose(q)) as number[][]).flat(), {
      atol: 1e-12,
    });
    assertClose(
      rot.applyToRows(t, { transpose: true }).data,
      (multiply(xs, q) as number[][]).flat(),
      { atol: 1e-12 },
    );
    const xc = randn(n * 3, rng);
    const tc = tensor("f64", [n, 3], xc);
    assertClose(rot.applyToColumns(tc).data, (multiply(q, rowsOf(xc, n, 3)) as number[][]).flat(), {
      atol: 1e-12,
    });
    assertClose(
      rot.applyToColumns(tc, { transpose: true }).data,
      (multiply(mTranspose(q), rowsOf(xc, n, 3)) as number[][]).flat(),
      { atol: 1e-12 },
    );
  }
});

Deno.test("rotating a linear layer leaves its output unchanged: X·Wᵀ = (X·Q)·(W·Q)ᵀ", () => {
  const rng = prng(7);
  for (const [inF, fallback] of [[1536, "none"], [344, "none"], [13696, "kronecker"]] as const) {
    const outF = 5, tokens = 3;
    const w = tensor("f64", [outF, inF], randn(outF * inF, rng));
    const x = tensor("f64", [tokens, inF], randn(tokens * inF, rng));
    const rot = randomHadamard(inF, { seed: 11, fallback });
    const wr = rotateWeight(w, rot), xr = rotateActivations(x, rot);
    for (let t = 0; t < tokens; t++) {
      for (let o = 0; o < outF; o++) {
        let y = 0, yr = 0;
        for (let i = 0; i < inF; i++) {
          y += x.data[t * inF + i]! * w.data[o * inF + i]!;
          yr += xr.data[t * inF + i]! * wr.data[o * inF + i]!;
        }
        assertClose(yr, y, { atol: 1e-10, rtol: 1e-12 });
      }
    }
    assertClose(unrotateWeight(wr, rot).data, w.data, { atol: 1e-12 });
    // f32 in, f32 out.
    const w32 = tensor("f32", [outF, inF], Float32Array.from(w.data));
    assert.equal(rotateWeight(w32, rot).dtype, "f32");
  }
});

Deno.test("randomOrthogonal() is orthogonal and seeded", () => {
  assertOrthogonal(randomOrthogonal(50, 3), 50, 1e-13);
  assert.deepEqual(randomOrthogonal(9, 1), randomOrthogonal(9, 1));
  assert.notDeepEqual(randomOrthogonal(9, 1), randomOrthogonal(9, 2));
});

Deno.test("randomHadamard() rejects bad orders and options with named errors", () => {
  assert.throws(() => randomHadamard(100 + 2), /n = 102.*100 and 104/);
  assert.throws(() => randomHadamard(13696), /13696.*13692 and 13712/);
  assert.throws(() => randomHadamard(0), RangeError);
  assert.throws(() => randomHadamard(4099, { fallback: "kronecker" }), /blockDiagonal/);
  assert.equal(randomHadamard(4099, { fallback: "blockDiagonal" }).kind, "blockDiagonal");
  assert.throws(() => randomHadamard(12, { fallback: "nope" as never }), /'fallback'/);
  const rot = randomHadamard(12);
  assert.throws(() => rot.applyToRows(tensor("f64", [2, 8])), /length 12/);
});
