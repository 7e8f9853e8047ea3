import assert from "node:assert/strict";
import { galoisField, primePower } from "../../core/galois.ts";

Deno.test("primePower() splits prime powers and rejects other integers (brute force)", () => {
  for (let q = 2; q < 2000; q++) {
    let p = 2;
    while (q % p !== 0) p++;
    let r = q, k = 0;
    while (r % p === 0) {
      r /= p;
      k++;
    }
    assert.deepEqual(primePower(q), r === 1 ? { p, k } : null, `q = ${q}`);
  }
  assert.equal(primePower(1), null);
  assert.equal(primePower(0), null);
});

Deno.test("galoisField() satisfies the field axioms by exhaustive check for small orders", () => {
  for (const q of [2, 3, 4, 5, 7, 8, 9, 16, 25, 27, 49]) {
    const f = galoisField(q);
    assert.equal(f.p ** f.k, q);
    for (let a = 0; a < q; a++) {
      assert.equal(f.add(a, 0), a);
      assert.equal(f.mul(a, 1), a);
      assert.equal(f.add(a, f.neg(a)), 0);
      if (a !== 0) assert.equal(f.mul(a, f.inv(a)), 1);
      for (let b = 0; b < q; b++) {
        const ab = f.add(a, b), mab = f.mul(a, b);
        assert.ok(ab >= 0 && ab < q && mab >= 0 && mab < q);
        assert.equal(ab, f.add(b, a));
        assert.equal(mab, f.mul(b, a));
        assert.equal(f.sub(ab, b), a);
        if (a !== 0 && b !== 0) assert.notEqual(mab, 0, "no zero divisors");
        for (let c = 0; c < q; c += Math.max(1, Math.floor(q / 7))) {
          assert.equal(f.mul(a, f.add(b, c)), f.add(mab, f.mul(a, c)), "distributive");
          assert.equal(f.mul(mab, c), f.mul(a, f.mul(b, c)), "associative");
          assert.equal(f.add(ab, c), f.add(a, f.add(b, c)));
        }
      }
    }
  }
});

Deno.test("galoisField() multiplication agrees with polynomial products reduced by its modulus", () => {
  for (const q of [8, 27, 125, 343]) {
    const f = galoisField(q);
    const { p, k } = f;
    const digits = (a: number) => Array.from({ length: k }, (_, i) => Math.floor(a / p ** i) % p);
    const mulPoly = (a: number, b: number): number => {
      const prod = new Array(2 * k - 1).fill(0);
      const da = digits(a), db = digits(b);
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) prod[i + j] += da[i]! * db[j]!;
      for (let d = 2 * k - 2; d >= k; d--) {
        const c = prod[d] % p;
        for (let i = 0; i <= k; i++) prod[d - k + i] -= c * f.modulus[i]!;
      }
      let r = 0;
      for (let i = k - 1; i >= 0; i--) r = r * p + (((prod[i] % p) + p) % p);
      return r;
    };
    for (let a = 0; a < q; a += 3) {
      for (let b = 0; b < q; b += 5) assert.equal(f.mul(a, b), mulPoly(a, b));
    }
    // The cubic modulus has no roots in GF(p), hence no factor: it is irreducible.
    assert.equal(f.modulus[k], 1);
    for (let x = 0; x < p; x++) {
      let v = 0;
      for (let i = k; i >= 0; i--) v = (v * x + f.modulus[i]!) % p;
      assert.notEqual(v, 0, `root ${x} of the modulus of GF(${q})`);
    }
  }
});

Deno.test("the quadratic character is multiplicative with (q − 1)/2 squares and χ(−1) = (−1)^((q−1)/2)", () => {
  for (const q of [3, 5, 7, 9, 11, 13, 25, 27, 49, 81, 121, 343]) {
    const f = galoisField(q);
    const squares = new Set<number>();
    for (let a = 1; a < q; a++) squares.add(f.mul(a, a));
    assert.equal(squares.size, (q - 1) / 2);
    for (let a = 0; a < q; a++) {
      assert.equal(f.chi(a), a === 0 ? 0 : squares.has(a) ? 1 : -1);
      for (let b = 0; b < q; b += 7) assert.equal(f.chi(f.mul(a, b)), f.chi(a) * f.chi(b) + 0);
    }
    assert.equal(f.chi(f.neg(1)), ((q - 1) / 2) % 2 === 0 ? 1 : -1);
  }
});

Deno.test("galoisField() rejects orders that are not prime powers", () => {
  for (const q of [1, 6, 12, 100, 2.5]) assert.throws(() => galoisField(q), RangeError);
});
