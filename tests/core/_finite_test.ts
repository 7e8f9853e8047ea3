import assert from "node:assert/strict";
import { firstNonFinite, firstNonFinite16 } from "../../core/_finite.ts";

/** Brute force: the first index where Number.isFinite fails. */
function oracle(a: Float32Array | Float64Array): number {
  return a.findIndex((v) => !Number.isFinite(v));
}

Deno.test("firstNonFinite() finds the first NaN or infinity of float32 and float64 arrays, also in views", () => {
  const specials = [NaN, Infinity, -Infinity, 3.4e38, -3.4e38, 1e-45, 0, -0, 1.7e308, 5e-324, 1e39];
  for (const T of [Float32Array, Float64Array]) {
    for (const len of [1, 7, 16384, 16385, 40001]) {
      for (const v of specials) {
        for (const pos of [0, len >> 1, len - 1]) {
          const a = new T(len).fill(1.5);
          a[pos] = v;
          if (len > 2) a[len - 1] = pos === len - 1 ? v : NaN; // a second bad value later
          assert.equal(firstNonFinite(a), oracle(a), `${T.name} ${len} ${v} at ${pos}`);
          const view = a.subarray(1);
          assert.equal(firstNonFinite(view), oracle(view), `view ${T.name} ${len} ${v} at ${pos}`);
        }
      }
    }
  }
  assert.equal(firstNonFinite(new Float32Array(0)), -1);
  assert.equal(
    firstNonFinite(Float64Array.from({ length: 50000 }, (_, i) => Math.sin(i) * 1e300)),
    -1,
  );
});

Deno.test("firstNonFinite() recognizes every NaN payload and both infinities by their bits", () => {
  const bits32 = new Uint32Array([0x7f7fffff, 0xff7fffff, 0x7fc00001, 0xff800000, 0x7f800000]);
  const f32 = new Float32Array(bits32.buffer);
  assert.equal(firstNonFinite(f32), 2);
  assert.equal(firstNonFinite(f32.subarray(3)), 0);
  const bits64 = new BigUint64Array([
    0x7fefffffffffffffn, // largest finite
    0x0000000000000001n, // smallest subnormal
    0x7ff0000000000001n, // NaN with a low payload
    0xfff0000000000000n, // −Infinity
  ]);
  const f64 = new Float64Array(bits64.buffer);
  assert.equal(firstNonFinite(f64), 2);
  assert.equal(firstNonFinite(f64.subarray(3)), 0);
  assert.equal(firstNonFinite(f64.subarray(0, 2)), -1);
});

Deno.test("firstNonFinite16() finds the first infinity or NaN among float16 and bfloat16 bits", () => {
  // float16: 0x7bff largest finite, 0x7c00 +Inf, 0xfc00 −Inf, 0x7e01 NaN; 0x0001 subnormal.
  // bfloat16: 0x7f7f largest finite, 0x7f80 +Inf, 0xff80 −Inf, 0x7fc1 NaN.
  const cases = [
    {
      mask: 0x7c00,
      finite: [0x7bff, 0xfbff, 0x0001, 0x8000, 0x3c00],
      bad: [0x7c00, 0xfc00, 0x7e01],
    },
    {
      mask: 0x7f80,
      finite: [0x7f7f, 0xff7f, 0x0001, 0x8000, 0x3f80],
      bad: [0x7f80, 0xff80, 0x7fc1],
    },
  ] as const;
  for (const { mask, finite, bad } of cases) {
    for (const len of [1, 9, 16384, 16385, 40001]) {
      const bits = Uint16Array.from({ length: len }, (_, i) => finite[i % finite.length]!);
      assert.equal(firstNonFinite16(bits, mask), -1);
      for (const b of bad) {
        for (const pos of [0, len >> 1, len - 1]) {
          const a = bits.slice();
          a[pos] = b;
          assert.equal(firstNonFinite16(a, mask), pos, `${mask} ${b} ${len} ${pos}`);
          assert.equal(firstNonFinite16(a.subarray(1), mask), pos >= 1 ? pos - 1 : -1);
        }
      }
    }
  }
});
