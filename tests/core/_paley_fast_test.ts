import assert from "node:assert/strict";
import { paleyFastApplies, paleyFastPlan, paleyInPlace } from "../../core/_paley_fast.ts";
import { primePower } from "../../core/galois.ts";
import { type HadamardFactor, hadamardFactorMatrix } from "../../core/hadamard.ts";
import { prng, randn } from "../../core/prng.ts";
import { relError } from "../_helpers.ts";

/** Every Paley I factor of order ≤ limit: q + 1 for the prime powers q ≡ 3 (mod 4). */
function paleyFactors(limit: number): HadamardFactor[] {
  const out: HadamardFactor[] = [];
  for (let q = 3; q + 1 <= limit; q += 4) {
    const pk = primePower(q);
    if (pk !== null) out.push({ kind: "paley1", n: q + 1, q, p: pk.p, k: pk.k });
  }
  return out;
}

/** y = B·x (or Bᵀ·x) for a dense ±1 block, in float64. */
function dense(b: Int8Array, m: number, x: Float64Array, transpose: boolean): Float64Array {
  const y = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    let acc = 0;
    for (let j = 0; j < m; j++) acc += (transpose ? b[j * m + i]! : b[i * m + j]!) * x[j]!;
    y[i] = acc;
  }
  return y;
}

Deno.test("the fast Paley I transform equals the dense block of hadamardFactorMatrix for every order up to 1000", () => {
  const rng = prng(11);
  const factors = paleyFactors(1000);
  // Prime fields and the extension fields GF(27), GF(243), GF(343) are all among them.
  assert.ok(factors.some((f) => f.kind === "paley1" && f.k === 3 && f.p === 7));
  assert.ok(factors.some((f) => f.kind === "paley1" && f.k === 5 && f.p === 3));
  for (const f of factors) {
    if (f.kind !== "paley1") continue;
    const m = f.n, b = hadamardFactorMatrix(f), plan = paleyFastPlan(f.q);
    for (const transpose of [false, true]) {
      const x = randn(3 * m, rng);
      const y = x.slice();
      paleyInPlace(y, plan, 1, transpose);
      for (let r = 0; r < 3; r++) {
        const want = dense(b, m, x.subarray(r * m, (r + 1) * m), transpose);
        const err = relError(y.subarray(r * m, (r + 1) * m), want);
        assert.ok(err < 1e-12, `q = ${f.q} = ${f.p}^${f.k}, transpose ${transpose}: error ${err}`);
      }
    }
  }
});

Deno.test("the fast Paley I transform along a strided axis equals the dense block on each fibre", () => {
  const rng = prng(12);
  for (const q of [27, 343]) {
    const pk = primePower(q)!;
    const f: HadamardFactor = { kind: "paley1", n: q + 1, q, p: pk.p, k: pk.k };
    const m = q + 1, s = 3, b = hadamardFactorMatrix(f);
    const x = randn(2 * m * s, rng);
    const y = x.slice();
    paleyInPlace(y, paleyFastPlan(q), s, false);
    for (let o = 0; o < 2; o++) {
      for (let t = 0; t < s; t++) {
        const fibre = Float64Array.from({ length: m }, (_, i) => x[o * m * s + i * s + t]!);
        const got = Float64Array.from({ length: m }, (_, i) => y[o * m * s + i * s + t]!);
        const err = relError(got, dense(b, m, fibre, false));
        assert.ok(err < 1e-12, `q = ${q}, fibre ${o}, ${t}: error ${err}`);
      }
    }
  }
});

Deno.test("the eigenvalues of the Jacobsthal matrix are ±i·√q off the zero frequency (Gauss sums)", () => {
  for (const q of [27, 243, 343]) {
    const plan = paleyFastPlan(q);
    for (let r = 0; r < plan.rePos.length; r++) {
      const pos = plan.rePos[r]!;
      // mul = (1 + λ)/q, so λ = q·mul − 1.
      const lr = q * plan.mul[2 * pos]! - 1, li = q * plan.mul[2 * pos + 1]!;
      assert.ok(Math.abs(lr) < 1e-9 && Math.abs(Math.abs(li) - Math.sqrt(q)) < 1e-9);
    }
  }
});

Deno.test("paleyFastApplies() holds for extension fields only", () => {
  assert.equal(paleyFastApplies(343), true);
  assert.equal(paleyFastApplies(27), true);
  assert.equal(paleyFastApplies(11), false);
  assert.equal(paleyFastApplies(25), false);
  assert.throws(() => paleyFastPlan(25), RangeError);
});
