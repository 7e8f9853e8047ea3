import assert from "node:assert/strict";
import { testGpu } from "../kernels/_gpu.ts";
import { prng } from "../../core/prng.ts";
import { type Gpu, GpuBatch, uploadBuffer } from "../../kernels/backend.ts";
import {
  type ActivationQuant,
  fakeQuantizeActivations,
} from "../../quantizers/activation_quant.ts";
import { encodeActQuant, uploadActQuant } from "../../models/_gpu_act_quant.ts";

/** The kernel's output on x [rows, width] (a fresh buffer, read back). */
async function onGpu(
  gpu: Gpu,
  x: Float32Array,
  rows: number,
  spec: ActivationQuant,
): Promise<Float32Array> {
  const width = x.length / rows;
  const buffer = uploadBuffer(gpu, x, "test:x");
  const plan = uploadActQuant(gpu, spec, width, "test");
  try {
    const batch = new GpuBatch(gpu);
    encodeActQuant(batch, buffer, plan, rows);
    const { data } = await batch.submit([{ buffer, offset: 0, size: x.byteLength }]);
    return new Float32Array(data[0]!);
  } finally {
    buffer.destroy();
    plan.keep?.destroy();
  }
}

/** Heavy-tailed rows: normal values times a random power of two per row and per element. */
function rows(n: number, width: number, seed: number): Float32Array {
  const rng = prng(seed);
  const x = new Float32Array(n * width);
  for (let r = 0; r < n; r++) {
    const rowScale = 2 ** (rng.int(40) - 20);
    for (let c = 0; c < width; c++) {
      x[r * width + c] = rng.normal() * rowScale * (rng.int(8) === 0 ? 16 : 1);
    }
  }
  return x;
}

/** Exact agreement (=== : +0 and −0 are equal), naming the first difference. */
function assertSame(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      assert.fail(`${what}: element ${i} is ${got[i]} on the GPU and ${want[i]} on the CPU`);
    }
  }
}

// Rounding midpoints: with amax 7 (int4) the scale is 1 and x/s lands on k + ½;
// with amax 448 (fp8) the scale is 1 and E4M3 midpoints (normal and subnormal) tie.
const TIES = new Float32Array([
  7,
  2.5,
  -3.5,
  0.5,
  -0.5,
  1.5,
  6.5,
  -6.5, // int4, scale 1
  448,
  1.0625,
  1.1875,
  -2.125,
  3 * 2 ** -10,
  5 * 2 ** -10,
  100,
  -0.01171875, // fp8, scale 1
]);

const SPECS: ActivationQuant[] = [
  { format: "int8" },
  { format: "int4" },
  { format: "fp8" },
  { format: "int8", granularity: "tensor", absMax: 1.7 },
  { format: "int4", granularity: "tensor", absMax: 0.3 },
  { format: "fp8", granularity: "tensor", absMax: 3.1 },
  { format: "int4", outliers: { columns: [0, 5, 64, 70], format: "int8" } },
  { format: "int4", outliers: { columns: [3, 1], format: "fp8" } },
  { format: "fp8", outliers: { columns: [2], format: "int8" } },
  { format: "mxfp4" },
  { format: "nvfp4" },
  { format: "nvfp4", granularity: "tensor", absMax: 2.5 },
];

Deno.test("the WebGPU activation quantization kernel gives fakeQuantizeActivations' values exactly", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const [i, spec] of SPECS.entries()) {
    for (const width of [1, 63, 100, 130]) {
      if (spec.outliers && Array.from(spec.outliers.columns).some((c) => c >= width)) continue;
      const x = rows(9, width, 17 * i + width);
      x.fill(0, 0, width); // an all-zero row: scale 0
      const got = await onGpu(gpu, x, 9, spec);
      assertSame(
        got,
        fakeQuantizeActivations(x, 9, spec),
        `${JSON.stringify(spec)} width ${width}`,
      );
    }
  }
});

Deno.test("the WebGPU activation quantization kernel breaks ties to even as the CPU does", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const int4 = TIES.slice(0, 8), fp8 = TIES.slice(8);
  for (const [x, spec] of [[int4, { format: "int4" }], [fp8, { format: "fp8" }]] as const) {
    const want = fakeQuantizeActivations(x, 1, spec);
    assertSame(await onGpu(gpu, x, 1, spec), want, spec.format);
  }
  // the ties do land on midpoints: int4 rounds 2.5 to 2 and −3.5 to −4, fp8 1.0625 to 1
  assert.deepEqual([...fakeQuantizeActivations(int4, 1, { format: "int4" })].slice(1, 3), [2, -4]);
  assert.equal(fakeQuantizeActivations(fp8, 1, { format: "fp8" })[1], 1);
  // MXFP4: amax 5 gives the block scale 1, so E2M1's midpoints tie (0.25 → 0, 2.5 → 2, 5 → 4)
  const mx = new Float32Array([5, 0.25, 0.75, 1.25, 1.75, 2.5, -3.5, -5]);
  const mxWant = fakeQuantizeActivations(mx, 1, { format: "mxfp4" });
  assert.deepEqual([...mxWant], [4, 0, 1, 1, 2, 2, -4, -4]);
  assertSame(await onGpu(gpu, mx, 1, { format: "mxfp4" }), mxWant, "mxfp4 ties");
  // int formats round the float32 quotient: x/s = 2.5 + 1.2·10⁻⁷ is the tie 2.5 in float32, so 2
  const si = Math.fround(1 + 2 * 2 ** -23), xi = Math.fround(2.5 + 3 * 2 ** -22);
  assert(xi / si > 2.5 && Math.fround(xi / si) === 2.5);
  const int4Static = { format: "int4", granularity: "tensor", absMax: si * 7 } as const;
  const intWant = fakeQuantizeActivations(new Float32Array([xi]), 1, int4Static);
  assert.equal(intWant[0], Math.fround(2 * si));
  assertSame(await onGpu(gpu, new Float32Array([xi]), 1, int4Static), intWant, "int4 float32 tie");
  // FP8 rounds the exact x/s: here x/s = 1.0625 + 6·10⁻⁸ rounds up to 1.125, though its float32
  // quotient is the midpoint 1.0625 (which would round down to 1)
  const s = Math.fround(1 + 8 * 2 ** -23), x = Math.fround(1.0625 + 9 * 2 ** -23);
  assert.equal(Math.fround(x / s), 1.0625);
  const spec = { format: "fp8", granularity: "tensor", absMax: s * 448 } as const;
  const want = fakeQuantizeActivations(new Float32Array([x]), 1, spec);
  assert.equal(want[0], Math.fround(1.125 * s));
  assertSame(
    await onGpu(gpu, new Float32Array([x]), 1, spec),
    want,
    "fp8 above a float32 midpoint",
  );
});

Deno.test("the WebGPU activation quantization kernel takes scales above 2^30 from rows of large magnitude", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // amax/127 ≈ 1.1·10¹⁰: the scale's quotient is above 2^30 (quoSig once capped it there)
  const x = new Float32Array([
    1.2345 * 2 ** 40,
    -1.0987,
    3 * 2 ** 35,
    -(2 ** 38),
    7,
    0,
    1e9,
    -5e11,
  ]);
  for (const format of ["int8", "int4", "fp8", "nvfp4"] as const) {
    const want = fakeQuantizeActivations(x, 1, { format });
    assertSame(await onGpu(gpu, x, 1, { format }), want, format);
  }
});
