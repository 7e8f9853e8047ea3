/**
 * Library-internal: the check of one stored tensor of a packed linear (present,
 * of an expected dtype and shape), with messages naming the tensor and the
 * configuration it must fit. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../../core/tensor.ts";

/**
 * A checker of a packed linear's tensors.
 *
 * @param tensors The linear's tensors by key.
 * @param name The module's name (tensor names are `${name}.${key}`).
 * @param shape The linear's [out, in].
 * @param cfg The settings the shapes follow (e.g. `bits 4, group_size 128`).
 * @param missing What a missing tensor's message adds in parentheses.
 * @returns `need(key, dtypes, dims)`: the tensor, or a RangeError naming what is wrong.
 */
export function tensorChecker<K extends string>(
  tensors: Partial<Record<K, Tensor>>,
  name: string,
  shape: readonly [number, number],
  cfg: string,
  missing = cfg,
): (key: K, dtypes: readonly string[], dims: number[]) => Tensor {
  const [N, K] = shape;
  return (key, dtypes, dims) => {
    const t = tensors[key];
    if (!t) throw new RangeError(`missing tensor ${name}.${key} (${missing})`);
    if (!dtypes.includes(t.dtype)) {
      throw new RangeError(
        `tensor ${name}.${key} has dtype ${t.dtype}; expected ${dtypes.join(" or ")}`,
      );
    }
    if (t.shape.join() !== dims.join()) {
      throw new RangeError(
        `tensor ${name}.${key} has shape [${t.shape}]; [${dims}] fits [${N}, ${K}] with ${cfg}`,
      );
    }
    return t;
  };
}
