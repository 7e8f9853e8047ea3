import assert from "node:assert/strict";
import { isFilled, lazyTensor, storageIdentity } from "../../core/lazy_tensor.ts";
import { tensor } from "../../core/tensor.ts";

Deno.test("lazyTensor() fills its storage once, on the first read of data, in place", () => {
  let calls = 0;
  const t = lazyTensor("f32", [2, 3], (out) => {
    calls++;
    for (let i = 0; i < out.length; i++) out[i] = i * 0.5;
  });
  assert.equal(calls, 0);
  assert.equal(isFilled(t), false);
  assert.deepEqual(t.shape, [2, 3]);
  const id = storageIdentity(t);
  assert.equal(calls, 0, "storageIdentity does not fill");
  const d = t.data;
  assert.equal(d, id, "data is the storage the identity named");
  assert.deepEqual([...d], [0, 0.5, 1, 1.5, 2, 2.5]);
  assert.equal(t.data, d);
  assert.equal(calls, 1);
  assert(isFilled(t));
  // Spreading a lazy tensor reads its values (a plain copy of the record).
  assert.deepEqual([...{ ...t }.data], [...d]);
});

Deno.test("lazyTensor() calls a failed fill again on the next read", () => {
  let calls = 0;
  const t = lazyTensor("i32", [2], (out) => {
    if (++calls === 1) throw new Error("not yet");
    out.set([7, 8]);
  });
  assert.throws(() => t.data, /not yet/);
  assert.equal(isFilled(t), false);
  assert.deepEqual([...t.data], [7, 8]);
  assert.equal(calls, 2);
});

Deno.test("storageIdentity() of a plain tensor is its data; bad shapes and fills are refused", () => {
  const p = tensor("f32", [2], new Float32Array([1, 2]));
  assert.equal(storageIdentity(p), p.data);
  assert(isFilled(p));
  assert.throws(() => lazyTensor("f32", [-1], () => {}), RangeError);
  assert.throws(() => lazyTensor("f32", [1], null as never), /'fill' must be a function/);
});
