import assert from "node:assert/strict";
import { permutation, prng } from "../../core/prng.ts";

Deno.test("prng() gives the same stream for the same seed and different ones for others", () => {
  const a = prng(7), b = prng(7), c = prng(8);
  const xa = Array.from({ length: 8 }, () => a.nextU32());
  const xb = Array.from({ length: 8 }, () => b.nextU32());
  const xc = Array.from({ length: 8 }, () => c.nextU32());
  assert.deepEqual(xa, xb);
  assert.notDeepEqual(xa, xc);
});

Deno.test("prng().normal() has mean 0 and variance 1 within sampling error", () => {
  const g = prng(1);
  const n = 200_000;
  let s = 0, s2 = 0;
  for (let i = 0; i < n; i++) {
    const x = g.normal();
    s += x;
    s2 += x * x;
  }
  const mean = s / n, variance = s2 / n - mean * mean;
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.02, `variance ${variance}`);
});

Deno.test("prng().uniform() stays in [0, 1) and permutation() is a permutation", () => {
  const g = prng(3);
  for (let i = 0; i < 10_000; i++) {
    const u = g.uniform();
    assert.ok(u >= 0 && u < 1);
  }
  const p = Array.from(permutation(100, g)).sort((x, y) => x - y);
  assert.deepEqual(p, Array.from({ length: 100 }, (_, i) => i));
});
