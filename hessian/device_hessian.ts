/**
 * Hessians that stay on the GPU: the mean of x·xᵀ accumulated where the
 * activations are (a calibration runner, or {@linkcode hessianOnDevice}) and
 * handed to the solvers without a round trip through the host. Only its
 * diagonal is on the host (dead columns, act-order and the damping unit need
 * it); `obsSolve` (GPTQ, SparseGPT, joint), `wanda` and
 * `evaluateLayerError` read the device buffer directly, and everything else
 * asks for the host copy ({@linkcode hostHessian}), read back once.
 *
 * The buffer is the full symmetric matrix [cols, cols] in float32 (the sum
 * accumulated in float32, then scaled by 1/count in float32), where a host
 * `Hessian` holds float64: the GPU solvers read float32 either way.
 *
 * Web-standard only.
 *
 * @module
 */

import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import {
  bindingLimit,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
} from "../kernels/backend.ts";
import { encodeHessian, encodeHessianFinish } from "../kernels/hessian_kernel.ts";
import type { Hessian } from "./hessian.ts";
import { checkFiniteInputs } from "./_finite_inputs.ts";

/** A Hessian (mean of x·xᵀ) whose matrix lives in a GPU buffer. */
export interface DeviceHessian {
  /** Tells it from a host {@linkcode Hessian}. */
  readonly kind: "device";
  /** Input features (the layer's columns). */
  readonly cols: number;
  /** Tokens accumulated. */
  readonly count: number;
  /** The GPU that holds it. */
  readonly gpu: Gpu;
  /**
   * The mean of x·xᵀ, [cols, cols] f32, symmetric (both triangles). Read
   * only; invalid after {@linkcode DeviceHessian.release}.
   */
  readonly buffer: GPUBuffer;
  /** Its diagonal, on the host. */
  readonly diag: Float64Array;
  /** Whether the buffer was released. */
  readonly released: boolean;
  /**
   * The host copy (float64 of the float32 values), read back on the first call
   * and shared by later ones.
   *
   * @returns The Hessian.
   * @throws {Error} after `release`.
   */
  toHost(): Promise<Hessian>;
  /** Frees the buffer (idempotent); a host copy already made stays valid. */
  release(): void;
}

/** A Hessian on the host or on a device. */
export type AnyHessian = Hessian | DeviceHessian;

/**
 * Whether a Hessian lives on a device.
 *
 * @param h A Hessian.
 * @returns True for a {@linkcode DeviceHessian}.
 */
export function isDeviceHessian(h: unknown): h is DeviceHessian {
  return h !== null && typeof h === "object" && (h as { kind?: unknown }).kind === "device";
}

/**
 * The host form of any Hessian (a device one is read back, once).
 *
 * @param h The Hessian.
 * @returns The host Hessian.
 */
export function hostHessian(h: AnyHessian): Promise<Hessian> {
  return isDeviceHessian(h) ? h.toHost() : Promise.resolve(h);
}

/**
 * Wraps a finished device buffer (full symmetric mean of x·xᵀ) as a
 * {@linkcode DeviceHessian} (see `encodeHessianFinish` in kernels/hessian_kernel.ts
 * for the pass that makes one from an accumulated sum). The wrapper owns the
 * buffer: `release` destroys it.
 *
 * @param gpu The GPU.
 * @param buffer [cols, cols] f32, symmetric.
 * @param cols Order.
 * @param count Tokens it averages over.
 * @param diag Its diagonal.
 * @param onRelease Called once when the buffer is released (e.g. memory accounting).
 * @returns The Hessian.
 */
export function wrapDeviceHessian(
  gpu: Gpu,
  buffer: GPUBuffer,
  cols: number,
  count: number,
  diag: Float64Array,
  onRelease?: () => void,
): DeviceHessian {
  if (buffer.size < cols * cols * 4 || diag.length !== cols) {
    throw new RangeError(
      `Cannot wrap a device Hessian of ${cols} columns: the buffer has ${buffer.size} bytes and the diagonal ${diag.length} values`,
    );
  }
  let released = false;
  let host: Promise<Hessian> | null = null;
  return {
    kind: "device",
    cols,
    count,
    gpu,
    buffer,
    diag,
    get released() {
      return released;
    },
    toHost() {
      if (host) return host;
      if (released) return Promise.reject(new Error("Cannot read a released device Hessian"));
      host = (async () => {
        const batch = new GpuBatch(gpu);
        const { data } = await batch.submit([{ buffer, offset: 0, size: cols * cols * 4 }]);
        return { cols, count, xtx: Float64Array.from(new Float32Array(data[0]!)) };
      })();
      return host;
    },
    release() {
      if (released) return;
      released = true;
      buffer.destroy();
      onRelease?.();
    },
  };
}

/**
 * The Hessian (mean of x·xᵀ) of host inputs, computed and kept on the GPU.
 *
 * @example
 * ```ts ignore
 * import { hessianOnDevice } from "./device_hessian.ts";
 * import { gptq } from "../quantizers/gptq.ts";
 * const h = await hessianOnDevice(gpu, x); // x: [tokens, cols]
 * const q = await gptq(w, h, { bits: 4, groupSize: 128 });
 * h.release();
 * ```
 * @param gpu The GPU.
 * @param x Inputs [tokens, cols] (f32, or f16 on a device with shader-f16;
 *   other float dtypes are converted to f32).
 * @returns The device Hessian (release it when done).
 * @throws {RangeError} for an empty or non-finite input, or when [cols, cols]
 *   f32 or X exceeds one storage binding.
 */
export async function hessianOnDevice(gpu: Gpu, x: Tensor): Promise<DeviceHessian> {
  const [tokens, cols] = dims2(x, "x");
  if (tokens === 0) throw new RangeError("Cannot make a device Hessian of 0 tokens");
  const input = x.dtype === "f32" || (x.dtype === "f16" && gpu.f16)
    ? x
    : tensor("f32", [tokens, cols], asFloat32(x));
  const data = input.data as Float32Array | Float16Array;
  checkFiniteInputs(data, "x");
  const limit = bindingLimit(gpu);
  if (cols * cols * 4 > limit || data.byteLength > limit) {
    throw new RangeError(
      `Cannot make a device Hessian of [${tokens}, ${cols}] inputs: H (${
        cols * cols * 4
      } bytes) or X (${data.byteLength} bytes) exceeds the storage binding limit of ${limit} bytes`,
    );
  }
  const xBuf = uploadBuffer(gpu, data, "hessian:x");
  const out = storageBuffer(gpu, cols * cols * 4, "hessian:xtx");
  const diagBuf = storageBuffer(gpu, cols * 4, "hessian:diag");
  try {
    const batch = new GpuBatch(gpu);
    encodeHessian(batch, xBuf, tokens, cols, out, { inputs: input.dtype as "f32" | "f16" }, 0);
    encodeHessianFinish(batch, out, cols, 1 / tokens, diagBuf);
    const { data: [d] } = await batch.submit([diagBuf]);
    return wrapDeviceHessian(gpu, out, cols, tokens, Float64Array.from(new Float32Array(d!)));
  } catch (e) {
    out.destroy();
    throw e;
  } finally {
    xBuf.destroy();
    diagBuf.destroy();
  }
}
