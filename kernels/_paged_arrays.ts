/**
 * Library-internal: fresh zero-filled host arrays whose memory pages are
 * already mapped, for read-backs of large results. On the GPU machine the
 * first touch of fresh memory costs about 3 µs per 4 KiB page (a 180 MB
 * result: ~130 ms, as long as the copy itself); a worker thread can take
 * those page faults while this thread uploads and the GPU works, then hand
 * the arrays over without a copy (transferred). Where workers are missing or
 * fail, the pages are touched on this thread. Web-standard only (`Worker`,
 * `Blob`, `URL.createObjectURL`).
 *
 * @module
 */

/** Below this many bytes in all, a worker's start-up costs more than it saves. */
const WORKER_MIN_BYTES = 32 << 20;

/** The worker: allocates the requested sizes, touches every page, transfers them back. */
const WORKER_SOURCE = `onmessage = (e) => {
  const out = e.data.sizes.map((size) => {
    const b = new ArrayBuffer(size);
    const u = new Uint8Array(b);
    for (let i = 0; i < size; i += 4096) u[i] = 0;
    return b;
  });
  postMessage({ id: e.data.id, out }, out);
};`;

/**
 * How long the worker stays alive without requests. Starting one blocks the
 * caller's thread for 13–60 ms (measured in Deno 2.9.6), so one worker serves
 * consecutive solves; an idle worker keeps a Deno process alive (Deno's
 * `Worker` has no `unref`), so it is terminated after this delay: a process
 * ends at most this much later.
 */
const WORKER_IDLE_MS = 1000;

interface PagingWorker {
  readonly worker: Worker;
  readonly url: string;
  /** Requests awaiting their arrays: their sizes and how to resolve them. */
  readonly pending: Map<number, { sizes: readonly number[]; resolve: (a: Uint8Array[]) => void }>;
  nextId: number;
  idle: ReturnType<typeof setTimeout> | undefined;
}

let shared: PagingWorker | null = null;

/** Terminates a worker; its pending requests are served on this thread. */
function retire(w: PagingWorker): void {
  if (shared === w) shared = null;
  if (w.idle !== undefined) clearTimeout(w.idle);
  w.idle = undefined;
  w.worker.terminate();
  URL.revokeObjectURL(w.url);
  for (const { sizes, resolve } of w.pending.values()) resolve(onThisThread(sizes));
  w.pending.clear();
}

/** The shared worker, started on first use; null where workers are unavailable. */
function pagingWorker(): PagingWorker | null {
  if (shared !== null) return shared;
  const W = (globalThis as { Worker?: typeof Worker }).Worker;
  if (W === undefined || typeof URL.createObjectURL !== "function") return null;
  let url: string, worker: Worker;
  try {
    url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    worker = new W(url, { type: "module" });
  } catch {
    return null;
  }
  const w: PagingWorker = { worker, url, pending: new Map(), nextId: 0, idle: undefined };
  worker.onmessage = (e: MessageEvent<{ id: number; out: ArrayBuffer[] }>) => {
    const request = w.pending.get(e.data?.id);
    if (request === undefined) return;
    w.pending.delete(e.data.id);
    const { sizes, resolve } = request, bufs = e.data.out;
    const ok = Array.isArray(bufs) && bufs.length === sizes.length &&
      bufs.every((b, i) => b instanceof ArrayBuffer && b.byteLength === sizes[i]);
    resolve(ok ? bufs.map((b) => new Uint8Array(b)) : onThisThread(sizes));
    if (w.pending.size === 0 && shared === w) {
      w.idle = setTimeout(() => retire(w), WORKER_IDLE_MS);
    }
  };
  const fail = (e: Event) => {
    e.preventDefault();
    retire(w);
  };
  worker.onerror = fail;
  worker.onmessageerror = fail;
  shared = w;
  return w;
}

/**
 * Internal (tests end with it): terminates the paging worker now, if one is
 * alive, rather than after its idle delay.
 */
export function stopPagingWorker(): void {
  if (shared !== null) retire(shared);
}

/**
 * Writes one byte in every 4 KiB page of `bytes` (already zero), so that its
 * fresh pages get mapped now rather than on first use.
 *
 * @param bytes A freshly allocated (zero) array.
 */
export function touchPages(bytes: Uint8Array): void {
  for (let i = 0; i < bytes.length; i += 4096) bytes[i] = 0;
}

/**
 * Internal (benchmarks compare the two): whether large arrays get their pages
 * mapped on a worker thread (else on this thread, by `whileGpuWorks`).
 */
export const pagingOptions: { worker: boolean } = { worker: true };

function onThisThread(sizes: readonly number[]): Uint8Array[] {
  return sizes.map((size) => {
    const a = new Uint8Array(size);
    touchPages(a);
    return a;
  });
}

/** Arrays being paged in: {@linkcode pagedArrays}'s result. */
export interface PagedArrays {
  /** The arrays, in order, once their pages are mapped. */
  readonly ready: Promise<Uint8Array[]>;
  /**
   * Maps the pages on this thread if no worker does it: call it once the
   * GPU has work queued, so that the page faults overlap that work.
   */
  whileGpuWorks(): void;
}

/**
 * Zero-filled arrays of the given byte sizes whose pages get mapped before
 * use: on a worker thread when one can be started (and the sizes are large
 * enough to pay for it), the caller's thread staying free; else on the
 * caller's thread, in {@linkcode PagedArrays.whileGpuWorks}.
 *
 * @param sizes Byte sizes.
 * @returns The arrays (each spans its own whole ArrayBuffer) and the hook.
 */
export function pagedArrays(sizes: readonly number[]): PagedArrays {
  const total = sizes.reduce((s, b) => s + b, 0);
  const here = (): PagedArrays => {
    const arrays = sizes.map((size) => new Uint8Array(size));
    let touched = false;
    return {
      ready: Promise.resolve(arrays),
      whileGpuWorks() {
        if (touched) return;
        touched = true;
        for (const a of arrays) touchPages(a);
      },
    };
  };
  if (!pagingOptions.worker || total < WORKER_MIN_BYTES) return here();
  const w = pagingWorker();
  if (w === null) return here();
  if (w.idle !== undefined) {
    clearTimeout(w.idle);
    w.idle = undefined;
  }
  const id = w.nextId++;
  const ready = new Promise<Uint8Array[]>((resolve) => w.pending.set(id, { sizes, resolve }));
  w.worker.postMessage({ id, sizes });
  return { ready, whileGpuWorks() {} };
}
