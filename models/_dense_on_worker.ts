/**
 * Library-internal: dense float weights made on a worker thread, so that the
 * host work of a pipeline that feeds a GPU (widening the next block's stored
 * weights, dequantizing finished ones for a dense writer) leaves the main
 * thread free to submit the GPU's next work. The values equal those the
 * main thread computes (`dequantize()` or `f32Weight()`, the row order, then
 * `convert()`), bit for bit: the same functions run in the worker. Uses a Web
 * Worker (Deno or a browser).
 *
 * @module
 */

import { type Tensor, tensor } from "../core/tensor.ts";
import type { QuantizedWeight } from "../quantizers/quantized_weight.ts";
import type { WeightDType } from "./model.ts";

/** What the worker is sent (library-internal). */
export type DenseJob =
  & { id: number; rows: number; cols: number; rowFrom: Int32Array | null }
  & (
    | {
      kind: "grid";
      codes: Uint8Array | Uint16Array;
      scales: Float32Array;
      zeros: Float32Array;
      gIdx: Int32Array;
      dtype: "f32" | "f16" | "bf16";
    }
    | { kind: "widen"; data: Float32Array | Float16Array | Uint16Array; dtype: WeightDType }
  );

interface Reply {
  id: number;
  data?: Float32Array | Float16Array | Uint16Array;
  error?: string;
  kind?: "RangeError" | "TypeError" | "Error";
}

const ERRORS = { RangeError, TypeError, Error } as const;

/** A worker thread that makes dense weights (jobs run in the order they are sent). */
export interface DenseWorker {
  /**
   * Ŵ of a uniform grid with row r taken from row `rowFrom[r]`, in `dtype`.
   *
   * @param q The grid (its arrays are copied to the worker).
   * @param dtype The result's dtype.
   * @param rowFrom The source row of each row (a permutation), or null.
   * @returns The dense weight [rows, cols].
   */
  grid<D extends "f32" | "f16" | "bf16">(
    q: QuantizedWeight,
    dtype: D,
    rowFrom: Int32Array | null,
  ): Promise<Tensor<D>>;
  /**
   * A stored weight widened to float32, row r taken from row `rowFrom[r]`.
   *
   * @param stored The weight; its buffer is transferred (the caller no longer has it).
   * @param rowFrom The source row of each row (a permutation), or null.
   * @returns The float32 weight [rows, cols].
   */
  widen(stored: Tensor<WeightDType>, rowFrom: Int32Array | null): Promise<Tensor<"f32">>;
  /** Stops the worker (pending results are rejected). */
  close(): void;
}

/**
 * Starts a worker.
 *
 * @returns The worker.
 */
export function denseWorker(): DenseWorker {
  const url = new URL("./_dense_worker.ts", import.meta.url).href;
  const worker = new Worker(url, { type: "module" });
  const pending = new Map<number, { resolve(r: Reply): void; reject(e: Error): void }>();
  let nextId = 0, closed = false;
  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  worker.onmessage = (e: MessageEvent<Reply>) => {
    const p = pending.get(e.data.id);
    if (!p) return;
    pending.delete(e.data.id);
    if (e.data.error !== undefined) p.reject(new ERRORS[e.data.kind ?? "Error"](e.data.error));
    else p.resolve(e.data);
  };
  worker.onerror = (e) => {
    e.preventDefault();
    failAll(new Error(`dense worker failed: ${e.message}`));
  };
  const send = (job: DenseJob, transfer: Transferable[]): Promise<Reply> => {
    if (closed) return Promise.reject(new Error("Cannot use a closed dense worker"));
    return new Promise<Reply>((resolve, reject) => {
      pending.set(job.id, { resolve, reject });
      worker.postMessage(job, transfer);
    });
  };
  const checkRows = (rows: number, rowFrom: Int32Array | null) => {
    if (rowFrom !== null && rowFrom.length !== rows) {
      throw new RangeError(`Cannot reorder ${rows} rows by an order of ${rowFrom.length}`);
    }
  };
  return {
    async grid(q, dtype, rowFrom) {
      // The worker's dequantizeGrid checks the arrays against the shape.
      const [rows, cols] = q.shape;
      checkRows(rows, rowFrom);
      const { codes, scales, zeros, gIdx } = q;
      const reply = await send(
        { id: nextId++, kind: "grid", rows, cols, rowFrom, codes, scales, zeros, gIdx, dtype },
        [],
      );
      return tensor(dtype, [rows, cols], reply.data as Tensor<typeof dtype>["data"]);
    },
    async widen(stored, rowFrom) {
      const [rows, cols] = [stored.shape[0]!, stored.shape[1]!];
      if (stored.shape.length !== 2 || stored.data.length !== rows * cols) {
        throw new RangeError(`Cannot widen a weight of shape [${stored.shape}]: it must be 2-D`);
      }
      checkRows(rows, rowFrom);
      const data = stored.data;
      const reply = await send(
        { id: nextId++, kind: "widen", rows, cols, rowFrom, data, dtype: stored.dtype },
        [data.buffer as ArrayBuffer],
      );
      return tensor("f32", [rows, cols], reply.data as Float32Array);
    },
    close() {
      if (closed) return;
      closed = true;
      worker.terminate();
      failAll(new Error("dense worker closed"));
    },
  };
}
