/**
 * Test-only: a TypeScript port of MicroAdam's reference implementation, run
 * open-loop against `optim/micro_adam.ts` (same gradients in, updates compared).
 *
 * It follows, step by step and with the reference's data layout,
 * ISTA-DASLab-Optimizers' `ista_daslab_optimizers/micro_adam/micro_adam.py`
 * (`MicroAdam._initialize_parameter_state` and `update_step`, with its
 * default alpha = 0) and the CUDA kernels that it calls, which live in
 * ISTA-DASLab-Optimizers-CUDA: `kernels/micro_adam/micro_adam_asymm_block_quant.cu`
 * (Q), `micro_adam_asymm_block_quant_inv.cu` (Q⁻¹), `micro_adam_update.cu`
 * (the update from the window) and `kernels/tools/tools_kernel.cu`
 * (`copy_values`, `zerorize_block_components`). Written from reading those
 * files, in our own words; nothing here is the reference's code.
 *
 * What it keeps of the reference:
 * - per parameter of d entries, top-k blocks of bs = min(d, blockSize)
 *   entries: ⌊d/bs⌋ full blocks keep k_many = ⌈bs·density⌉ each, a last,
 *   shorter block keeps k_few = ⌈(d − its start)·density⌉ (0 when there is
 *   none); a window row holds k = full·k_many + k_few entries, block after
 *   block, with block-local int16 indices and bf16 values, [m, k];
 * - a ring index per parameter that advances once per step, and the step
 *   count t shared by all parameters;
 * - the error: 4-bit codes, two per byte (even entry in the high nibble), and a
 *   min and a max per quantization block of `quantBlockSize` entries (one
 *   block when d is smaller);
 * - one step: a ← g + Q⁻¹(e); I[row] ← per-block top-k of |a|; V[row] ← a[I]
 *   (rounded to bf16); the ring index advances; a[I] ← 0; min, max of a per
 *   quantization block; e ← Q(a) with code = ⌊(x − min)/u + ½⌋,
 *   u = (max − min)/15; if weight decay > 0, p ← p·(1 − lr·wd); the update u
 *   from the min(t, m) filled rows, row r weighted by β^((t − 1 − r) mod m),
 *   u = c1·Σ/(√(c2·Σ²) + ε) with c1 = (1 − β1)/(1 − β1^t),
 *   c2 = (1 − β2)/(1 − β2^t); p ← p − lr·u.
 *
 * Precision (the one deliberate difference): the reference runs on the
 * parameters' dtype, bf16 in practice (its kernels reject float32), with
 * float32 kernel arithmetic, float32 β in the kernels, the block min/max in
 * bf16 and the update rounded to bf16. This port keeps gradients and the
 * decoded error in float32, the block min/max in float32 (for bf16 gradients
 * the reference's bf16 min/max is exact too), the kernel's accumulators in
 * float32, scalars in float64, and the window values in bf16 as both
 * implementations do; the parameters are carried in float64 so that the
 * update applied can be read back exactly. A code whose (x − min)/u is NaN
 * (a constant block, u = 0) is 0, as CUDA converts NaN to an integer.
 *
 * @module
 */

import { bf16BitsToF32, f32ToBf16Bits } from "../../core/convert.ts";

/** Hyperparameters, named as the reference's constructor names them. */
export interface ReferenceMicroAdamOptions {
  /** Learning rate `lr`. */
  lr: number;
  /** Window size `m`. */
  m: number;
  /** Density `k_init`. */
  kInit: number;
  /** `quant_block_size` (even: the kernels read two entries at a time). */
  quantBlockSize: number;
  /** The top-k block size (the reference's `d_block_size`, from shared memory). */
  topKBlockSize: number;
  /** `betas`. */
  betas?: readonly [number, number];
  /** `weight_decay`. */
  weightDecay?: number;
  /** `eps`. */
  eps?: number;
}

/** The reference's per-parameter state (`self.state[p]`). */
interface ParamState {
  readonly d: number;
  readonly dBlockSize: number;
  readonly fullBlocks: number;
  readonly kMany: number;
  readonly kFew: number;
  readonly k: number;
  index: number;
  readonly I: Int16Array; // [m, k]
  readonly V: Uint16Array; // [m, k], bf16 bits
  readonly error: Uint8Array; // ⌈d/2⌉ bytes, two 4-bit codes each
  readonly minVals: Float32Array; // [quant blocks]
  readonly maxVals: Float32Array; // [quant blocks]
}

/** The reference's `block_split`: (full blocks, start of the last short block). */
function blockSplit(size: number, blockSize: number): [number, number] {
  if (size < blockSize) return [1, size];
  return [Math.floor(size / blockSize), size - (size % blockSize)];
}

/** The port: parameters it owns (float64) and the reference's `step()`. */
export interface ReferenceMicroAdam {
  /** The parameters, updated in place by `step`. */
  readonly params: Record<string, Float64Array>;
  /** One optimizer step on these gradients (copied, not modified). */
  step(grads: Readonly<Record<string, Float32Array>>): void;
}

/**
 * Builds the port on a copy of `params`.
 *
 * @param params Initial parameters.
 * @param options The reference's hyperparameters.
 * @returns The port.
 */
export function referenceMicroAdam(
  params: Readonly<Record<string, ArrayLike<number>>>,
  options: ReferenceMicroAdamOptions,
): ReferenceMicroAdam {
  const { lr, m, kInit, quantBlockSize: qbs, topKBlockSize } = options;
  const [beta1, beta2] = options.betas ?? [0.9, 0.999];
  const wd = options.weightDecay ?? 0, eps = options.eps ?? 1e-8;
  if (qbs % 2 !== 0) throw new RangeError("the reference's quantization blocks are even");
  const own: Record<string, Float64Array> = {};
  const states: Record<string, ParamState> = {};
  for (const [name, p] of Object.entries(params)) {
    own[name] = Float64Array.from(p);
    const d = p.length;
    const dBlockSize = d < topKBlockSize ? d : topKBlockSize;
    if (dBlockSize > 32768) throw new RangeError("the reference's indices are int16");
    const [fullBlocks, lastStart] = blockSplit(d, dBlockSize);
    const kMany = Math.ceil(dBlockSize * kInit);
    const kFew = Math.ceil((d - lastStart) * kInit);
    const k = kMany * fullBlocks + kFew;
    const [quantFull] = blockSplit(d, qbs);
    states[name] = {
      d,
      dBlockSize,
      fullBlocks,
      kMany,
      kFew,
      k,
      index: 0,
      I: new Int16Array(m * k),
      V: new Uint16Array(m * k),
      error: new Uint8Array(Math.ceil(d / 2)),
      minVals: new Float32Array(quantFull + 1),
      maxVals: new Float32Array(quantFull + 1),
    };
  }
  let steps = 0;

  /** Code j of the packed error (high nibble for even j). */
  const code = (e: Uint8Array, j: number): number =>
    j % 2 === 0 ? e[j >> 1]! >> 4 : e[j >> 1]! & 0x0f;

  /** Top-k of |a| over [s, s + len): block-local indices (ties: lower index). */
  function topK(a: Float32Array, s: number, len: number, k: number): number[] {
    const order = Array.from({ length: len }, (_, i) => i);
    order.sort((x, y) => Math.abs(a[s + y]!) - Math.abs(a[s + x]!) || x - y);
    return order.slice(0, k);
  }

  function updateStep(p: Float64Array, grad: Float32Array, st: ParamState): void {
    const { d, dBlockSize, fullBlocks, kMany, kFew, k, I, V, error, minVals, maxVals } = st;
    // Step 4: a = g + Q⁻¹(e), each dequantized value rounded to the tensor's dtype.
    for (let j = 0; j < d; j++) {
      const b = Math.floor(j / qbs);
      const lo = minVals[b]!, u = (maxVals[b]! - lo) / 15;
      grad[j] = grad[j]! + Math.fround(code(error, j) * u + lo);
    }
    // Step 5: I[index] = top-k per block; V[index] = a[I] (bf16).
    const row = st.index * k;
    for (let b = 0; b < fullBlocks; b++) {
      topK(grad, b * dBlockSize, dBlockSize, kMany).forEach((i, c) => {
        I[row + b * kMany + c] = i;
      });
    }
    if (kFew > 0) {
      const s = fullBlocks * dBlockSize;
      topK(grad, s, d - s, kFew).forEach((i, c) => {
        I[row + fullBlocks * kMany + c] = i;
      });
    }
    for (let c = 0; c < k; c++) {
      const di = Math.floor(c / kMany) * dBlockSize + I[row + c]!;
      V[row + c] = f32ToBf16Bits(grad[di]!);
    }
    st.index = (st.index + 1) % m;
    // Step 6: a[I] = 0 (the row just written).
    for (let c = 0; c < k; c++) grad[Math.floor(c / kMany) * dBlockSize + I[row + c]!] = 0;
    // Step 7: min and max of a per quantization block.
    for (let b = 0; b * qbs < d; b++) {
      let lo = Infinity, hi = -Infinity;
      for (let j = b * qbs; j < Math.min(d, (b + 1) * qbs); j++) {
        lo = Math.min(lo, grad[j]!);
        hi = Math.max(hi, grad[j]!);
      }
      minVals[b] = lo;
      maxVals[b] = hi;
    }
    // Step 8: e = Q(a).
    error.fill(0);
    for (let j = 0; j < d; j++) {
      const b = Math.floor(j / qbs);
      const lo = minVals[b]!, u = (maxVals[b]! - lo) / 15;
      const q = Math.floor((grad[j]! - lo) / u + 0.5);
      error[j >> 1] = error[j >> 1]! | ((Number.isNaN(q) ? 0 : q) << (j % 2 === 0 ? 4 : 0));
    }
    // Weight decay, before the update.
    if (wd > 0) { for (let j = 0; j < d; j++) p[j] = p[j]! * (1 - lr * wd); }
    // Steps 10–11: the update from the window (the kernel), then p −= lr·u.
    const t = steps;
    const c1 = (1 - beta1) / (1 - beta1 ** t), c2 = (1 - beta2) / (1 - beta2 ** t);
    const memM = new Float32Array(dBlockSize), memV = new Float32Array(dBlockSize);
    for (let blk = 0; blk * dBlockSize < d; blk++) {
      const dStart = blk * dBlockSize;
      const kStart = blk * kMany, kEnd = Math.min(k, kStart + kMany);
      memM.fill(0);
      memV.fill(0);
      for (let r = 0; r < Math.min(t, m); r++) {
        const age = (t - 1 - r) % m;
        const w1 = beta1 ** age, w2 = beta2 ** age;
        for (let c = kStart; c < kEnd; c++) {
          const i = I[r * k + c]!, v = bf16BitsToF32(V[r * k + c]!);
          memM[i] = memM[i]! + w1 * v;
          memV[i] = memV[i]! + w2 * v * v;
        }
      }
      for (let i = 0; i < Math.min(dBlockSize, d - dStart); i++) {
        const u = (c1 * memM[i]!) / (Math.sqrt(c2 * memV[i]!) + eps);
        p[dStart + i] = p[dStart + i]! - lr * u;
      }
    }
  }

  return {
    params: own,
    step(grads: Readonly<Record<string, Float32Array>>): void {
      steps++;
      for (const [name, p] of Object.entries(own)) {
        const g = grads[name];
        if (g === undefined || g.length !== p.length) throw new TypeError(`no gradient '${name}'`);
        updateStep(p, g.slice(), states[name]!);
      }
    },
  };
}
