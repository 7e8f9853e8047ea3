import assert from "node:assert/strict";
import { erf } from "mathjs";
import {
  gaussianVectorGrid,
  lloydMaxGrid,
  nearestLevel,
  nearestPointSearch,
} from "../../quantizers/lloyd_max.ts";
import { prng } from "../../core/prng.ts";
import { assertClose } from "../_helpers.ts";

const phi = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);

/** Composite Simpson's rule of f on [a, b] with `steps` (even) intervals. */
function simpson(f: (x: number) => number, a: number, b: number, steps = 2000): number {
  const h = (b - a) / steps;
  let s = f(a) + f(b);
  for (let i = 1; i < steps; i++) s += (i % 2 === 1 ? 4 : 2) * f(a + i * h);
  return (s * h) / 3;
}

/** MSE of nearest-level quantization of N(0, 1), by Simpson's rule cell by cell on [−12, 12]. */
function mseByQuadrature(levels: Float64Array): number {
  const L = levels.length;
  let total = 0;
  for (let i = 0; i < L; i++) {
    const a = i === 0 ? -12 : 0.5 * (levels[i - 1]! + levels[i]!);
    const b = i === L - 1 ? 12 : 0.5 * (levels[i]! + levels[i + 1]!);
    const y = levels[i]!;
    total += simpson((x) => (x - y) ** 2 * phi(x), a, b, 2000);
  }
  return total;
}

Deno.test("lloydMaxGrid() reaches the known Gaussian optima at 1–4 bits", () => {
  assertClose(lloydMaxGrid(1).mse, 1 - 2 / Math.PI, { atol: 1e-12 });
  assertClose(lloydMaxGrid(1).levels[1]!, Math.sqrt(2 / Math.PI), { atol: 1e-12 });
  // Max (1960), Table I: mean squared error of the optimum N-level quantizer.
  assertClose(lloydMaxGrid(2).mse, 0.1175, { atol: 5e-5 });
  assertClose(lloydMaxGrid(3).mse, 0.03454, { atol: 2e-5 });
  assertClose(lloydMaxGrid(4).mse, 0.009497, { atol: 1e-5 });
});

Deno.test("Lloyd–Max levels satisfy the centroid condition and their MSE matches quadrature", () => {
  for (let bits = 1; bits <= 6; bits++) {
    const g = lloydMaxGrid(bits);
    const L = 2 ** bits;
    assert.equal(g.levels.length, L);
    assert.equal(g.thresholds.length, L - 1);
    for (let i = 0; i < L; i++) {
      assertClose(g.levels[i]!, -g.levels[L - 1 - i]!, { atol: 1e-12 }); // symmetric
      if (i > 0) assert.ok(g.levels[i]! > g.levels[i - 1]!);
      const a = i === 0 ? -12 : g.thresholds[i - 1]!;
      const b = i === L - 1 ? 12 : g.thresholds[i]!;
      // P from mathjs' erf, first moment by Simpson: two independent routes to the centroid.
      const p = 0.5 * (erf(b / Math.SQRT2) - erf(a / Math.SQRT2));
      const m1 = simpson((x) => x * phi(x), a, b, 400);
      assertClose(g.levels[i]!, m1 / p, { atol: 1e-7, rtol: 1e-7 });
    }
    assertClose(mseByQuadrature(g.levels), g.mse, { rtol: 1e-9, atol: 1e-12 });
  }
});

Deno.test("moving any Lloyd–Max level increases the quadrature MSE (local optimality)", () => {
  for (const bits of [2, 3]) {
    const g = lloydMaxGrid(bits);
    const base = mseByQuadrature(g.levels);
    for (let i = 0; i < g.levels.length; i++) {
      for (const d of [-1e-3, 1e-3]) {
        const moved = g.levels.slice();
        moved[i] = moved[i]! + d;
        assert.ok(mseByQuadrature(moved) > base, `bits ${bits}, level ${i}, step ${d}`);
      }
    }
  }
});

Deno.test("high-rate Lloyd–Max grids approach the Panter–Dite constant √3·π/2 · 4^−bits", () => {
  let prev = Infinity;
  for (let bits = 1; bits <= 8; bits++) {
    const g = lloydMaxGrid(bits);
    assert.ok(g.mse < prev / 3, `bits ${bits}`);
    prev = g.mse;
  }
  assertClose(lloydMaxGrid(8).mse * 4 ** 8, (Math.sqrt(3) * Math.PI) / 2, { rtol: 0.02 });
});

Deno.test("lloydMaxGrid() is cached but hands out fresh arrays", () => {
  const a = lloydMaxGrid(3);
  a.levels[0] = 99;
  assert.notEqual(lloydMaxGrid(3).levels[0], 99);
});

Deno.test("nearestLevel() and nearestPointSearch() agree with brute force", () => {
  const rng = prng(3);
  const g = lloydMaxGrid(4);
  for (let t = 0; t < 2000; t++) {
    const x = 4 * rng.normal();
    let best = 0;
    for (let i = 1; i < g.levels.length; i++) {
      if (Math.abs(x - g.levels[i]!) < Math.abs(x - g.levels[best]!)) best = i;
    }
    assert.equal(nearestLevel(g.thresholds, x), best);
  }
  const v = gaussianVectorGrid(3);
  const near = nearestPointSearch(v.points);
  const K = v.points.length / 2;
  for (let t = 0; t < 2000; t++) {
    const a = 2 * rng.normal(), b = 2 * rng.normal();
    let bestD = Infinity;
    for (let k = 0; k < K; k++) {
      bestD = Math.min(bestD, (a - v.points[2 * k]!) ** 2 + (b - v.points[2 * k + 1]!) ** 2);
    }
    const got = near(a, b);
    assertClose((a - v.points[2 * got]!) ** 2 + (b - v.points[2 * got + 1]!) ** 2, bestD, {
      atol: 1e-15,
    });
  }
});

Deno.test("2-D k-means grids beat the scalar grid per coordinate and are seeded", () => {
  for (const bits of [2, 3, 4]) {
    const v = gaussianVectorGrid(bits);
    assert.equal(v.points.length, 2 * 4 ** bits);
    assert.ok(v.mse < lloydMaxGrid(bits).mse, `bits ${bits}: ${v.mse}`);
  }
  assert.deepEqual(gaussianVectorGrid(2, { seed: 4 }), gaussianVectorGrid(2, { seed: 4 }));
  assert.notDeepEqual(
    gaussianVectorGrid(2, { seed: 4 }).points,
    gaussianVectorGrid(2, { seed: 5 }).points,
  );
});

Deno.test("grid builders reject bad bits and dimensions", () => {
  for (const bits of [0, 9, 2.5]) assert.throws(() => lloydMaxGrid(bits), /'bits'/);
  assert.throws(() => gaussianVectorGrid(5), /'bits'/);
  assert.throws(() => gaussianVectorGrid(2, { p: 3 }), /'p'/);
  assert.throws(() => gaussianVectorGrid(2, { samplesPerPoint: 0 }), /'samplesPerPoint'/);
});
