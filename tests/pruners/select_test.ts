import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import { kthSmallestInPlace } from "../../core/_select.ts";

Deno.test("kthSmallestInPlace() returns the value a full sort puts at rank k, ties and sorted inputs included", () => {
  const rng = prng(42);
  for (const len of [1, 2, 3, 7, 64, 1000]) {
    for (const kind of ["uniform", "ties", "sorted", "reversed", "constant"]) {
      const v = Float64Array.from(
        { length: len },
        (_, i) =>
          kind === "uniform"
            ? rng.normal()
            : kind === "ties"
            ? rng.int(5)
            : kind === "sorted"
            ? i
            : kind === "reversed"
            ? len - i
            : 3,
      );
      const sorted = v.slice().sort();
      for (const k of new Set([0, len - 1, len >> 1, Math.floor(len / 3), rng.int(len)])) {
        assert.equal(kthSmallestInPlace(v.slice(), k), sorted[k], `${kind} len ${len} k ${k}`);
      }
    }
  }
});
