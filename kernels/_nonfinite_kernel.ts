/**
 * Library-internal: a GPU scan for NaN and ±Infinity among float32 values,
 * so that the GPU path of `obsSolve` checks its inputs where they already
 * are (180 MB of W take about 0.1 ms there, against tens of milliseconds on
 * the host). It ORs 1 into a flag word when any value's exponent field is
 * all ones; the host locates the value only then. The CPU reference is
 * `firstNonFinite` (core/_finite.ts). Web-standard only.
 *
 * @module
 */

import { cachedPipeline, type GpuBatch } from "./backend.ts";

/** Workgroups of the scan (a grid-stride loop covers any length). */
const GROUPS = 1024;

/**
 * WGSL of the scan: bindings 0 = values (u32 bits of float32), 1 = flags
 * (u32, atomically ORed), 2 = parameters (count, flag index).
 *
 * @returns WGSL source.
 */
export function nonFiniteWgsl(): string {
  return `
struct Params { count: u32, slot: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> bits: array<u32>;
@group(0) @binding(1) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> prm: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  var bad = 0u;
  let stride = nwg.x * 256u;
  for (var i = gid.x; i < prm.count; i += stride) {
    bad |= select(0u, 1u, (bits[i] & 0x7f800000u) == 0x7f800000u);
  }
  if (bad != 0u) { atomicOr(&flags[prm.slot], 1u); }
}
`;
}

/**
 * Records the scan of the first `count` float32 values of `values`: word
 * `slot` of `flags` becomes nonzero when any of them is NaN or infinite
 * (the word must start at 0; it is only ever ORed).
 *
 * @param batch The batch to record into.
 * @param values Float32 values (at least `count`).
 * @param count Values to scan.
 * @param flags Flag words.
 * @param slot Index of the flag word.
 */
export function encodeNonFiniteCheck(
  batch: GpuBatch,
  values: GPUBuffer,
  count: number,
  flags: GPUBuffer,
  slot: number,
): void {
  if (!Number.isSafeInteger(count) || count < 0 || count * 4 > values.size) {
    throw new RangeError(
      `Cannot scan for non-finite values as 'count' must be an integer in [0, ${
        values.size / 4
      }]: current value is ${count}`,
    );
  }
  if (!Number.isInteger(slot) || slot < 0 || (slot + 1) * 4 > flags.size) {
    throw new RangeError(
      `Cannot scan for non-finite values as 'slot' must index a word of 'flags': current value is ${slot}`,
    );
  }
  if (count === 0) return;
  const pipeline = cachedPipeline(batch.gpu, "nonfinite", nonFiniteWgsl);
  const params = batch.uniform([{ u32: count }, { u32: slot }, { u32: 0 }, { u32: 0 }]);
  const groups = Math.min(GROUPS, Math.ceil(count / 256));
  batch.dispatch(pipeline, [values, flags, params], [groups]);
}
