import assert from "node:assert/strict";
import { packBits, packBitsInto, packedWords, unpackBits } from "../../core/bitpack.ts";
import { prng } from "../../core/prng.ts";

Deno.test("packBits() and unpackBits() round-trip every width from 1 to 16 bits", () => {
  const g = prng(11);
  for (let bits = 1; bits <= 16; bits++) {
    for (const n of [0, 1, 7, 31, 32, 33, 100]) {
      const codes = Array.from({ length: n }, () => g.int(1 << bits));
      const words = packBits(codes, bits);
      assert.equal(words.length, packedWords(n, bits));
      assert.deepEqual(Array.from(unpackBits(words, bits, n)), codes, `bits ${bits}, n ${n}`);
    }
  }
});

Deno.test("packBits() puts 4-bit code k at bits 4·(k mod 8) of word ⌊k/8⌋", () => {
  const codes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const words = packBits(codes, 4);
  let expected0 = 0;
  for (let j = 0; j < 8; j++) expected0 += codes[j]! * 2 ** (4 * j);
  assert.equal(words[0], expected0);
  assert.equal(words[1], 9 + 10 * 16);
});

Deno.test("packBits() at 3 bits fills 3 words per 32 codes, straddling codes 10 and 21", () => {
  // Independent transcription of the 3-bit GPTQ layout: 10 codes, 2 low bits of the
  // 11th, 1 high bit of it, 10 codes, 1 low bit of the 22nd, its 2 high bits, 10 codes.
  const g = prng(5);
  const c = Array.from({ length: 32 }, () => g.int(8));
  const w = [0, 0, 0];
  for (let j = 0; j < 10; j++) w[0]! += c[j]! * 2 ** (3 * j);
  w[0]! += (c[10]! & 3) * 2 ** 30;
  w[1]! += c[10]! >> 2;
  for (let j = 0; j < 10; j++) w[1]! += c[11 + j]! * 2 ** (3 * j + 1);
  w[1]! += (c[21]! & 1) * 2 ** 31;
  w[2]! += c[21]! >> 1;
  for (let j = 0; j < 10; j++) w[2]! += c[22 + j]! * 2 ** (3 * j + 2);
  assert.deepEqual(Array.from(packBits(c, 3)), w);
});

Deno.test("packBits() refuses codes out of range and bad widths", () => {
  assert.throws(() => packBits([16], 4), RangeError);
  assert.throws(() => packBits([1.5], 4), RangeError);
  assert.throws(() => packBits([1], 0), /'bits' must be an integer in \[1, 16\]/);
  assert.throws(() => unpackBits(new Uint32Array(1), 4, 9), /need 2/);
});

Deno.test("packBitsInto() overwrites exactly the stream's words at the offset, as packBits() packs them", () => {
  const g = prng(17);
  for (const bits of [2, 3, 4, 8]) {
    const codes = Array.from({ length: 32 }, () => g.int(1 << bits));
    const out = new Uint32Array(bits + 4).fill(0xffffffff);
    assert.equal(packBitsInto(codes, bits, out, 2), out);
    assert.deepEqual(Array.from(out.subarray(2, 2 + bits)), Array.from(packBits(codes, bits)));
    for (const i of [0, 1, bits + 2, bits + 3]) {
      assert.equal(out[i], 0xffffffff, `bits ${bits}, word ${i}`);
    }
  }
  assert.throws(() => packBitsInto([1, 2, 3], 4, new Uint32Array(2), 2), /words \[2, 3\) of 2/);
  assert.throws(() => packBitsInto([16], 4, new Uint32Array(1), 0), /Cannot pack code 16/);
});
