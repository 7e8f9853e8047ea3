import assert from "node:assert/strict";
import { destroyPackedWeight, qmatmul, uploadPackedWeight } from "../../kernels/qmatmul_kernel.ts";
import {
  QMATMUL_FEW_ROWS,
  qmatmulExactZeros,
  qmatmulFewRowSpec,
  qmatmulResolvedSpec,
  qmatmulSpec,
  qmatmulSweptFewRowSpec,
} from "../../kernels/qmatmul_default_spec.ts";
import { qmatmulReference } from "../../kernels/qmatmul_reference.ts";
import { qmatmulWorkgroupBytes } from "../../kernels/qmatmul_wgsl.ts";
import { checkQmatmulSpec } from "../../kernels/qmatmul_spec.ts";
import { packWeights } from "../../quantizers/pack.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import type { PackedWeight } from "../../kernels/packed_layout.ts";
import { randomQuantized } from "../quantizers/_random_quantized.ts";
import { randomX, relError, testGpu } from "./_gpu.ts";

/** Relative error allowed against the float64 CPU reference (f32 accumulation over K ≤ 2048). */
const TOLERANCE = 1e-5;

/** Zero points: per group or one common value, integers ("exact") or fractional ("fma"). */
const ZERO_KINDS = ["groups", "groups-fractional", "common", "common-fractional"] as const;

/**
 * A packed weight of shape [n, k] in groups of g (−1: one group) with every code 0, scale
 * 0.01 and common zero point 8: for the specialization rules, which read only the layout.
 */
function layoutOnly(n: number, k: number, bits: number, g: number): PackedWeight {
  const np = Math.ceil(n / 32) * 32, kp = Math.ceil(k / 32) * 32, gp = g === -1 ? kp : g;
  const groups = kp / gp;
  return {
    kind: "packed",
    format: "rowtile32",
    shape: [n, k],
    bits,
    groupSize: g,
    symmetric: true,
    groups,
    groupStride: gp,
    paddedRows: np,
    paddedCols: kp,
    colIdx: null,
    words: new Uint32Array((np / 32) * (kp / 32) * 32 * bits),
    scaleType: "f16",
    scales: new Float16Array(groups * np).fill(0.01),
    zeros: null,
    zero: 8,
  };
}

/**
 * A seeded weight [100, K] (4 row tiles, the last one partial) with the zero points of
 * `kind`: the identity column map (K = 512 in 4 groups of 128) or an act-order one
 * (K = 456 in 8 groups of 64, the last one shorter: packed to 512 columns).
 */
function weight(
  bits: number,
  kind: typeof ZERO_KINDS[number],
  actOrder: boolean,
  seed: number,
): QuantizedWeight {
  const common = kind.startsWith("common");
  const q = actOrder
    ? randomQuantized(100, 456, bits, 64, seed, "actOrder", common)
    : randomQuantized(100, 512, bits, 128, seed, "regular", common);
  return kind.endsWith("fractional") ? { ...q, zeros: q.zeros.map((z) => z - 0.375) } : q;
}

Deno.test("the default at batch 1–4 is the few-row specialization (the swept one at batch 1 on square and wide weights), within the device limits; batch 5 is not", () => {
  assert.equal(QMATMUL_FEW_ROWS, 4);
  const limits = [{}, { workgroupBytes: 49152, invocations: 1024 }];
  // Llama-3.2-1B's qkv, o, gate-up and down at 4 bits g128, and small shapes.
  for (
    const [n, k, bits, g] of [
      [3072, 2048, 4, 128],
      [2048, 2048, 4, 128],
      [16384, 2048, 4, 128],
      [2048, 8192, 4, 128],
      [100, 512, 3, 128],
      [33, 96, 8, -1],
    ] as const
  ) {
    const p = layoutOnly(n, k, bits, g);
    for (const l of limits) {
      for (let m = 1; m <= QMATMUL_FEW_ROWS; m++) {
        const spec = qmatmulSpec(p, m, l);
        checkQmatmulSpec(spec);
        assert(qmatmulWorkgroupBytes(spec) <= (l.workgroupBytes ?? 16384), JSON.stringify(spec));
        assert(spec.warps * 32 <= (l.invocations ?? 256), JSON.stringify(spec));
        assert.equal(spec.batch, m);
        // Square and wide weights take the swept kernel at batch 1 (timed faster there).
        if (m === 1 && (p.paddedRows === p.paddedCols || p.paddedRows >= 4 * p.paddedCols)) {
          assert.deepEqual(spec, qmatmulSweptFewRowSpec(p, m, l));
          continue;
        }
        assert.deepEqual(spec, qmatmulFewRowSpec(p, m, l));
        assert.equal(spec.sharedX, false);
        assert.equal(spec.prefetch, true);
        assert.equal(spec.dequant, "exact");
      }
      assert.notDeepEqual(qmatmulSpec(p, 5, l), qmatmulFewRowSpec(p, 4, l));
    }
  }
  // 64 row tiles (N = 2048) get 256 workgroups of 8 rows; 512 tiles, 512 of 32 rows.
  const down = layoutOnly(2048, 8192, 4, 128);
  assert.equal(qmatmulFewRowSpec(down, 1).split, 4);
  assert.equal(qmatmulFewRowSpec(down, 1).warps, 8);
  // With 1024 invocations, batch 1 doubles the teams to one step a sub-team (64 steps over 16
  // teams of 4 sub-teams); batch 2 keeps 8 teams of two steps each.
  const wide = { workgroupBytes: 49152, invocations: 1024 };
  assert.equal(qmatmulFewRowSpec(down, 1, wide).warps, 16);
  assert.equal(qmatmulFewRowSpec(down, 2, wide).warps, 8);
  // 1B q/k/v: 16 steps over 4 sub-teams a team: 4 teams.
  assert.equal(qmatmulFewRowSpec(layoutOnly(3072, 2048, 4, 128), 1, wide).warps, 4);
  const gateUp = layoutOnly(16384, 2048, 4, 128);
  assert.equal(qmatmulFewRowSpec(gateUp, 1).split, 1);
  // Fractional zero points take the FMA dequantization.
  const q = randomQuantized(40, 256, 4, 64, 3);
  const frac = packWeights({ ...q, zeros: q.zeros.map((z) => z + 0.5) });
  assert.equal(qmatmulFewRowSpec(frac, 2).dequant, "fma");
  for (const m of [0, 5, 1.5]) {
    assert.throws(() => qmatmulFewRowSpec(down, m), /'m' must be an integer in \[1, 4\]/);
    assert.throws(() => qmatmulSweptFewRowSpec(down, m), /'m' must be an integer in \[1, 4\]/);
  }
  // The previous default stays available: one workgroup per row tile, x staged, "half".
  const swept = qmatmulSweptFewRowSpec(down, 1, { workgroupBytes: 49152, invocations: 1024 });
  assert.deepEqual(
    [swept.split, swept.warps, swept.sharedX, swept.dequant],
    [1, 16, true, "half"],
  );
});

Deno.test("the few-row qmatmul matches its CPU reference for every width, scale type, zero-point kind, column map, accumulation and batch 1, 2, 4", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  let seed = 1000;
  for (const bits of [2, 3, 4, 8]) {
    for (const scaleType of ["f16", "f32"] as const) {
      for (const kind of ZERO_KINDS) {
        for (const actOrder of [false, true]) {
          const p = packWeights(weight(bits, kind, actOrder, seed++), { scaleType });
          assert.equal(p.colIdx !== null, actOrder);
          assert.equal(p.zeros === null, kind.startsWith("common"));
          assert.equal(qmatmulExactZeros(p), !kind.endsWith("fractional"));
          const w = uploadPackedWeight(gpu, p);
          const [N, K] = p.shape;
          for (const m of [1, 2, 4]) {
            assert.deepEqual(
              qmatmulResolvedSpec(gpu, p, m),
              qmatmulFewRowSpec(p, m, {
                workgroupBytes: gpu.limits.maxComputeWorkgroupStorageSize,
                invocations: gpu.limits.maxComputeInvocationsPerWorkgroup,
              }),
            );
            // f32 and f16 activations in turn.
            const x = randomX(m, K, seed++, (m + bits) % 2 === 0 ? "f32" : "f16");
            for (const accumulate of [false, true]) {
              const r = randomX(m, N, seed++, "f32");
              const addend = accumulate ? { ...r, data: r.data.map((v) => 8 * v) } : undefined;
              const y = await qmatmul(x, w, {
                backend: "webgpu",
                ...(addend ? { addend } : {}),
              });
              assert.deepEqual(y.shape, [m, N]);
              const err = relError(y.data, qmatmulReference(x, p, addend).data);
              assert(
                err < TOLERANCE,
                `${bits} bits, ${scaleType} scales, ${kind} zeros, act-order ${actOrder}, M = ${m}, accumulate ${accumulate}: relative error ${err}`,
              );
            }
          }
          destroyPackedWeight(w);
        }
      }
    }
  }
});

Deno.test("few-row qmatmul variants (teams, sub-teams, steps, prefetch, reduction) match the CPU reference on a long K", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // 2048 columns in groups of 128: 64 chunks, 16 steps of 4, so 8 teams of 4 sub-teams
  // (32 sub-teams) leave half of them without a step and 2 teams take several each.
  const variants = [
    {},
    { warps: 8, split: 4 },
    { warps: 8, split: 2, unroll: 2 },
    { warps: 2, split: 1, unroll: 1, reduce: "flat" },
    { warps: 4, split: 4, prefetch: false },
    { warps: 8, split: 1, unroll: 4, reduce: "flat" },
  ] as const;
  let seed = 3000;
  for (const bits of [2, 3, 4, 8]) {
    const q = randomQuantized(200, 2048, bits, 128, seed++, "regular", bits === 8);
    const p = packWeights(q, { scaleType: bits % 2 === 0 ? "f16" : "f32" });
    const w = uploadPackedWeight(gpu, p);
    for (const [i, variant] of variants.entries()) {
      const m = [1, 2, 4][i % 3]!;
      const x = randomX(m, 2048, seed++, "f32");
      const r = randomX(m, 200, seed++, "f32");
      const addend = i % 2 === 1 ? r : undefined;
      const y = await qmatmul(x, w, { backend: "webgpu", variant, ...(addend ? { addend } : {}) });
      const err = relError(y.data, qmatmulReference(x, p, addend).data);
      assert(err < TOLERANCE, `${bits} bits, M = ${m}, ${JSON.stringify(variant)}: ${err}`);
    }
    destroyPackedWeight(w);
  }
});
