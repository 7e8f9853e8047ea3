import assert from "node:assert/strict";
import { paleyGpu, paleyReference } from "../../kernels/paley_kernel.ts";
import { type PaleySpec, paleyWgsl } from "../../kernels/paley_wgsl.ts";
import { fwht } from "../../core/fwht.ts";
import { hadamardConstruction } from "../../core/hadamard.ts";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

function randomRows(length: number, seed: number) {
  const rng = prng(seed);
  return tensor("f32", [length], Float32Array.from({ length }, () => rng.normal()));
}

const base = { chunks: 4, threads: 64, pow2: 1, vec4: true, plane: false, persistent: 0 };

Deno.test("GPU Paley I blocks equal the CPU reference for prime and extension fields, H and Hᵀ", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // q = 3, 7, 11 (k = 1), 27 = 3^3, 343 = 7^3; 5 blocks leave a partial workgroup.
  for (const q of [3, 7, 11, 27, 343]) {
    const x = randomRows(5 * (q + 1), q);
    const variants: Partial<PaleySpec>[] = [{ vec4: false }, {}];
    // Planes (k ≥ 3), and 2 persistent workgroups looping over the 2 groups of blocks.
    if (q === 27 || q === 343) variants.push({ plane: true }, { plane: true, persistent: 2 });
    for (const transpose of [false, true]) {
      for (const v of variants) {
        const spec: PaleySpec = { ...base, q, transpose, ...v };
        const { y } = await paleyGpu(gpu, x, { q, transpose, scale: 0.5, spec });
        const err = relError(y.data, paleyReference(x, { q, transpose, scale: 0.5 }).data);
        assert.ok(err < 1e-5, `${JSON.stringify(spec)}: error ${err}`);
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
    const variants: Partial<PaleySpec>[] = [
      { vec4: false },
      { transpose: true, vec4: false },
      {},
      { transpose: true, persistent: 1 },
    ];
    for (const v of variants) {
      const spec: PaleySpec = {
        ...base,
        q,
        transpose: false,
        chunks: 2 * pow2,
        threads: 96,
        pow2,
        plane,
        ...v,
      };
      const scale = 1 / Math.sqrt(n);
      const { transpose } = spec;
      const { y } = await paleyGpu(gpu, x, { q, transpose, pow2, scale, spec });
      const ref = fwht(tensor("f32", [3, n], x.data), { normalize: true, transpose });
      const err = relError(y.data, ref.data);
      assert.ok(err < 1e-5, `${JSON.stringify(spec)}: error ${err}`);
    }
  }
});

Deno.test("the Paley kernel generator rejects specs it cannot build", () => {
  // A group of 4 blocks does not divide 6 blocks per workgroup.
  assert.throws(
    () => paleyWgsl({ ...base, q: 27, transpose: false, chunks: 6, pow2: 4 }),
    RangeError,
  );
  // Planes need k ≥ 3; persistent workgroups need vec4.
  assert.throws(() => paleyWgsl({ ...base, q: 11, transpose: false, plane: true }), RangeError);
  assert.throws(
    () => paleyWgsl({ ...base, q: 27, transpose: false, vec4: false, persistent: 4 }),
    RangeError,
  );
});
