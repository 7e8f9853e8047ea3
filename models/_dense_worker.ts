/**
 * Worker of {@linkcode denseWorker} (`_dense_on_worker.ts`): makes a dense
 * float weight from a uniform grid (dequantized, rows reordered, rounded to
 * the dtype asked for) or from a stored weight (widened to float32, rows
 * reordered), replying with the values' buffer (transferred). Web-standard
 * only.
 *
 * @module
 */

import { dequantizeGrid } from "../core/uniform_grid.ts";
import { convert } from "../core/convert.ts";
import { tensor } from "../core/tensor.ts";
import type { DenseJob } from "./_dense_on_worker.ts";
import { gatherRows } from "./_gather_rows.ts";

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<DenseJob>) => void) | null;
  postMessage(m: unknown, transfer?: Transferable[]): void;
};

scope.onmessage = (e: MessageEvent<DenseJob>) => {
  const job = e.data;
  try {
    const { rows, cols, rowFrom } = job;
    let data: Float32Array | Float16Array | Uint16Array;
    if (job.kind === "grid") {
      let w = dequantizeGrid(job.codes, job.scales, job.zeros, job.gIdx, rows, cols);
      if (rowFrom !== null) w = gatherRows(w, cols, rowFrom);
      data = job.dtype === "f32" ? w : convert(tensor("f32", [rows, cols], w), job.dtype).data;
    } else {
      let w = job.dtype === "f32"
        ? job.data as Float32Array
        : convert(tensor(job.dtype, [rows, cols], job.data as never), "f32").data;
      if (rowFrom !== null) w = gatherRows(w, cols, rowFrom);
      data = w;
    }
    scope.postMessage({ id: job.id, data }, [data.buffer as ArrayBuffer]);
  } catch (err) {
    // The error's class goes back with its message (a RangeError for arrays that do not match).
    const kind = err instanceof RangeError
      ? "RangeError"
      : err instanceof TypeError
      ? "TypeError"
      : "Error";
    scope.postMessage({ id: job.id, error: String((err as Error)?.message ?? err), kind });
  }
};
