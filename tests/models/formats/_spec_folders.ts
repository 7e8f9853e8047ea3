/**
 * Quantized Hugging Face folders built by hand from the formats' published
 * descriptions, independently of the library's writers: GPTQ as AutoGPTQ's
 * `pack()` lays it out (per bit width, the 3-bit case word by word) and
 * compressed-tensors' `pack_to_int32` (⌊32/b⌋ codes per word, values offset
 * by 2^(b−1)). The tests read them back through `loadModel`.
 *
 * @module
 */

import { readSafetensors, writeSafetensors } from "../../../core/safetensors_file.ts";
import { permutation, type Prng } from "../../../core/prng.ts";
import { type Tensor, tensor } from "../../../core/tensor.ts";
import { copyFixture } from "../_hf_fixtures.ts";

/** One linear's grid in Hugging Face's row order. */
export interface SpecLinear {
  readonly N: number;
  readonly K: number;
  readonly bits: number;
  readonly groups: number;
  /** Codes [N, K], unsigned. */
  readonly codes: Uint8Array;
  /** Scales [N, groups], values f16 holds exactly. */
  readonly scales: Float32Array;
  /** Zero points [N, groups], unsigned code units. */
  readonly zeros: Int32Array;
  /** Group of each input feature [K]. */
  readonly gIdx: Int32Array;
}

/** Grid options of {@linkcode randomLinear}. */
export interface SpecGrid {
  readonly bits: number;
  /** −1 per channel. */
  readonly groupSize: number;
  readonly symmetric: boolean;
  /** Groups over a random column order (GPTQ's act-order g_idx). */
  readonly actOrder: boolean;
  /** Lowest zero point drawn (GPTQ v1 cannot store 0). */
  readonly minZero?: number;
}

/** A random grid (codes, f16 scales, zero points, group index). */
export function randomLinear(N: number, K: number, grid: SpecGrid, rng: Prng): SpecLinear {
  const { bits, groupSize, symmetric, actOrder, minZero = 0 } = grid;
  const size = groupSize > 0 ? groupSize : K;
  const groups = Math.ceil(K / size);
  const maxq = 2 ** bits - 1;
  const codes = Uint8Array.from({ length: N * K }, () => rng.int(maxq + 1));
  const scales = Float32Array.from(
    { length: N * groups },
    () => Math.f16round(0.02 + 0.05 * rng.uniform()),
  );
  const zeros = Int32Array.from(
    { length: N * groups },
    () => symmetric ? 2 ** (bits - 1) : minZero + rng.int(maxq + 1 - minZero),
  );
  const order = actOrder ? permutation(K, rng) : Int32Array.from({ length: K }, (_, k) => k);
  const gIdx = new Int32Array(K);
  order.forEach((k, i) => gIdx[k] = Math.floor(i / size));
  return { N, K, bits, groups, codes, scales, zeros, gIdx };
}

/** The float32 weight [N, K] a grid stands for: fround(scale·(code − zero)). */
export function specDense(l: SpecLinear): Float32Array {
  const out = new Float32Array(l.N * l.K);
  for (let n = 0; n < l.N; n++) {
    for (let k = 0; k < l.K; k++) {
      const g = n * l.groups + l.gIdx[k]!;
      out[n * l.K + k] = l.scales[g]! * (l.codes[n * l.K + k]! - l.zeros[g]!);
    }
  }
  return out;
}

/**
 * Packs values[i, j] (i < rows) into int32 words along i, as AutoGPTQ's
 * `pack()` does for `qweight` (and, transposed, `qzeros`): at 2, 4, 8 bits
 * 32/b values per word in ascending bit order; at 3 bits every 32 values
 * fill 3 words: 10 values, then one split over the word boundary (its low 2
 * bits at bits 30–31, its high bit at bit 0 of the next word), 10 more from
 * bit 1, one split (low bit at 31, high 2 bits at 0–1), 10 from bit 2.
 */
function autoGptqPack(
  value: (i: number, j: number) => number,
  rows: number,
  cols: number,
  bits: number,
): Int32Array {
  const words = Math.ceil((rows * bits) / 32);
  const out = new Uint32Array(words * cols);
  const v = (i: number, j: number) => (i < rows ? value(i, j) : 0);
  for (let j = 0; j < cols; j++) {
    const put = (w: number, x: number) => (out[w * cols + j] = (out[w * cols + j]! | x) >>> 0);
    if (bits !== 3) {
      const per = 32 / bits;
      for (let w = 0; w < words; w++) {
        for (let t = 0; t < per; t++) put(w, v(w * per + t, j) << (bits * t));
      }
      continue;
    }
    for (let row = 0, i = 0; row < words; row += 3) {
      for (let t = 0; t < 10; t++) put(row, v(i + t, j) << (3 * t));
      i += 10;
      put(row, (v(i, j) << 30) >>> 0);
      put(row + 1, (v(i, j) >> 2) & 1);
      i += 1;
      for (let t = 0; t < 10; t++) put(row + 1, v(i + t, j) << (3 * t + 1));
      i += 10;
      put(row + 1, (v(i, j) << 31) >>> 0);
      put(row + 2, (v(i, j) >> 1) & 3);
      i += 1;
      for (let t = 0; t < 10; t++) put(row + 2, v(i + t, j) << (3 * t + 2));
      i += 10;
    }
  }
  return new Int32Array(out.buffer);
}

/**
 * GPTQ tensors of a grid: v1 stores zero − 1, v2 the zero. With `wordWise`
 * (2, 4, 8 bits), v1 is made as GPTQModel's v2 → v1 conversion does: the v2
 * words minus one 1 per field (a zero point 0 then borrows from its
 * neighbour); else each field holds (zero − 1) mod 2^b.
 */
export function gptqSpecTensors(
  l: SpecLinear,
  version: 1 | 2,
  wordWise = false,
): Record<string, Tensor> {
  const { N, K, bits, groups } = l;
  const maxq = 2 ** bits - 1;
  const minus = version === 1 && !wordWise ? 1 : 0;
  const ones = version === 1 && wordWise ? Math.floor(0xffffffff / maxq) : 0;
  return {
    qweight: tensor(
      "i32",
      [Math.ceil((K * bits) / 32), N],
      autoGptqPack((k, n) => l.codes[n * K + k]!, K, N, bits),
    ),
    // qzeros [groups, N·b/32]: packed along N, so pack the transpose and transpose back.
    qzeros: (() => {
      const packed = autoGptqPack(
        (n, g) => (l.zeros[n * groups + g]! - minus) & maxq,
        N,
        groups,
        bits,
      ); // [N·b/32, groups]
      const words = Math.ceil((N * bits) / 32);
      const out = new Int32Array(groups * words);
      for (let w = 0; w < words; w++) {
        for (let g = 0; g < groups; g++) out[g * words + w] = (packed[w * groups + g]! - ones) | 0;
      }
      return tensor("i32", [groups, words], out);
    })(),
    scales: tensor(
      "f16",
      [groups, N],
      Float16Array.from(
        { length: groups * N },
        (_, i) => l.scales[(i % N) * groups + Math.floor(i / N)]!,
      ),
    ),
    g_idx: tensor("i32", [K], Int32Array.from(l.gIdx)),
  };
}

/** compressed-tensors pack-quantized tensors of a grid (`pack_to_int32`). */
export function compressedTensorsSpecTensors(
  l: SpecLinear,
  symmetric: boolean,
  withGIdx: boolean,
): Record<string, Tensor> {
  const { N, K, bits, groups } = l;
  const per = Math.floor(32 / bits), offset = 2 ** (bits - 1);
  // Signed values as compressed-tensors quantizes them, shifted back by the offset when packed.
  const signed = (c: number) => c - offset;
  const packRow = (get: (j: number) => number, count: number) => {
    const words = new Uint32Array(Math.ceil(count / per));
    for (let j = 0; j < count; j++) {
      words[Math.floor(j / per)] =
        (words[Math.floor(j / per)]! | ((get(j) + offset) << (bits * (j % per)))) >>> 0;
    }
    return words;
  };
  const wordsK = Math.ceil(K / per);
  const packed = new Int32Array(N * wordsK);
  for (let n = 0; n < N; n++) {
    packed.set(new Int32Array(packRow((k) => signed(l.codes[n * K + k]!), K).buffer), n * wordsK);
  }
  const out: Record<string, Tensor> = {
    weight_packed: tensor("i32", [N, wordsK], packed),
    weight_scale: tensor("f16", [N, groups], Float16Array.from(l.scales)),
    weight_shape: tensor("i64", [2], BigInt64Array.from([BigInt(N), BigInt(K)])),
  };
  if (!symmetric) {
    const wordsN = Math.ceil(N / per);
    const zp = new Int32Array(wordsN * groups);
    for (let g = 0; g < groups; g++) {
      const col = packRow((n) => signed(l.zeros[n * groups + g]!), N);
      for (let w = 0; w < wordsN; w++) zp[w * groups + g] = col[w]! | 0;
    }
    out.weight_zero_point = tensor("i32", [wordsN, groups], zp);
  }
  if (withGIdx) out.weight_g_idx = tensor("i32", [K], Int32Array.from(l.gIdx));
  return out;
}

/** HF linear module names and [N, K] of a Llama-style block of the given config. */
export function blockModules(config: Record<string, number>): [string, number, number][] {
  const {
    hidden_size: d,
    intermediate_size: h,
    num_attention_heads: nh,
    num_key_value_heads: nkv,
  } = config;
  const hd = config.head_dim ?? d! / nh!;
  return [
    ["self_attn.q_proj", nh! * hd, d!],
    ["self_attn.k_proj", nkv! * hd, d!],
    ["self_attn.v_proj", nkv! * hd, d!],
    ["self_attn.o_proj", d!, nh! * hd],
    ["mlp.gate_proj", h!, d!],
    ["mlp.up_proj", h!, d!],
    ["mlp.down_proj", d!, h!],
  ];
}

/**
 * A copy of a fixture whose block linears are replaced by `pack(grid)`'s
 * tensors (quantized folder) and a copy with their dense weights (float32).
 *
 * @returns The two folders and the grids by module name.
 */
export async function specFolders(
  fixture: string,
  grid: (module: string) => SpecGrid,
  pack: (l: SpecLinear, module: string) => Record<string, Tensor>,
  quantizationConfig: Record<string, unknown>,
  rng: Prng,
  denseOf: (l: SpecLinear) => Float32Array = specDense,
): Promise<{ packed: string; dense: string; grids: Map<string, SpecLinear> }> {
  const packed = await copyFixture(fixture), dense = await copyFixture(fixture);
  const config = JSON.parse(await Deno.readTextFile(`${packed}/config.json`));
  const { tensors } = await readSafetensors(`${packed}/model.safetensors`);
  const q = new Map<string, Tensor>(), d = new Map<string, Tensor>();
  const grids = new Map<string, SpecLinear>();
  for (const [name, t] of tensors) {
    const m = /^(model\.layers\.\d+\.(.+))\.weight$/.exec(name);
    const shape = m && blockModules(config).find(([s]) => s === m[2]);
    if (!m || !shape) {
      q.set(name, t);
      d.set(name, t);
      continue;
    }
    const l = randomLinear(shape[1], shape[2], grid(m[1]!), rng);
    grids.set(m[1]!, l);
    for (const [suffix, p] of Object.entries(pack(l, m[1]!))) q.set(`${m[1]}.${suffix}`, p);
    d.set(name, tensor("f32", [l.N, l.K], denseOf(l)));
  }
  await writeSafetensors(`${packed}/model.safetensors`, q, { format: "pt" });
  await writeSafetensors(`${dense}/model.safetensors`, d, { format: "pt" });
  await Deno.writeTextFile(
    `${packed}/config.json`,
    JSON.stringify({ ...config, quantization_config: quantizationConfig }),
  );
  return { packed, dense, grids };
}

/**
 * A grid's dense weight pruned, and the positions compressed-tensors stores:
 * 2:4 keeps the two largest magnitudes of every four consecutive weights of a
 * row (the first on ties; a kept weight may be 0), "unstructured" zeroes every
 * weight whose code is even and stores the non-zero ones.
 */
export function specPruned(
  l: SpecLinear,
  structure: "2:4" | "unstructured",
): { weight: Float32Array; stored: Uint8Array } {
  const w = specDense(l);
  if (structure === "unstructured") {
    const weight = w.map((v, i) => (l.codes[i]! % 2 === 0 ? 0 : v));
    return { weight, stored: Uint8Array.from(weight, (v) => (v !== 0 ? 1 : 0)) };
  }
  const weight = new Float32Array(w.length), stored = new Uint8Array(w.length);
  for (let i = 0; i < w.length; i += 4) {
    const order = [0, 1, 2, 3].sort((a, b) => Math.abs(w[i + b]!) - Math.abs(w[i + a]!) || a - b);
    for (const j of order.slice(0, 2)) {
      weight[i + j] = w[i + j]!;
      stored[i + j] = 1;
    }
  }
  return { weight, stored };
}

/**
 * compressed-tensors sparse tensors of a pruned weight [N, K], as
 * `bitmask_compress` / `sparse24_bitmask_compress` lay them out: `bitmask`
 * numpy's `packbits(..., bitorder="little")` of the stored positions,
 * `compressed` their values row by row, `row_offsets` (sparse-bitmask) each
 * row's start, `shape` [N, K] (sparse-24-bitmask: [[N], [K]]).
 */
export function sparseSpecTensors(
  { weight: w, stored }: { weight: Float32Array; stored: Uint8Array },
  N: number,
  K: number,
  format: "sparse-bitmask" | "sparse-24-bitmask",
): Record<string, Tensor> {
  const bytes = Math.ceil(K / 8);
  const bitmask = new Uint8Array(N * bytes);
  const values: number[] = [], offsets: bigint[] = [];
  for (let n = 0; n < N; n++) {
    offsets.push(BigInt(values.length));
    for (let k = 0; k < K; k++) {
      if (!stored[n * K + k]) continue;
      bitmask[n * bytes + Math.floor(k / 8)] = bitmask[n * bytes + Math.floor(k / 8)]! |
        (1 << (k % 8));
      values.push(w[n * K + k]!);
    }
  }
  const dims = BigInt64Array.from([BigInt(N), BigInt(K)]);
  return format === "sparse-bitmask"
    ? {
      bitmask: tensor("u8", [N, bytes], bitmask),
      compressed: tensor("f32", [values.length], Float32Array.from(values)),
      row_offsets: tensor("i64", [N], BigInt64Array.from(offsets)),
      shape: tensor("i64", [2], dims),
    }
    : {
      bitmask: tensor("u8", [N, bytes], bitmask),
      compressed: tensor("f32", [N, K / 2], Float32Array.from(values)),
      shape: tensor("i64", [2, 1], dims),
    };
}
