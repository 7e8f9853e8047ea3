import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import { dequantizeGrid } from "../../core/uniform_grid.ts";

Deno.test("dequantizeGrid gives fround(s·(q − z)) of each weight's group, for contiguous and scattered groups", () => {
  const rng = prng(11);
  const rows = 5, cols = 37, groups = 4;
  const codes = Uint8Array.from({ length: rows * cols }, () => rng.int(16));
  const scales = Float32Array.from({ length: rows * groups }, () => rng.normal());
  const zeros = Float32Array.from({ length: rows * groups }, () => rng.int(16));
  const contiguous = Int32Array.from({ length: cols }, (_, c) => Math.floor((c * groups) / cols));
  const scattered = Int32Array.from({ length: cols }, () => rng.int(groups));
  for (const gIdx of [contiguous, scattered]) {
    const out = dequantizeGrid(codes, scales, zeros, gIdx, rows, cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const k = r * groups + gIdx[c]!;
        assert.equal(
          out[r * cols + c],
          Math.fround(scales[k]! * (codes[r * cols + c]! - zeros[k]!)),
        );
      }
    }
  }
  assert.equal(dequantizeGrid([], [], [], [], 0, 0).length, 0);
});
