import assert from "node:assert/strict";
import {
  gemmTiledKey,
  gemmTiledLayout,
  type GemmTiledSpec,
  gemmTiledSpec,
  gemmTiledWgsl,
} from "../../kernels/gemm_tiled_wgsl.ts";

Deno.test("gemmTiledWgsl refuses invalid specializations, naming the field", () => {
  const bad: [Partial<GemmTiledSpec>, string][] = [
    [{ tm: 6 }, "tm"],
    [{ tn: 32 }, "tn"],
    [{ bk: 12 }, "bk"],
    [{ bm: 96 }, "bm"],
    [{ bm: 512, bn: 512 }, "bm"], // 4096 threads
    [{ pad: 3 }, "pad"],
    [{ warpCols: 16 }, "warpCols"],
    [{ bn: 32, tn: 8, warpCols: 8 }, "warpCols"], // 4 threads along n
  ];
  for (const [fields, field] of bad) {
    assert.throws(
      () => gemmTiledWgsl(gemmTiledSpec(fields)),
      (e: unknown) => e instanceof RangeError && e.message.includes(`'${field}'`),
      JSON.stringify(fields),
    );
  }
  const lay = gemmTiledLayout(gemmTiledSpec({ transB: true }));
  // 128×128 of 8×8: 256 threads, 2 vec4 loads of each operand per slice of 16, 33 + 33 vec4s per
  // row (both operands transposed into workgroup memory, padded), two buffers: 33 792 bytes.
  assert.deepEqual(
    [lay.threads, lay.loadsA, lay.loadsB, lay.rowA, lay.rowB, lay.workgroupBytes],
    [256, 2, 2, 33, 33, 33792],
  );
});

Deno.test("gemmTiledKey names every field, whatever order the spec was written in", () => {
  const a = gemmTiledSpec({ transB: true, bk: 8 });
  const b = { ...gemmTiledSpec(), bk: 8, transB: true };
  assert.equal(gemmTiledKey(a), gemmTiledKey(b));
  assert.notEqual(gemmTiledKey(a), gemmTiledKey({ ...a, warpCols: 8 }));
  for (const field of Object.keys(a)) assert(gemmTiledKey(a).includes(`${field}=`), field);
});

Deno.test("gemmTiledWgsl indexes workgroup memory with a constant k in the unrolled loop", () => {
  const code = gemmTiledWgsl(gemmTiledSpec({ transB: true }));
  // 16 slices × (1 load of A + 1 of B per 4 rows): every read is S[buf][constant][per-thread].
  assert.equal(code.match(/= As\[buf\]\[\d+\]\[ia\d\];/g)?.length, 16 * 2);
  assert.equal(code.match(/= Bs\[buf\]\[\d+\]\[ib\d\];/g)?.length, 16 * 2);
  assert.equal(code.match(/fma\(/g)?.length, 16 * 8 * 2);
});
