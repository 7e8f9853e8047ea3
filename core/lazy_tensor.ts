/**
 * Tensors whose values are computed when they are first read: a
 * {@linkcode Tensor} like any other (its `data` is the values), except that
 * the work of filling them is done by the first reader, if any. A pipeline
 * hands out such a tensor where the values already exist elsewhere (a
 * compressed weight that stays on the GPU, whose host copy only a writer may
 * want), so that nobody waits for host work that nobody needs.
 *
 * The storage is allocated when the tensor is made (an untouched allocation
 * costs no memory pages on common systems) and filled in place, so the
 * object `data` returns is the same before and after: code that tells tensors
 * apart by their storage ({@linkcode storageIdentity}, e.g. the device-copy
 * registry) sees one tensor without filling it. Web-standard only.
 *
 * @module
 */

import { type DType, type DTypeStorage, type Tensor, tensor } from "./tensor.ts";

const PENDING = Symbol("lazyTensor pending");

interface LazyRecord<D extends DType> extends Tensor<D> {
  [PENDING]: { storage: DTypeStorage[D]; fill: ((out: DTypeStorage[D]) => void) | null };
}

/**
 * A tensor whose values `fill` writes into its storage the first time its
 * `data` is read (once; a `fill` that throws is called again by the next
 * read). The values must not depend on when they are read: `fill` may run
 * at any later time, or never.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lazyTensor, isFilled } from "./lazy_tensor.ts";
 * let calls = 0;
 * const t = lazyTensor("f32", [2], (out) => { calls++; out.set([1, 2]); });
 * assert.equal(calls, 0);
 * assert.deepEqual([...t.data], [1, 2]);
 * assert.equal(t.data, t.data);
 * assert.equal(calls, 1);
 * assert(isFilled(t));
 * ```
 *
 * @param dtype The element type.
 * @param shape Axis extents.
 * @param fill Writes every element of `out` (zero-filled, of `numel(shape)` elements).
 * @returns The tensor.
 */
export function lazyTensor<D extends DType>(
  dtype: D,
  shape: readonly number[],
  fill: (out: DTypeStorage[D]) => void,
): Tensor<D> {
  if (typeof fill !== "function") {
    throw new TypeError(`Cannot make a lazy tensor as 'fill' must be a function`);
  }
  const state = { storage: tensor(dtype, shape).data, fill } as LazyRecord<D>[typeof PENDING];
  const t = { dtype, shape: [...shape] } as unknown as LazyRecord<D>;
  Object.defineProperty(t, PENDING, { value: state, enumerable: false });
  Object.defineProperty(t, "data", {
    enumerable: true,
    get(): DTypeStorage[D] {
      if (state.fill !== null) {
        state.fill(state.storage);
        state.fill = null;
      }
      return state.storage;
    },
  });
  return t;
}

/**
 * Whether a tensor's values exist: true for every tensor but a
 * {@linkcode lazyTensor} whose `data` has not been read yet.
 *
 * @param t The tensor.
 * @returns Whether reading `t.data` does no work.
 */
export function isFilled(t: Tensor): boolean {
  const p = (t as Partial<LazyRecord<DType>>)[PENDING];
  return p === undefined || p.fill === null;
}

/**
 * The object that identifies a tensor's storage, without filling a lazy
 * tensor: `t.data` itself (for a {@linkcode lazyTensor}, the storage `data`
 * will return). For identity only (a map key): its values may not be there
 * yet, so it is typed as a plain object.
 *
 * @param t The tensor.
 * @returns Its storage, as an identity.
 */
export function storageIdentity(t: Tensor): object {
  const p = (t as Partial<LazyRecord<DType>>)[PENDING];
  return p !== undefined ? p.storage : t.data;
}
