import assert from "node:assert/strict";
import {
  decodeFp8,
  decodeFp8Array,
  encodeFp8,
  encodeFp8Array,
  FP8_E4M3_MAX,
  FP8_E5M2_MAX,
  type Fp8DType,
  fp8Max,
} from "../../core/fp8.ts";
import { prng } from "../../core/prng.ts";

// Independent decoders. E5M2 is the top byte of an IEEE binary16 (same 5-bit
// exponent and bias), so Float16Array decodes it. E4M3 follows the OCP
// spec's table: value = (−1)^S · 2^(E−7) · 1.M, subnormals 2^−6 · 0.M, and
// S.1111.111 is NaN (no infinities).
const h = new Float16Array(1);
const hBits = new Uint16Array(h.buffer);
function refE5M2(code: number): number {
  hBits[0] = code << 8;
  return h[0]!;
}
function refE4M3(code: number): number {
  const s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e === 15 && m === 7) return NaN;
  const mag = e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7);
  return s ? -mag : mag;
}
const REF: Record<Fp8DType, (c: number) => number> = { f8e4m3: refE4M3, f8e5m2: refE5M2 };
const FORMATS: Fp8DType[] = ["f8e4m3", "f8e5m2"];

const finiteCache = new Map<string, number[]>();
function finiteCodes(dtype: Fp8DType, sign: number): number[] {
  const key = `${dtype}${sign}`;
  if (!finiteCache.has(key)) {
    const all = [...Array(128).keys()].map((c) => sign + c);
    finiteCache.set(key, all.filter((c) => Number.isFinite(REF[dtype](c))));
  }
  return finiteCache.get(key)!;
}

/** Brute force: nearest finite code of the same sign, ties to the even code; saturates to ±max. */
function refEncode(dtype: Fp8DType, x: number): number {
  const dec = REF[dtype];
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  let best = -1, bestDist = Infinity;
  const finite = finiteCodes(dtype, sign);
  const maxCode = finite.reduce((a, c) => (Math.abs(dec(c)) > Math.abs(dec(a)) ? c : a));
  // beyond max, the nearest finite value is max (saturation); distances there
  // would also lose precision in f64
  if (Math.abs(x) >= Math.abs(dec(maxCode))) return maxCode;
  for (const c of finite) {
    const v = dec(c);
    const d = Math.abs(v - x); // exact enough: see the tie cases, built from exact midpoints
    if (d < bestDist || (d === bestDist && (c & 1) === 0)) {
      best = c;
      bestDist = d;
    }
  }
  return best;
}

Deno.test("decodeFp8 agrees with the spec's definition on all 256 codes of both formats", () => {
  for (const dtype of FORMATS) {
    const all = decodeFp8Array(
      dtype,
      Uint8Array.from({ length: 256 }, (_, i) => i),
      new Float64Array(256),
    );
    for (let c = 0; c < 256; c++) {
      const want = REF[dtype](c);
      const got = decodeFp8(dtype, c);
      assert.ok(Object.is(got, want), `${dtype} code 0x${c.toString(16)}: ${got} vs ${want}`);
      assert.ok(Object.is(all[c], want));
    }
  }
});

Deno.test("the FP8 special values sit where the OCP spec puts them", () => {
  assert.equal(decodeFp8("f8e4m3", 0x7e), 448);
  assert.equal(decodeFp8("f8e4m3", 0xfe), -448);
  assert.ok(Number.isNaN(decodeFp8("f8e4m3", 0x7f)) && Number.isNaN(decodeFp8("f8e4m3", 0xff)));
  assert.equal(decodeFp8("f8e4m3", 0x78), 256); // S.1111.000 is a number: no infinities
  assert.equal(decodeFp8("f8e4m3", 0x08), 2 ** -6);
  assert.equal(decodeFp8("f8e4m3", 0x07), 0.875 * 2 ** -6);
  assert.equal(decodeFp8("f8e4m3", 0x01), 2 ** -9);
  assert.equal(decodeFp8("f8e5m2", 0x7b), 57344);
  assert.equal(decodeFp8("f8e5m2", 0x7c), Infinity);
  assert.equal(decodeFp8("f8e5m2", 0xfc), -Infinity);
  for (const c of [0x7d, 0x7e, 0x7f, 0xfd]) assert.ok(Number.isNaN(decodeFp8("f8e5m2", c)));
  assert.equal(decodeFp8("f8e5m2", 0x04), 2 ** -14);
  assert.equal(decodeFp8("f8e5m2", 0x01), 2 ** -16);
  assert.ok(Object.is(decodeFp8("f8e4m3", 0x80), -0));
  assert.equal(fp8Max("f8e4m3"), FP8_E4M3_MAX);
  assert.equal(fp8Max("f8e5m2"), FP8_E5M2_MAX);
});

Deno.test("every non-NaN FP8 code decodes and re-encodes to itself", () => {
  for (const dtype of FORMATS) {
    for (let c = 0; c < 256; c++) {
      const v = decodeFp8(dtype, c);
      if (Number.isNaN(v)) continue;
      assert.equal(encodeFp8(dtype, v), c, `${dtype} code 0x${c.toString(16)} (${v})`);
    }
  }
});

Deno.test("encodeFp8 picks the nearest value, ties to even, at every midpoint and random point", () => {
  const rng = prng(8);
  for (const dtype of FORMATS) {
    const values = [...Array(256).keys()].map((c) => decodeFp8(dtype, c))
      .filter(Number.isFinite).sort((a, b) => a - b);
    const xs: number[] = [];
    for (let i = 0; i + 1 < values.length; i++) {
      const mid = (values[i]! + values[i + 1]!) / 2; // exact in f64
      xs.push(mid, mid * (1 + 2 ** -40), mid * (1 - 2 ** -40), values[i]!);
    }
    const max = fp8Max(dtype);
    for (let i = 0; i < 20000; i++) {
      const mag = 2 ** (rng.uniform() * 44 - 24) * (1 + rng.uniform());
      xs.push(rng.uniform() < 0.5 ? -mag : mag);
    }
    xs.push(max * 1.03, max * 1.0625, max * 1.2, -max * 1.2, 1e30, -1e300, 5e-324, -5e-324, 0, -0);
    for (const x of xs) {
      const want = refEncode(dtype, x);
      const got = encodeFp8(dtype, x);
      assert.equal(
        got,
        want,
        `${dtype} encode(${x}) = 0x${got.toString(16)} (${decodeFp8(dtype, got)}), want 0x${
          want.toString(16)
        } (${decodeFp8(dtype, want)})`,
      );
    }
  }
});

Deno.test("encodeFp8 ties go to the even code: E4M3 1.0625 → 1, 1.1875 → 1.25; E5M2 1.125 → 1", () => {
  assert.equal(decodeFp8("f8e4m3", encodeFp8("f8e4m3", 1.0625)), 1);
  assert.equal(decodeFp8("f8e4m3", encodeFp8("f8e4m3", 1.1875)), 1.25);
  assert.equal(decodeFp8("f8e5m2", encodeFp8("f8e5m2", 1.125)), 1);
  assert.equal(decodeFp8("f8e5m2", encodeFp8("f8e5m2", 1.375)), 1.5);
  assert.equal(decodeFp8("f8e4m3", encodeFp8("f8e4m3", 2 ** -10)), 0); // half the smallest subnormal
  assert.equal(decodeFp8("f8e4m3", encodeFp8("f8e4m3", 3 * 2 ** -10)), 2 ** -8);
});

Deno.test("encodeFp8 saturates finite overflow, maps NaN to NaN, keeps E5M2 infinities and saturates E4M3 ones", () => {
  assert.equal(encodeFp8("f8e4m3", 449), 0x7e);
  assert.equal(encodeFp8("f8e4m3", 464), 0x7e); // the midpoint to the would-be 480
  assert.equal(encodeFp8("f8e4m3", 1e9), 0x7e);
  assert.equal(encodeFp8("f8e4m3", -1e9), 0xfe);
  assert.equal(encodeFp8("f8e4m3", Infinity), 0x7e);
  assert.equal(encodeFp8("f8e4m3", -Infinity), 0xfe);
  assert.equal(encodeFp8("f8e5m2", 61440), 0x7b); // the midpoint to 65536
  assert.equal(encodeFp8("f8e5m2", 1e9), 0x7b);
  assert.equal(encodeFp8("f8e5m2", -1e9), 0xfb);
  assert.equal(encodeFp8("f8e5m2", Infinity), 0x7c);
  assert.equal(encodeFp8("f8e5m2", -Infinity), 0xfc);
  assert.ok(Number.isNaN(decodeFp8("f8e4m3", encodeFp8("f8e4m3", NaN))));
  assert.ok(Number.isNaN(decodeFp8("f8e5m2", encodeFp8("f8e5m2", NaN))));
  assert.equal(encodeFp8("f8e4m3", -1e-30), 0x80); // rounds to −0
});

Deno.test("encodeFp8Array matches encodeFp8 element-wise and checks 'out' lengths", () => {
  const xs = [0.1, -3, 500, NaN, 1e-9];
  const codes = encodeFp8Array("f8e5m2", xs);
  assert.deepEqual([...codes], xs.map((x) => encodeFp8("f8e5m2", x)));
  assert.throws(() => encodeFp8Array("f8e4m3", xs, new Uint8Array(2)), RangeError);
  assert.throws(() => decodeFp8Array("f8e4m3", codes, new Float32Array(1)), RangeError);
  assert.throws(() => encodeFp8("f8" as Fp8DType, 1), TypeError);
});
