import assert from "node:assert/strict";
import {
  allocate,
  dims2,
  DTYPES,
  fromArray,
  isPlainFloat,
  itemSize,
  numel,
  reshape,
  sliceCols,
  sliceRows,
  type Tensor,
  tensor,
  transpose,
  zeros,
} from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";

const STORAGE: Record<string, string> = {
  f64: "Float64Array",
  f32: "Float32Array",
  f16: "Float16Array",
  bf16: "Uint16Array",
  f8e4m3: "Uint8Array",
  f8e5m2: "Uint8Array",
  i8: "Int8Array",
  u8: "Uint8Array",
  i16: "Int16Array",
  u16: "Uint16Array",
  i32: "Int32Array",
  u32: "Uint32Array",
  i64: "BigInt64Array",
  bool: "Uint8Array",
};

Deno.test("allocate, zeros and itemSize use the documented storage for every dtype", () => {
  for (const d of DTYPES) {
    const a = allocate(d, 3);
    assert.equal(a.constructor.name, STORAGE[d], d);
    assert.equal(a.BYTES_PER_ELEMENT, itemSize(d), d);
    const z = zeros(d, [2, 3]);
    assert.equal(z.data.length, 6);
    assert.ok([...z.data].every((v) => v === 0 || v === 0n), d);
  }
  assert.throws(() => itemSize("f128" as never), TypeError);
});

Deno.test("tensor() checks the shape and the storage length, and copies the shape", () => {
  const shape = [2, 3];
  const t = tensor("f32", shape, new Float32Array(6));
  shape[0] = 99;
  assert.deepEqual(t.shape, [2, 3]);
  assert.equal(numel([]), 1);
  assert.equal(tensor("f64", []).data.length, 1);
  assert.throws(() => tensor("f32", [2, 3], new Float32Array(5)), RangeError);
  assert.throws(() => tensor("f32", [-1]), RangeError);
  assert.throws(() => tensor("f32", [1.5]), RangeError);
});

Deno.test("fromArray reads nested arrays, takes a flat array with a shape, and rejects ragged or non-number input", () => {
  const t = fromArray([[1, 2, 3], [4, 5, 6]]);
  assert.equal(t.dtype, "f32");
  assert.deepEqual(t.shape, [2, 3]);
  assert.deepEqual([...t.data], [1, 2, 3, 4, 5, 6]);
  const f = fromArray([1, 2, 3, 4], { dtype: "f64", shape: [2, 2] });
  assert.equal(f.data.constructor, Float64Array);
  assert.deepEqual(f.shape, [2, 2]);
  assert.deepEqual(fromArray([]).shape, [0]);
  assert.throws(() => fromArray([[1, 2], [3, 4, 5], [6]]), RangeError); // ragged with a matching total
  assert.throws(() => fromArray([1, 2, 3], { shape: [2, 2] }), RangeError);
  assert.throws(() => fromArray([[1], ["x"]]), TypeError);
});

Deno.test("reshape infers one -1 axis, shares storage, and rejects impossible shapes", () => {
  const t = tensor("i32", [2, 6], Int32Array.from({ length: 12 }, (_, i) => i));
  const r = reshape(t, [3, -1]);
  assert.deepEqual(r.shape, [3, 4]);
  assert.equal(r.data, t.data);
  assert.deepEqual(reshape(t, [-1]).shape, [12]);
  assert.deepEqual(reshape(t, [2, 2, -1]).shape, [2, 2, 3]);
  assert.deepEqual(reshape(tensor("f32", [0, 3]), [-1, 3]).shape, [0, 3]);
  assert.throws(() => reshape(t, [5, -1]), RangeError);
  assert.throws(() => reshape(t, [-1, -1]), RangeError);
  assert.throws(() => reshape(t, [-2, -6]), RangeError);
  assert.throws(() => reshape(t, [13]), RangeError);
});

function randomMatrix(rows: number, cols: number, seed: number): Tensor<"f64"> {
  const rng = prng(seed);
  return tensor(
    "f64",
    [rows, cols],
    Float64Array.from({ length: rows * cols }, () => rng.normal()),
  );
}

Deno.test("sliceRows and sliceCols copy exactly the elements a double loop selects", () => {
  const [R, C] = [7, 9];
  const m = randomMatrix(R, C, 1);
  const at = (r: number, c: number) => m.data[r * C + c]!;
  const rows = sliceRows(m, 2, 5);
  assert.deepEqual(rows.shape, [3, C]);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < C; c++) assert.equal(rows.data[r * C + c], at(r + 2, c));
  }
  const cols = sliceCols(m, 3, 7);
  assert.deepEqual(cols.shape, [R, 4]);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < 4; c++) assert.equal(cols.data[r * 4 + c], at(r, c + 3));
  }
  rows.data[0] = 1e9;
  assert.notEqual(at(2, 0), 1e9); // a copy
  const cube = tensor("u8", [3, 2, 2], Uint8Array.from({ length: 12 }, (_, i) => i));
  assert.deepEqual([...sliceRows(cube, 1, 2).data], [4, 5, 6, 7]);
  assert.deepEqual(sliceRows(m, 4, 4).shape, [0, C]);
  assert.throws(() => sliceRows(m, 5, 2), RangeError);
  assert.throws(() => sliceRows(m, 0, R + 1), RangeError);
  assert.throws(() => sliceRows(m, 0.5, 2), RangeError);
  assert.throws(() => sliceRows(tensor("f32", []), 0, 0), RangeError);
  assert.throws(() => sliceCols(m, 0, C + 1), RangeError);
  assert.throws(() => sliceCols(cube, 0, 1), RangeError);
});

Deno.test("transpose matches the index definition across block boundaries, for numbers and bigints", () => {
  for (const [R, C] of [[1, 1], [37, 70], [64, 33], [0, 5]] as const) {
    const m = randomMatrix(R, C, R * 100 + C);
    const t = transpose(m);
    assert.deepEqual(t.shape, [C, R]);
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) assert.equal(t.data[c * R + r], m.data[r * C + c]);
    }
    assert.deepEqual([...transpose(t).data], [...m.data]);
  }
  const b = tensor("i64", [2, 3], new BigInt64Array([1n, 2n, 3n, 4n, 5n, 6n]));
  assert.deepEqual([...transpose(b).data], [1n, 4n, 2n, 5n, 3n, 6n]);
  assert.throws(() => transpose(tensor("f32", [2, 2, 2])), RangeError);
});

Deno.test("dims2 and isPlainFloat describe a tensor", () => {
  assert.deepEqual(dims2(tensor("f32", [4, 5])), [4, 5]);
  assert.throws(() => dims2(tensor("f32", [4]), "weight"), /'weight' must be 2-D/);
  assert.ok(isPlainFloat(tensor("f16", [1])));
  assert.ok(!isPlainFloat(tensor("bf16", [1])));
});
