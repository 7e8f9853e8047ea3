import assert from "node:assert/strict";
import {
  pagedArrays,
  pagingOptions,
  stopPagingWorker,
  touchPages,
} from "../../kernels/_paged_arrays.ts";

function assertZeroArrays(arrays: Uint8Array[], sizes: number[]): void {
  assert.equal(arrays.length, sizes.length);
  const buffers = new Set<ArrayBufferLike>();
  arrays.forEach((a, i) => {
    assert.equal(a.byteLength, sizes[i]);
    assert.equal(a.byteOffset, 0);
    assert.equal(a.buffer.byteLength, sizes[i]);
    buffers.add(a.buffer);
    // Every page's first byte and a stride of others are zero.
    for (let j = 0; j < a.length; j += 1021) assert.equal(a[j], 0);
  });
  assert.equal(buffers.size, arrays.length, "each array has its own buffer");
}

Deno.test("pagedArrays() gives zero-filled arrays of the asked sizes, on a worker or on this thread", async () => {
  const large = [24 << 20, 12 << 20, 4096 + 3]; // 36 MiB in all: a worker
  const small = [10, 0, 4097]; // on this thread
  for (const worker of [true, false]) {
    pagingOptions.worker = worker;
    for (const sizes of [large, small]) {
      const paged = pagedArrays(sizes);
      paged.whileGpuWorks();
      assertZeroArrays(await paged.ready, sizes);
    }
  }
  pagingOptions.worker = true;
  stopPagingWorker();
});

Deno.test("pagedArrays() serves overlapping and consecutive requests from one worker", async () => {
  pagingOptions.worker = true;
  const a = [20 << 20, 13 << 20], b = [33 << 20, 8], c = [34 << 20];
  const [pa, pb] = [pagedArrays(a), pagedArrays(b)];
  const [ra, rb] = await Promise.all([pa.ready, pb.ready]);
  assertZeroArrays(ra, a);
  assertZeroArrays(rb, b);
  assertZeroArrays(await pagedArrays(c).ready, c);
  // Stopped with a request in flight: it is served on this thread.
  const pending = pagedArrays(a);
  stopPagingWorker();
  assertZeroArrays(await pending.ready, a);
  stopPagingWorker();
});

Deno.test("touchPages() leaves a zero array zero", () => {
  const a = new Uint8Array(3 * 4096 + 5);
  touchPages(a);
  assert.ok(a.every((v) => v === 0));
});
