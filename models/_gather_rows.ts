/**
 * Library-internal: the rows of a row-major matrix in another order, the one
 * gather that reorders q/k rows between layouts and interleaves gate and up
 * rows. Web-standard only (a worker thread imports it too).
 *
 * @module
 */

/**
 * Row r of the result is row `from[r]` of `w` [·, cols].
 *
 * @param w Values, row-major.
 * @param cols Values per row.
 * @param from The source row of each row of the result.
 * @returns A fresh [from.length, cols] array.
 */
export function gatherRows(w: Float32Array, cols: number, from: Int32Array): Float32Array {
  const out = new Float32Array(from.length * cols);
  for (let r = 0; r < from.length; r++) {
    out.set(w.subarray(from[r]! * cols, (from[r]! + 1) * cols), r * cols);
  }
  return out;
}
