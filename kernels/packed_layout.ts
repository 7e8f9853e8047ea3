/**
 * The "rowtile32" layout of uniform-grid weights that `qmatmul()` reads
 * ({@linkcode PackedWeight}): its constants and its description, the one
 * place the layout is defined. The kernel owns the layout it reads; the
 * quantizers' `packWeights` / `unpackWeights` (`quantizers/pack.ts`) build
 * on it. Web-standard only.
 *
 * ## The "rowtile32" layout
 *
 * For a weight [N, K] with b ∈ {2, 3, 4, 8} bits:
 *
 * - **Columns are reordered by group.** Group g occupies packed columns
 *   [g·Gp, (g+1)·Gp), holding its original columns in ascending order, then
 *   zero padding; `Gp` (`groupStride`) is the largest group's size rounded up
 *   to 32, so `Kp = groups·Gp` (`paddedCols`). `colIdx[j]` is the original
 *   column of packed column j (−1 for padding); it is null when the layout is
 *   the identity (`Kp = K`, groups already contiguous and in order). An
 *   act-order weight therefore becomes contiguous groups, and the kernel reads
 *   x through `colIdx` (gathered once per call) instead of the weights
 *   through `g_idx`. A shorter last group is padded to `Gp`.
 * - **Chunks of 32 codes.** A chunk is 32 consecutive packed columns of one
 *   row: b 32-bit words holding the codes as a little-endian bit stream (see
 *   `core/bitpack.ts`: code i at stream bits [i·b, (i+1)·b), stream bit s is bit
 *   s mod 32 of word ⌊s/32⌋; 3-bit codes 10 and 21 straddle words). A chunk
 *   never crosses a group (Gp is a multiple of 32).
 * - **Rows in tiles of 32.** Rows are padded to `Np` (`paddedRows`, a
 *   multiple of 32, padding rows have code 0 and scale 0). Word j of chunk c
 *   of row n is `words[((⌊n/32⌋·C + c)·32 + n mod 32)·b + j]` with C = Kp/32:
 *   the 32 rows of a tile store chunk c next to each other, so 32 GPU threads
 *   that own 32 rows read 32·b contiguous words (coalesced, and one 16-byte
 *   load each at 4 bits).
 * - **Scales and zero points** are [groups, Np] (group-major, like GPTQ's
 *   `scales`), in f16 or f32. When every zero point is the same number (the
 *   symmetric grids) it is kept once as `zero` and `zeros` is null.
 *
 * Dequantization: Ŵ[n, colIdx[j]] = scales[g, n]·(code(n, j) − zero(g, n)),
 * g = ⌊j/Gp⌋.
 *
 * @module
 */

/** Bit widths the packed layout (and `qmatmul`) accept. */
export const PACKED_BITS: readonly number[] = [2, 3, 4, 8];

/** Rows per tile and codes per chunk of the "rowtile32" layout. */
export const PACK_TILE = 32;

/** A uniform-grid weight in our kernel layout (see the module docs). */
export interface PackedWeight {
  /** Discriminant. */
  readonly kind: "packed";
  /** Layout name and version. */
  readonly format: "rowtile32";
  /** [N, K] = [out features, in features] of the original weight. */
  readonly shape: readonly [number, number];
  /** Bits per code: 2, 3, 4 or 8. */
  readonly bits: number;
  /** The quantizer's group size (−1: one group per row), kept for round trips. */
  readonly groupSize: number;
  /** Whether the quantizer's grid was symmetric, kept for round trips. */
  readonly symmetric: boolean;
  /** Number of groups. */
  readonly groups: number;
  /** Packed columns per group (Gp, a multiple of 32). */
  readonly groupStride: number;
  /** Rows padded to a multiple of 32 (Np). */
  readonly paddedRows: number;
  /** Packed columns, groups·Gp (Kp). */
  readonly paddedCols: number;
  /** Original column of each packed column, −1 for padding, [Kp]; null for the identity. */
  readonly colIdx: Int32Array | null;
  /** Codes, [Np/32, Kp/32, 32, bits] u32 words (see the module docs). */
  readonly words: Uint32Array;
  /** Storage type of scales and zero points. */
  readonly scaleType: "f16" | "f32";
  /** Scales, [groups, Np]. */
  readonly scales: Float16Array | Float32Array;
  /** Zero points in code units, [groups, Np]; null when all equal `zero`. */
  readonly zeros: Float16Array | Float32Array | null;
  /** The common zero point when `zeros` is null (else 0). */
  readonly zero: number;
  /** The solver's column order (act-order), kept for round trips. */
  readonly perm?: Int32Array;
}

/**
 * Index in {@linkcode PackedWeight.words} of the first of the `bits` words
 * that hold the chunk of {@linkcode PACK_TILE} codes of row n and column
 * chunk c (layout [Np/32, Kp/32, 32, bits]).
 *
 * @param n Row.
 * @param c Column chunk (packed columns c·32 … c·32 + 31).
 * @param chunks Column chunks per row, Kp/32.
 * @param bits Bits per code.
 * @returns The word index.
 */
export function packedChunkOffset(n: number, c: number, chunks: number, bits: number): number {
  const tile = Math.floor(n / PACK_TILE), lane = n % PACK_TILE;
  return ((tile * chunks + c) * PACK_TILE + lane) * bits;
}
