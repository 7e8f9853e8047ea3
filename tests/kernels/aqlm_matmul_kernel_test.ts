import assert from "node:assert/strict";
import { aqlmMatmul, aqlmMatmulReference } from "../../kernels/aqlm_matmul_kernel.ts";
import { type AqlmWeight, dequantizeAqlm } from "../../quantizers/aqlm.ts";
import { packBits } from "../../core/bitpack.ts";
import { prng } from "../../core/prng.ts";
import { randomX, relError, testGpu } from "./_gpu.ts";

function randomAqlm(
  rows: number,
  cols: number,
  groupSize: number,
  numCodebooks: number,
  codebookBits: number,
  seed: number,
): AqlmWeight {
  const g = prng(seed);
  const groups = cols / groupSize, V = 2 ** codebookBits;
  const codes = Array.from({ length: rows * groups * numCodebooks }, () => g.int(V));
  return {
    kind: "aqlm",
    shape: [rows, cols],
    groupSize,
    numCodebooks,
    codebookBits,
    codes: packBits(codes, codebookBits),
    codebooks: Float32Array.from({ length: numCodebooks * V * groupSize }, () => g.normal()),
    scales: Float32Array.from({ length: rows }, () => 0.1 + g.uniform()),
    bitsPerWeight: { codes: (numCodebooks * codebookBits) / groupSize, total: 0 },
    objective: [],
    stats: { seconds: 0 },
  };
}

const CASES: [number, number, number, number, number][] = [
  // rows, cols, groupSize, codebooks, bits
  [40, 64, 8, 1, 8],
  [33, 96, 8, 2, 6],
  [9, 40, 4, 2, 3], // 3-bit codes straddle words
  [5, 32, 8, 1, 12],
];

Deno.test("the AQLM lookup-table reference equals x times the dequantized weight", () => {
  let seed = 1;
  for (const [rows, cols, gs, M, B] of CASES) {
    const w = randomAqlm(rows, cols, gs, M, B, seed++);
    const x = randomX(2, cols, seed++);
    const dense = dequantizeAqlm(w);
    const expected = new Float64Array(2 * rows);
    for (let b = 0; b < 2; b++) {
      for (let n = 0; n < rows; n++) {
        let acc = 0;
        for (let k = 0; k < cols; k++) acc += dense[n * cols + k]! * x.data[b * cols + k]!;
        expected[b * rows + n] = acc;
      }
    }
    const err = relError(aqlmMatmulReference(x, w).data, expected);
    assert(err < 1e-6, `${JSON.stringify({ gs, M, B })}: relative error ${err}`);
  }
});

Deno.test("the AQLM lookup-table kernel matches its CPU reference", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  let seed = 10;
  for (const [rows, cols, gs, M, B] of CASES) {
    const w = randomAqlm(rows, cols, gs, M, B, seed++);
    const x = randomX(1, cols, seed++);
    const y = await aqlmMatmul(x, w, { backend: "webgpu" });
    const err = relError(y.data, aqlmMatmulReference(x, w).data);
    assert(err < 1e-5, `${JSON.stringify({ gs, M, B })}: relative error ${err}`);
  }
});

Deno.test("aqlmMatmul rejects mismatched inputs", async () => {
  const w = randomAqlm(4, 16, 8, 1, 4, 3);
  await assert.rejects(() => aqlmMatmul(randomX(1, 15, 1), w, { backend: "cpu" }), RangeError);
  await assert.rejects(
    () => aqlmMatmul(randomX(1, 16, 1), { ...w, scales: new Float32Array(3) }, { backend: "cpu" }),
    RangeError,
  );
  await assert.rejects(
    // @ts-expect-error: not an AQLM weight
    () => aqlmMatmul(randomX(1, 16, 1), { ...w, kind: "uniform" }, { backend: "cpu" }),
    TypeError,
  );
});
