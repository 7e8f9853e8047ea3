/**
 * Test fixture, run as a child process by paged_arrays_test.ts: requests
 * arrays large enough for the paging worker and then has nothing left to do.
 * It prints `served <n> <kind>` (the worker's state once the arrays are
 * ready), `last <ms>` (the time of its last line) and, from the `unload`
 * event, `unload <ms>`: the time the event loop ended. With the argument
 * `twice` it makes a second request 50 ms after the first is answered (the
 * worker idles in between), awaited with nothing else keeping the process
 * alive.
 *
 * @module
 */

import { pagedArrays, pagingWorkerState } from "../../kernels/_paged_arrays.ts";

addEventListener("unload", () => console.log(`unload ${performance.now()}`));
const sizes = [40 << 20];
for (let k = 0; k < (Deno.args[0] === "twice" ? 2 : 1); k++) {
  // The worker idles a while before the second request.
  if (k > 0) await new Promise((resolve) => setTimeout(resolve, 50));
  const [a] = await pagedArrays(sizes).ready;
  if (a?.byteLength !== sizes[0]) throw new Error(`wrong array: ${a?.byteLength} bytes`);
  const state = pagingWorkerState();
  console.log(`served ${state?.served ?? 0} ${state?.kind ?? "none"}`);
}
console.log(`last ${performance.now()}`);
