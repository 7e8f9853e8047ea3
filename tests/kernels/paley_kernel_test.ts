import assert from "node:assert/strict";
import { paleyGpu, paleyReference, type PaleySpec, paleyWgsl } from "../../kernels/paley_kernel.ts";
import { fwht } from "../../core/fwht.ts";
import { hadamardConstruction } from "../../core/hadamard.ts";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

function randomRows(length: number, seed: number) {
  const rng = prng(seed);
  return tensor("f32", [length], Float32Array.from({ length }, () => rng.normal()));
}

Deno.test("GPU Paley I blocks equal the CPU reference for prime and extension fields, H and Hᵀ", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // q = 3, 7, 11 (k = 1), 27 = 3^3, 343 = 7^3; 5 blocks leave a partial workgroup.
  for (const q of [3, 7, 11, 27, 343]) {
    const x = randomRows(5 * (q + 1), q);
    for (const transpose of [false, true]) {
      const variants: [boolean, boolean][] = q === 27 || q === 343
        ? [[false, false], [true, false], [true, true]]
        : [[false, false], [true, false]];
      for (const [vec4, plane] of variants) {
        const spec: PaleySpec = { q, transpose, chunks: 4, threads: 64, pow2: 1, vec4, plane };
        const { y } = await paleyGpu(gpu, x, { q, transpose, scale: 0.5, spec });
        const err = relError(y.data, paleyReference(x, { q, transpose, scale: 0.5 }).data);
        assert.ok(err < 1e-5, `q = ${q}, ${JSON.stringify(spec)}: error ${err}`);
      }
    }
  }
});

Deno.test("GPU Paley I blocks with the fused Sylvester part equal core/fwht of H_{2^k} ⊗ Paley I", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const [q, pow2, field] of [[27, 4, "3^3"], [343, 2, "7^3"], [11, 4, "11"]] as const) {
    const n = pow2 * (q + 1);
    assert.equal(
      hadamardConstruction(n)?.description,
      `Sylvester(${pow2}) ⊗ Paley I(q = ${field})`,
    );
    const x = randomRows(3 * n, n);
    const plane = q !== 11;
    for (const [transpose, vec4] of [[false, false], [true, false], [false, true]] as const) {
      const spec: PaleySpec = { q, transpose, chunks: 2 * pow2, threads: 96, pow2, vec4, plane };
      const scale = 1 / Math.sqrt(n);
      const { y } = await paleyGpu(gpu, x, { q, transpose, pow2, scale, spec });
      const ref = fwht(tensor("f32", [3, n], x.data), { normalize: true, transpose });
      const err = relError(y.data, ref.data);
      assert.ok(err < 1e-5, `q = ${q}, pow2 = ${pow2}, ${JSON.stringify(spec)}: error ${err}`);
    }
  }
});

Deno.test("the Paley kernel generator rejects a group size that does not divide the blocks per workgroup", () => {
  assert.throws(
    () =>
      paleyWgsl({
        q: 27,
        transpose: false,
        chunks: 6,
        threads: 64,
        pow2: 4,
        vec4: false,
        plane: false,
      }),
    RangeError,
  );
  assert.throws(
    () =>
      paleyWgsl({
        q: 11,
        transpose: false,
        chunks: 4,
        threads: 64,
        pow2: 1,
        vec4: true,
        plane: true,
      }),
    RangeError,
  );
});
