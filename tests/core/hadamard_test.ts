import assert from "node:assert/strict";
import { multiply, transpose as mTranspose } from "mathjs";
import { fwht } from "../../core/fwht.ts";
import {
  hadamard,
  hadamardConstruction,
  hadamardOrders,
  hadamardRow,
  nearestHadamardOrders,
} from "../../core/hadamard.ts";
import { prng } from "../../core/prng.ts";
import { randomHadamard } from "../../core/rotation.ts";
import { tensor } from "../../core/tensor.ts";
import { assertClose } from "../_helpers.ts";

/** Runs fn, asserts it throws a RangeError, and returns it. */
function rangeError(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof RangeError, `expected a RangeError, got ${e}`);
    return e;
  }
  throw new assert.AssertionError({ message: "expected a RangeError, nothing was thrown" });
}

/** Exact H·Hᵀ = n·I on rows packed 32 entries per word: ⟨a, b⟩ = n − 2·popcount(a xor b). */
function exactGramIsNI(h: Int8Array, n: number): boolean {
  const words = Math.ceil(n / 32);
  const packed = new Int32Array(n * words);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const v = h[i * n + j]!;
      if (v !== 1 && v !== -1) return false;
      if (v === -1) packed[i * words + (j >> 5)]! |= 1 << (j & 31);
    }
  }
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let diff = 0;
      for (let w = 0; w < words; w++) {
        let x = packed[i * words + w]! ^ packed[j * words + w]!;
        x = x - ((x >>> 1) & 0x55555555);
        x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
        diff += Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
      }
      if (n - 2 * diff !== 0) return false;
    }
  }
  return true;
}

/** Dense y = H·v (or Hᵀ·v) for an integer vector, exact in float64. */
function denseApply(h: Int8Array, n: number, v: Float64Array, transposed = false): Float64Array {
  const y = new Float64Array(n);
  if (!transposed) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += h[i * n + j]! * v[j]!;
      y[i] = s;
    }
  } else {
    for (let j = 0; j < n; j++) {
      const vj = v[j]!;
      for (let i = 0; i < n; i++) y[i] = y[i]! + h[j * n + i]! * vj;
    }
  }
  return y;
}

const HIDDEN = [1536, 2048, 3072, 4096, 5120, 5632, 8192, 8960, 11008, 13824, 14336, 18944, 29568];

Deno.test("hadamard() matches a mathjs product H·Hᵀ = n·I for small Paley orders", () => {
  for (const n of [12, 20, 28, 36]) {
    const { matrix } = hadamard(n);
    const rows = Array.from(
      { length: n },
      (_, i) => Array.from(matrix.subarray(i * n, (i + 1) * n)),
    );
    const g = multiply(rows, mTranspose(rows)) as number[][];
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) assert.deepEqual(g[i]![j], i === j ? n : 0);
    }
  }
});

Deno.test("every constructible multiple of 4 up to 2048 gives H·Hᵀ = n·I and fwht equals the dense product", () => {
  const orders = hadamardOrders(2048);
  const rng = prng(11);
  assert.ok(orders.length > 300, `only ${orders.length} orders constructed`);
  for (const c of orders) {
    const n = c.n;
    const { matrix: h, construction } = hadamard(n);
    assert.deepEqual(construction.description, c.description);
    assert.deepEqual(h.length, n * n);
    // Exact Gram matrix (bit-packed) up to 512; above, Freivalds' check below with random
    // integer vectors in [0, 2^20): H·(Hᵀ·v) = n·v exactly, wrong with probability ≤ 2^-20 per vector.
    if (n <= 512) assert.ok(exactGramIsNI(h, n), `H·Hᵀ ≠ ${n}·I for ${c.description}`);
    for (let trial = 0; trial < (n <= 512 ? 1 : 2); trial++) {
      const v = new Float64Array(n);
      for (let i = 0; i < n; i++) v[i] = rng.nextU32() >>> 12;
      const htv = denseApply(h, n, v, true);
      const hhtv = denseApply(h, n, htv);
      for (let i = 0; i < n; i++) {
        if (hhtv[i] !== n * v[i]!) throw new Error(`H·Hᵀ ≠ ${n}·I for ${c.description}`);
      }
      if (trial > 0) continue;
      // The fast transform equals the dense products (exactly, but for the rounding of the
      // DFT that the Paley I blocks over extension fields use).
      const x = tensor("f64", [1, n], v);
      const scale = htv.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
      assertClose(fwht(x, { transpose: true }).data, htv, { atol: 1e-12 * scale, rtol: 0 });
      assertClose(fwht(tensor("f64", [1, n], htv)).data, hhtv, {
        atol: 1e-12 * n * scale,
        rtol: 0,
      });
    }
  }
});

Deno.test("the constructions reach the orders known to need finite fields", () => {
  // 344 = 7^3 + 1 needs GF(343); 28 = 3^3 + 1 needs GF(27) (or Paley II over GF(13)); 100 = 2(49 + 1).
  assert.deepEqual(hadamardConstruction(344)?.factors.map((f) => f.kind), ["paley1"]);
  assert.deepEqual(hadamardConstruction(100)?.factors.map((f) => f.kind), ["paley2"]);
  const f344 = hadamardConstruction(344)!.factors[0]!;
  assert.ok(f344.kind === "paley1" && f344.p === 7 && f344.k === 3);
  // Orders with no Sylvester/Paley/Kronecker recipe are reported as such.
  for (const n of [92, 172, 13696]) assert.deepEqual(hadamardConstruction(n), null);
});

Deno.test("hidden sizes are true Hadamard matrices: H·(Hᵀ·v) = n·v through fwht and spot-checked rows", () => {
  const rng = prng(5);
  for (const n of HIDDEN) {
    const c = hadamardConstruction(n);
    assert.ok(c !== null, `no construction for ${n}`);
    assert.deepEqual(c.factors.reduce((a, f) => a * f.n, 1), n);
    const v = new Float64Array(n);
    for (let i = 0; i < n; i++) v[i] = rng.normal();
    const x = tensor("f64", [1, n], v);
    const hv = fwht(x);
    const back = fwht(fwht(x, { transpose: true }));
    assertClose(back.data, v.map((t) => n * t), { atol: 1e-9 * n, rtol: 1e-12 });
    // Spot rows: pairwise orthogonal, norm n, and row·v equals the transform's entry.
    const picks = [0, 1, n - 1, rng.int(n), rng.int(n), rng.int(n)];
    const rows = picks.map((i) => hadamardRow(n, i));
    for (let a = 0; a < rows.length; a++) {
      let dv = 0;
      for (let j = 0; j < n; j++) dv += rows[a]![j]! * v[j]!;
      assertClose(hv.data[picks[a]!]!, dv, { atol: 1e-9 * Math.sqrt(n), rtol: 1e-12 });
      for (let b = a; b < rows.length; b++) {
        if (picks[a] === picks[b] && a !== b) continue;
        let d = 0;
        for (let j = 0; j < n; j++) d += rows[a]![j]! * rows[b]![j]!;
        assert.deepEqual(d, a === b ? n : 0, `rows ${picks[a]}, ${picks[b]} of ${n}`);
      }
    }
  }
});

Deno.test("13696 = 2^7·107 works through the structured fallback and stays orthogonal", () => {
  const n = 13696;
  const rng = prng(9);
  for (const fallback of ["kronecker", "blockDiagonal"] as const) {
    const q = randomHadamard(n, { seed: 3, fallback });
    assert.deepEqual(q.kind, fallback);
    const u = new Float64Array(2 * n);
    for (let i = 0; i < 2 * n; i++) u[i] = rng.normal();
    const x = tensor("f64", [2, n], u);
    const qx = q.applyToRows(x).data;
    // ⟨Qu, Qv⟩ = ⟨u, v⟩ and ‖Qu‖ = ‖u‖, and Qᵀ·Q = I on these vectors.
    const dot = (a: ArrayLike<number>, oa: number, b: ArrayLike<number>, ob: number) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += a[oa + i]! * b[ob + i]!;
      return s;
    };
    assertClose(dot(qx, 0, qx, n), dot(u, 0, u, n), { atol: 1e-8 });
    assertClose(dot(qx, 0, qx, 0), dot(u, 0, u, 0), { rtol: 1e-12 });
    assertClose(
      q.applyToRows(tensor("f64", [2, n], Float64Array.from(qx)), { transpose: true }).data,
      u,
      {
        atol: 1e-12,
      },
    );
  }
});

Deno.test("bad orders throw a RangeError naming n and the nearest supported orders", () => {
  const e1 = rangeError(() => hadamard(102));
  assert.ok(e1.message.includes("102") && e1.message.includes("100 and 104"), e1.message);
  const [below, above] = nearestHadamardOrders(13696);
  const e2 = rangeError(() => hadamard(13696));
  assert.ok(
    e2.message.includes("13696") && e2.message.includes(`${below} and ${above}`),
    e2.message,
  );
  assert.ok(below !== null && below < 13696 && above > 13696);
  assert.ok(hadamardConstruction(below) !== null && hadamardConstruction(above) !== null);
  for (let m = below + 4; m < above; m += 4) assert.deepEqual(hadamardConstruction(m), null);
  const e3 = rangeError(() => randomHadamard(13696));
  assert.ok(e3.message.includes("13696"), e3.message);
  rangeError(() => hadamard(0));
  rangeError(() => hadamard(2.5));
  assert.ok(rangeError(() => hadamard(6)).message.includes("nearest supported orders: 4 and 8"));
  rangeError(() => hadamardRow(12, 12));
});
