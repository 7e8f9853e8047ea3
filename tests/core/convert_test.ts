import assert from "node:assert/strict";
import {
  asFloat32,
  asFloat64,
  bf16BitsToF32,
  convert,
  elementAsNumber,
  f32ToBf16Bits,
} from "../../core/convert.ts";
import { decodeFp8, encodeFp8 } from "../../core/fp8.ts";
import { prng } from "../../core/prng.ts";
import { type DType, DTYPES, type Tensor, tensor } from "../../core/tensor.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsToF32 = (u: number): number => {
  u32[0] = u;
  return f32[0]!;
};

/** Value of bf16 bits for distance purposes: the infinity pattern counts as 2^128. */
function bf16Value(b: number): number {
  const mag = b & 0x7fff;
  const v = mag === 0x7f80 ? 2 ** 128 : bitsToF32(mag << 16);
  return b & 0x8000 ? -v : v;
}

/**
 * Brute-force bf16 rounding of a finite double: binary search for the largest
 * bf16 magnitude ≤ |x|, then compare exact distances (Sterbenz: neighbours are
 * within a factor 2 of x, so the subtractions are exact), ties to the even pattern.
 */
function refBf16(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  let lo = 0, hi = 0x7f80; // invariant: value(lo) ≤ a
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (bf16Value(mid) <= a) lo = mid;
    else hi = mid;
  }
  if (bf16Value(hi) <= a) lo = hi;
  if (lo === 0x7f80) return sign | 0x7f80;
  const up = lo + 1;
  const dLo = a - bf16Value(lo), dUp = bf16Value(up) - a;
  const pick = dLo < dUp ? lo : dUp < dLo ? up : (lo & 1 ? up : lo);
  return sign | pick;
}

Deno.test("f32ToBf16Bits matches a brute-force round-to-nearest-even on random f32 bit patterns and edge cases", () => {
  const rng = prng(16);
  const patterns: number[] = [];
  for (let i = 0; i < 30000; i++) patterns.push(rng.nextU32());
  for (let hiBits = 0; hiBits < 0x10000; hiBits += 97) {
    for (const low of [0, 1, 0x7fff, 0x8000, 0x8001, 0xffff]) {
      patterns.push((hiBits << 16 | low) >>> 0);
    }
  }
  patterns.push(0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0x7f7f8001, 0x00000001, 0x00008000, 0x00018000);
  for (const u of patterns) {
    const x = bitsToF32(u);
    const got = f32ToBf16Bits(x);
    if (Number.isNaN(x)) {
      assert.ok(Number.isNaN(bf16BitsToF32(got)), `NaN pattern 0x${u.toString(16)}`);
      continue;
    }
    assert.equal(got, refBf16(x), `f32 0x${u.toString(16)} (${x})`);
  }
});

Deno.test("f32ToBf16Bits rounds float64 inputs once (no double rounding through f32)", () => {
  // 1 + 2^-8 is the tie between 1 and 1 + 2^-7; a hair above must round up,
  // although rounding to f32 first would land on the tie and go to even (1).
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -30), 0x3f81);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 - 2 ** -30), 0x3f80);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
  const rng = prng(17);
  for (let i = 0; i < 20000; i++) {
    const x = (rng.uniform() - 0.5) * 2 ** Math.floor(rng.uniform() * 300 - 150);
    assert.equal(f32ToBf16Bits(x), refBf16(x), `x = ${x}`);
  }
  // just above the largest bf16 plus half an ulp overflows to infinity; just below stays finite
  const maxBf16 = bitsToF32(0x7f7f0000);
  assert.equal(f32ToBf16Bits(maxBf16 + 2 ** 119 * 0.999), 0x7f7f);
  assert.equal(f32ToBf16Bits(maxBf16 + 2 ** 119), 0x7f80);
  assert.equal(f32ToBf16Bits(1e300), 0x7f80);
  assert.equal(f32ToBf16Bits(-1e300), 0xff80);
  assert.equal(f32ToBf16Bits(1e-300), 0);
  assert.equal(f32ToBf16Bits(-1e-300), 0x8000);
});

Deno.test("bf16 ↔ f32 keeps infinities, NaN (sign and payload top bits) and subnormals exactly", () => {
  // every bf16 pattern widens exactly and comes back unchanged (NaNs stay NaN)
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const wide = convert(tensor("bf16", [65536], all), "f32");
  const wideBits = new Uint32Array(wide.data.buffer);
  for (let b = 0; b < 65536; b++) assert.equal(wideBits[b], b << 16 >>> 0);
  const back = convert(wide, "bf16").data;
  for (let b = 0; b < 65536; b++) {
    const isNaN = (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;
    assert.equal(back[b], isNaN ? b | 0x40 : b, `pattern 0x${b.toString(16)}`);
  }
  // NaN payloads from f32 bits: quiet, sign kept
  const nanBits = new Uint32Array([0x7f800001, 0xffc12345, 0x7fa00000]);
  const nb = convert(tensor("f32", [3], new Float32Array(nanBits.buffer)), "bf16").data;
  assert.deepEqual([...nb], [0x7fc0, 0xffc1, 0x7fe0]);
  assert.equal(bf16BitsToF32(0x7f80), Infinity);
  assert.equal(bf16BitsToF32(0xff80), -Infinity);
  assert.equal(bf16BitsToF32(0x0001), 2 ** -133);
});

Deno.test("convert to f16 rounds once to nearest even through Float16Array", () => {
  const t = tensor(
    "f64",
    [5],
    new Float64Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 65519, 2 ** -25]),
  );
  assert.deepEqual([...convert(t, "f16").data], [1, 1 + 2 ** -9, Infinity, 65504, 0]);
  // f64 → f16 directly, not through f32: 1 + 2^-11 + 2^-40 is above the tie
  const above = convert(tensor("f64", [1], new Float64Array([1 + 2 ** -11 + 2 ** -40])), "f16");
  assert.equal(above.data[0], 1 + 2 ** -10);
});

// Small integers every dtype holds exactly (bool: 0 and 1; FP8 E5M2 holds 0..8 exactly).
const VALUES: Record<DType, number[]> = {
  f64: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  f32: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  f16: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  bf16: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  f8e4m3: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  f8e5m2: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  i8: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  i16: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  i32: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  i64: [0, 1, 2, 3, 5, 7, 8, -1, -6],
  u8: [0, 1, 2, 3, 5, 7, 8],
  u16: [0, 1, 2, 3, 5, 7, 8],
  u32: [0, 1, 2, 3, 5, 7, 8],
  bool: [0, 1],
};

function make(dtype: DType, values: number[]): Tensor {
  const t = tensor(dtype, [values.length]);
  const d = t.data;
  values.forEach((v, i) => {
    if (dtype === "i64") (d as BigInt64Array)[i] = BigInt(v);
    else if (dtype === "bf16") (d as Uint16Array)[i] = f32ToBf16Bits(v);
    else if (dtype === "f8e4m3" || dtype === "f8e5m2") (d as Uint8Array)[i] = encodeFp8(dtype, v);
    else (d as Uint8Array)[i] = v;
  });
  return t;
}

Deno.test("convert between every pair of dtypes keeps values that both can hold", () => {
  for (const from of DTYPES) {
    for (const to of DTYPES) {
      const common = VALUES[from].filter((v) => VALUES[to].includes(v));
      const src = make(from, common);
      const out = convert(src, to);
      assert.equal(out.dtype, to);
      assert.deepEqual(out.shape, src.shape);
      const got = common.map((_, i) => elementAsNumber(out, i));
      assert.deepEqual(got, common, `${from} → ${to}`);
      // to bool: nonzero → 1, from every source
      const truth = convert(make(from, VALUES[from]), "bool");
      assert.deepEqual(
        [...truth.data],
        VALUES[from].map((v) => (v !== 0 ? 1 : 0)),
        `${from} → bool`,
      );
    }
  }
});

Deno.test("convert from floats to integers rounds half away from zero, wraps, and maps NaN and ±∞ to 0", () => {
  const t = tensor(
    "f64",
    [8],
    new Float64Array([2.5, -2.5, 0.49999999999999994, -0.5, 300, -129, NaN, Infinity]),
  );
  assert.deepEqual([...convert(t, "i32").data], [3, -3, 0, -1, 300, -129, 0, 0]);
  assert.deepEqual([...convert(t, "i8").data], [3, -3, 0, -1, 44, 127, 0, 0]);
  assert.deepEqual([...convert(t, "u8").data], [3, 253, 0, 255, 44, 127, 0, 0]);
  assert.deepEqual([...convert(t, "i64").data], [3n, -3n, 0n, -1n, 300n, -129n, 0n, 0n]);
  assert.deepEqual([...convert(t, "bool").data], [1, 1, 1, 1, 1, 1, 1, 1]);
});

Deno.test("convert from i64 wraps exactly to smaller integers and rounds once to narrow floats", () => {
  const big = 2n ** 60n + 2n ** 36n + 1n; // just above an f32 tie; f64 alone would land on the tie
  const t = tensor(
    "i64",
    [4],
    new BigInt64Array([2n ** 40n + 5n, -(2n ** 33n) - 1n, big, 2n ** 63n - 1n]),
  );
  assert.deepEqual([...convert(t, "i32").data], [5, -1, 1, -1]);
  assert.deepEqual([...convert(t, "u16").data], [5, 65535, 1, 65535]);
  const asF32 = convert(t, "f32").data;
  assert.equal(asF32[2], 2 ** 60 + 2 ** 37);
  assert.equal(convert(t, "f64").data[2], Number(big));
  assert.equal(bf16BitsToF32(convert(t, "bf16").data[2]!), 2 ** 60);
});

Deno.test("convert to FP8 saturates and from FP8 decodes exactly", () => {
  const t = tensor("f32", [5], new Float32Array([0.3, 1000, -1e6, NaN, Infinity]));
  const e4 = convert(t, "f8e4m3");
  assert.deepEqual(
    [...e4.data],
    [0.3, 1000, -1e6, NaN, Infinity].map((x) => encodeFp8("f8e4m3", x)),
  );
  const back = convert(e4, "f64").data;
  assert.deepEqual([...back].slice(0, 3), [0.3125, 448, -448]);
  assert.ok(Number.isNaN(back[3]!));
  assert.equal(back[4], 448);
  const e5 = convert(convert(t, "bf16"), "f8e5m2");
  assert.equal(decodeFp8("f8e5m2", e5.data[4]!), Infinity);
  assert.equal(decodeFp8("f8e5m2", e5.data[1]!), 1024);
});

Deno.test("convert copies even to the same dtype; asFloat64/asFloat32 alias only matching storage", () => {
  const t = tensor("f32", [2], new Float32Array([1, 2]));
  const c = convert(t, "f32");
  assert.notEqual(c.data, t.data);
  assert.deepEqual([...c.data], [1, 2]);
  assert.equal(asFloat32(t), t.data);
  assert.deepEqual([...asFloat64(t)], [1, 2]);
  const d = tensor("f64", [1], new Float64Array([3]));
  assert.equal(asFloat64(d), d.data);
  assert.throws(() => elementAsNumber(t, 2), RangeError);
});
