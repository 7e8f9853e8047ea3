import assert from "node:assert/strict";
import {
  pagedArrays,
  pagingOptions,
  pagingWorkerState,
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

Deno.test("pagedArrays() gives zero-filled arrays of the asked sizes, on a worker of either kind or on this thread", async () => {
  const large = [24 << 20, 12 << 20, 4096 + 3]; // 36 MiB in all: a worker
  const small = [10, 0, 4097]; // on this thread
  for (const kind of ["node", "web"] as const) {
    pagingOptions.kinds = [kind];
    for (const worker of [true, false]) {
      pagingOptions.worker = worker;
      for (const sizes of [large, small]) {
        const paged = pagedArrays(sizes);
        paged.whileGpuWorks();
        assertZeroArrays(await paged.ready, sizes);
      }
      // Only the large request went to the worker, and it answered it.
      assert.deepEqual(pagingWorkerState(), worker ? { kind, served: 1 } : null);
      stopPagingWorker();
    }
  }
  pagingOptions.worker = true;
  pagingOptions.kinds = ["node", "web"];
});

Deno.test("pagedArrays() serves overlapping and consecutive requests from one worker of either kind", async () => {
  pagingOptions.worker = true;
  for (const kind of ["node", "web"] as const) {
    pagingOptions.kinds = [kind];
    const a = [20 << 20, 13 << 20], b = [33 << 20, 8], c = [34 << 20];
    const [pa, pb] = [pagedArrays(a), pagedArrays(b)];
    const [ra, rb] = await Promise.all([pa.ready, pb.ready]);
    assertZeroArrays(ra, a);
    assertZeroArrays(rb, b);
    assertZeroArrays(await pagedArrays(c).ready, c);
    assert.deepEqual(pagingWorkerState(), { kind, served: 3 });
    // Stopped with a request in flight: it is served on this thread.
    const pending = pagedArrays(a);
    stopPagingWorker();
    assert.equal(pagingWorkerState(), null);
    assertZeroArrays(await pending.ready, a);
    stopPagingWorker();
  }
  pagingOptions.kinds = ["node", "web"];
});

Deno.test("touchPages() leaves a zero array zero", () => {
  const a = new Uint8Array(3 * 4096 + 5);
  touchPages(a);
  assert.ok(a.every((v) => v === 0));
});

/** Runs the child fixture with no permissions; its exit code and printed values. */
async function runChild(
  arg: string,
): Promise<{ code: number; served: string[]; last: number; unload: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", new URL("./_paged_arrays_child.ts", import.meta.url).href, arg],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const value = (key: string) => Number(new RegExp(`^${key} (\\S+)$`, "m").exec(text)?.[1]);
  return {
    code: out.code,
    served: [...text.matchAll(/^served (.+)$/gm)].map((m) => m[1]!),
    last: value("last"),
    unload: value("unload"),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("a process ends right after its last line although the paging worker served it", async () => {
  const child = await runChild("once");
  assert.equal(child.code, 0, child.stderr);
  // Served by the worker itself (not the fallback on the main thread).
  assert.deepEqual(child.served, [`1 node`]);
  // The event loop ended without waiting for the worker's idle delay (≥ 1 s).
  const delay = child.unload - child.last;
  assert.ok(delay >= 0 && delay < 500, `the event loop ended ${delay} ms after the last line`);
});

Deno.test("a request made while the paging worker idles keeps the process alive until it is answered", async () => {
  const child = await runChild("twice");
  assert.equal(child.code, 0, child.stderr);
  assert.deepEqual(child.served, [`1 node`, `2 node`]);
  assert.ok(child.unload - child.last < 500, `${child.unload - child.last} ms`);
});
