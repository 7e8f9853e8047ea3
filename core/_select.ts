/**
 * Library-internal: the k-th smallest value of an array in expected linear
 * time (quickselect with median-of-three pivots, falling back to a full sort
 * when partitions stay unbalanced). Web-standard only.
 *
 * @module
 */

/**
 * The value of rank `k` (0-based) among `values`, as if sorted ascending.
 * Reorders `values` in place (pass a scratch copy). No NaN allowed.
 *
 * @param values Scratch values; reordered.
 * @param k Rank in [0, values.length).
 * @returns The k-th smallest value.
 */
export function kthSmallestInPlace(values: Float64Array, k: number): number {
  let lo = 0, hi = values.length - 1;
  let budget = 2 * Math.ceil(Math.log2(values.length + 1)) + 8;
  while (hi > lo) {
    if (budget-- === 0) {
      const rest = values.subarray(lo, hi + 1).sort();
      return rest[k - lo]!;
    }
    // median of three as the pivot value
    const mid = (lo + hi) >>> 1;
    const a = values[lo]!, b = values[mid]!, c = values[hi]!;
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : (a < c ? a : b < c ? c : b);
    // Hoare partition: [lo, j] ≤ pivot ≤ [i, hi]
    let i = lo, j = hi;
    while (i <= j) {
      while (values[i]! < pivot) i++;
      while (values[j]! > pivot) j--;
      if (i <= j) {
        const t = values[i]!;
        values[i] = values[j]!;
        values[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return values[k]!; // between j and i: equal to the pivot
  }
  return values[k]!;
}
