import assert from "node:assert/strict";
import {
  butterflyPasses,
  encodeButterfly,
  type FwhtButterflyPass,
  fwhtGpu,
  fwhtReference,
} from "../../kernels/fwht_kernel.ts";
import {
  butterflyWorkgroupBytes,
  type FwhtButterflySpec,
} from "../../kernels/fwht_butterfly_wgsl.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { fwht, fwhtPlan } from "../../core/fwht.ts";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

Deno.test("GPU Hadamard transform equals core/fwht for powers of two and 2^k·m orders", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(5);
  for (const n of [4, 64, 128, 512, 1024, 2048, 12, 24, 688, 1376]) {
    const rows = 7;
    const x = tensor("f32", [rows, n], Float32Array.from({ length: rows * n }, () => rng.normal()));
    for (const opts of [{ normalize: true }, { transpose: true }]) {
      const { y } = await fwhtGpu(gpu, x, opts);
      const ref = fwhtReference(x, opts);
      const err = relError(y.data, ref.data);
      assert.ok(
        err < 1e-5,
        `n = ${n} (${fwhtPlan(n).description}), ${JSON.stringify(opts)}: error ${err}`,
      );
    }
  }
});

Deno.test("GPU Hadamard transform splits rows into tiles without changing the result", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(6);
  const x = tensor("f32", [10, 24], Float32Array.from({ length: 240 }, () => rng.normal()));
  const whole = await fwhtGpu(gpu, x, { normalize: true });
  const tiled = await fwhtGpu(gpu, x, { normalize: true, maxTileRows: 3 });
  assert.deepEqual(tiled.y.data, whole.y.data);
});

Deno.test("every butterfly kernel variant equals core/fwht's H_pow2 ⊗ I on rows", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(7);
  const rows = 5; // not a multiple of rowsPerGroup: the guards on the last block run
  const cases: FwhtButterflySpec[] = [];
  for (const [n, pow2] of [[256, 256], [128, 128], [96, 32], [48, 16], [512, 64]] as const) {
    for (const order of ["desc", "asc"] as const) {
      for (const radix of [2, 3, 4]) {
        cases.push({
          kind: "rows",
          n,
          pow2,
          threads: radix === 3 ? 32 : 64,
          radix,
          rowsPerGroup: radix === 4 ? 2 : 1,
          order,
          vec4: n === pow2,
          persistent: radix === 2 ? 3 : 0,
        });
      }
    }
    if (pow2 <= 64) {
      cases.push({ kind: "columns", n, pow2, width: 1 });
      if ((n / pow2) % 4 === 0) cases.push({ kind: "columns", n, pow2, width: 4 });
    }
  }
  for (
    const [n, threads] of [[128, 32], [512, 64], [1024, 256], [4096, 128], [8192, 256]] as const
  ) {
    cases.push({ kind: "lanes", n, threads, persistent: 0, prefetch: false });
    cases.push({ kind: "lanes", n, threads, persistent: 2, prefetch: false });
    cases.push({ kind: "lanes", n, threads, persistent: 2, prefetch: true });
    cases.push({ kind: "lanes", n, threads, persistent: 0, prefetch: false, outOfPlace: true });
    cases.push({ kind: "lanes", n, threads, persistent: 2, prefetch: true, smemVec4: true });
    cases.push({
      kind: "lanes",
      n,
      threads,
      persistent: 2,
      prefetch: true,
      smemVec4: true,
      outOfPlace: true,
    });
  }
  for (const [n, threads] of [[1024, 32], [4096, 64]] as const) {
    for (const ends of ["load", "store"] as const) {
      cases.push({ kind: "lanes", n, threads, persistent: 0, prefetch: false, ends });
      cases.push({
        kind: "lanes",
        n,
        threads,
        persistent: 2,
        prefetch: false,
        ends,
        outOfPlace: true,
      });
    }
    cases.push({ kind: "lanes", n, threads, persistent: 2, prefetch: true, ends: "load" });
  }
  for (const spec of cases) {
    const n = spec.n, pow2 = spec.kind === "lanes" ? spec.n : spec.pow2;
    const inner = n / pow2;
    const x = Float32Array.from({ length: rows * n }, () => rng.normal());
    const identity = new Float64Array(inner * inner);
    for (let i = 0; i < inner; i++) identity[i * inner + i] = 1;
    const ref = fwht(tensor("f32", [rows, n], x), {
      normalize: true,
      block: { m: inner, data: identity },
    });
    const buffer = uploadBuffer(gpu, x);
    const out = storageBuffer(gpu, x.byteLength);
    const batch = new GpuBatch(gpu);
    const result = encodeButterfly(batch, spec, buffer, rows, 1 / Math.sqrt(pow2), out);
    const { data } = await batch.submit([result]);
    buffer.destroy();
    out.destroy();
    const err = relError(new Float32Array(data[0]!), ref.data);
    assert.ok(err < 1e-5, `${JSON.stringify(spec)}: error ${err}`);
  }
});

Deno.test("GPU Hadamard transform equals core/fwht on rows longer than workgroup memory holds", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(8);
  // 2^14 and 2^15; 2^9·28 and 2^10·28 (Llama-3 8B and 70B intermediate sizes, Paley I(27));
  // 2^7·108 (three dense Paley I(11) blocks, two of them strided); 2^7·12²; 2^6·344
  // (too long for the fused Paley pass); 2·60·84 (dense blocks through the product).
  for (const n of [16384, 32768, 14336, 28672, 13824, 18432, 22016, 10080]) {
    const rows = 2;
    const x = tensor("f32", [rows, n], Float32Array.from({ length: rows * n }, () => rng.normal()));
    for (const opts of [{ normalize: true }, { transpose: true }]) {
      const { y } = await fwhtGpu(gpu, x, opts);
      const err = relError(y.data, fwht(x, opts).data);
      assert.ok(
        err < 1e-5,
        `n = ${n} (${fwhtPlan(n).description}), ${JSON.stringify(opts)}: error ${err}`,
      );
    }
  }
});

Deno.test("butterflyPasses() splits H_pow2 into passes that fit the workgroup memory", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  for (const n of [4096, 11008, 16384, 14336, 28672, 65536, 1 << 20]) {
    const { pow2 } = fwhtPlan(n);
    const passes = butterflyPasses(gpu, n, pow2);
    let stages = 1;
    for (const { spec, outer } of passes) {
      assert.equal(spec.n * outer, n, `n = ${n}: ${JSON.stringify(spec)} × ${outer}`);
      assert.ok(butterflyWorkgroupBytes(spec) <= limit, `n = ${n}: ${JSON.stringify(spec)}`);
      stages *= spec.kind === "lanes" ? spec.n : spec.pow2;
    }
    assert.equal(stages, pow2, `n = ${n}: the passes' orders multiply to ${stages}`);
    // Every pass past the first is a strided columns pass: one read and one write each.
    assert.ok(passes.slice(1).every((p) => p.spec.kind === "columns"));
    if (n <= 11008) assert.equal(passes.length, 1, `n = ${n} keeps its single pass`);
  }
  assert.equal(butterflyPasses(gpu, 1 << 20, 1 << 20).length, 3);
  // The kinds and orders of the passes on a device with 256 bytes or 16 KB of workgroup memory.
  const small = (bytes: number) => ({
    ...gpu,
    limits: {
      maxComputeWorkgroupStorageSize: bytes,
      maxComputeInvocationsPerWorkgroup: 1024,
    } as GPUSupportedLimits,
  });
  const shape = (passes: FwhtButterflyPass[]) =>
    passes.map(({ spec, outer }) =>
      `${spec.kind}:${spec.kind === "lanes" ? spec.n : spec.pow2}x${outer}`
    ).join(" ");
  assert.equal(shape(butterflyPasses(small(256), 1024, 1024)), "columns:32x32 columns:32x1");
  assert.equal(
    shape(butterflyPasses(small(256), 65536, 65536)),
    "columns:64x1024 columns:32x32 columns:32x1",
  );
  assert.equal(shape(butterflyPasses(small(256), 1792, 64)), "columns:64x1");
  assert.equal(
    shape(butterflyPasses(small(16384), 1 << 19, 1 << 19)),
    "lanes:4096x128 columns:16x8 columns:8x1",
  );
});

Deno.test("GPU Hadamard transform with less workgroup memory runs more passes, same result", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(9);
  // 256 bytes hold no row past 32 values: the butterflies of 2^10, 2^12 and 2^16 run as 2, 2
  // and 3 columns passes, and the Paley I(27) and I(343) blocks of 64·28 and 32·344 as
  // unfused passes; with 16 KB, 2^19 runs as lanes on 2^12 plus two columns passes.
  const cases: [number, number][] = [
    [1024, 256],
    [4096, 256],
    [65536, 256],
    [1792, 256],
    [11008, 2048],
    [1 << 19, 16384],
  ];
  for (const [n, workgroupBytes] of cases) {
    const rows = n > 65536 ? 1 : 3;
    const x = tensor("f32", [rows, n], Float32Array.from({ length: rows * n }, () => rng.normal()));
    for (const opts of [{ normalize: true }, { transpose: true }]) {
      const { y } = await fwhtGpu(gpu, x, { ...opts, workgroupBytes });
      const err = relError(y.data, fwht(x, opts).data);
      assert.ok(err < 1e-5, `n = ${n}, ${workgroupBytes} bytes, ${JSON.stringify(opts)}: ${err}`);
    }
  }
  const x = tensor("f32", [1, 64], new Float32Array(64));
  await assert.rejects(() => fwhtGpu(gpu, x, { workgroupBytes: 0 }), RangeError);
});

Deno.test("GPU Hadamard transform of long rows splits them into tiles without changing the result", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(10);
  for (const n of [16384, 14336]) {
    const x = tensor("f32", [3, n], Float32Array.from({ length: 3 * n }, () => rng.normal()));
    const whole = await fwhtGpu(gpu, x, { normalize: true, transpose: true });
    const tiled = await fwhtGpu(gpu, x, { normalize: true, transpose: true, maxTileRows: 1 });
    assert.deepEqual(tiled.y.data, whole.y.data);
  }
});

Deno.test("GPU Hadamard transform applies a block larger than a binding in tiles of its rows", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(11);
  // Dense Paley blocks innermost (through the product when whole) and strided, cut into
  // tiles of rows that do not divide m: 2 ⊗ P(60) ⊗ P(84), P(12)^3 with H_8 and with a split
  // H_128, Paley II(37) and II(7²).
  const cases = [
    { n: 10080, bindingBytes: 4 * 84 * 10 },
    { n: 13824, bindingBytes: 4 * 12 * 5 },
    { n: 18432, bindingBytes: 4 * 12 * 5, workgroupBytes: 1024 },
    { n: 76, bindingBytes: 4 * 76 * 7 },
    { n: 200, bindingBytes: 4 * 100 * 33 },
  ];
  for (const { n, ...limits } of cases) {
    const rows = 3;
    const x = tensor("f32", [rows, n], Float32Array.from({ length: rows * n }, () => rng.normal()));
    for (const opts of [{ normalize: true }, { transpose: true }]) {
      const { y } = await fwhtGpu(gpu, x, { ...opts, ...limits });
      const err = relError(y.data, fwht(x, opts).data);
      assert.ok(
        err < 1e-5,
        `n = ${n} (${fwhtPlan(n).description}), ${JSON.stringify(limits)}, ${
          JSON.stringify(opts)
        }: error ${err}`,
      );
    }
  }
  const x = tensor("f32", [1, 12], new Float32Array(12));
  await assert.rejects(() => fwhtGpu(gpu, x, { bindingBytes: 0.5 }), RangeError);
});
