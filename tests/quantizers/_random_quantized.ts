/**
 * Test helper: seeded random uniform-grid quantized weights with any group
 * layout (regular, act-order shuffled, a shorter last group, irregular).
 *
 * @module
 */

import { prng } from "../../core/prng.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";

/** How the columns are grouped. */
export type Layout = "regular" | "actOrder" | "irregular";

/**
 * A random quantized weight.
 *
 * @param rows N.
 * @param cols K.
 * @param bits Bits per code.
 * @param groupSize Group size, −1 for one group per row.
 * @param seed Seed.
 * @param layout Group layout ("irregular": random group sizes, shuffled).
 * @param symmetric Common zero point 2^(bits−1).
 * @returns The quantized weight.
 */
export function randomQuantized(
  rows: number,
  cols: number,
  bits: number,
  groupSize: number,
  seed: number,
  layout: Layout = "regular",
  symmetric = false,
): QuantizedWeight {
  const g = prng(seed);
  const maxq = (1 << bits) - 1;
  let gIdx = new Int32Array(cols).map((_, k) => (groupSize === -1 ? 0 : Math.floor(k / groupSize)));
  if (layout === "irregular") gIdx = gIdx.map(() => g.int(Math.max(1, Math.ceil(cols / 20))));
  if (layout !== "regular") {
    for (let i = cols - 1; i > 0; i--) {
      const j = g.int(i + 1);
      [gIdx[i], gIdx[j]] = [gIdx[j]!, gIdx[i]!];
    }
  }
  // Renumber so groups are 0..groups−1 (every group non-empty).
  const used = [...new Set(gIdx)].sort((a, b) => a - b);
  const rank = new Map(used.map((v, i) => [v, i]));
  gIdx = gIdx.map((v) => rank.get(v)!);
  const groups = used.length;
  const codes = new Uint8Array(rows * cols).map(() => g.int(maxq + 1));
  const scales = new Float32Array(rows * groups).map(() => Math.fround(0.01 + g.uniform()));
  const zeros = new Float32Array(rows * groups).map(() =>
    symmetric ? 2 ** (bits - 1) : g.int(maxq + 1)
  );
  const perm = layout === "actOrder"
    ? Int32Array.from({ length: cols }, (_, i) => i).sort((a, b) => gIdx[a]! - gIdx[b]!)
    : undefined;
  const q: QuantizedWeight = {
    kind: "uniform",
    shape: [rows, cols],
    bits,
    groupSize,
    symmetric,
    codes,
    scales,
    zeros,
    gIdx,
    stats: { seconds: 0 },
  };
  return perm ? { ...q, perm } : q;
}
