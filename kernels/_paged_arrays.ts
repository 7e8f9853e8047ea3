/**
 * Library-internal: fresh zero-filled host arrays whose memory pages are
 * already mapped, for read-backs of large results. On the GPU machine the
 * first touch of fresh memory costs about 3 µs per 4 KiB page (a 180 MB
 * result: ~130 ms, as long as the copy itself); a worker thread can take
 * those page faults while this thread uploads and the GPU works, then hand
 * the arrays over without a copy (transferred). Where workers are missing or
 * fail, the pages are touched on this thread. Web-standard (`Worker`, `Blob`,
 * `URL.createObjectURL`), except where the runtime offers node:worker_threads
 * through `process.getBuiltinModule` (Deno, Node ≥ 22.3, Bun): the worker is
 * started through it there, because such a worker can be unref'd while idle,
 * so that it never delays the end of a process (a web `Worker` has no unref).
 *
 * @module
 */

/** Below this many bytes in all, a worker's start-up costs more than it saves. */
const WORKER_MIN_BYTES = 32 << 20;

/** The worker's work: allocates the requested sizes and touches every page. */
const PAGE_IN = `(sizes) => sizes.map((size) => {
  const b = new ArrayBuffer(size);
  const u = new Uint8Array(b);
  for (let i = 0; i < size; i += 4096) u[i] = 0;
  return b;
})`;

/** A web worker: answers `{ id, sizes }` with `{ id, out }`, the buffers transferred. */
const WEB_SOURCE = `const pageIn = ${PAGE_IN};
onmessage = (e) => {
  const out = pageIn(e.data.sizes);
  postMessage({ id: e.data.id, out }, out);
};`;

/** The same for node:worker_threads (CommonJS, evaluated). */
const NODE_SOURCE = `const { parentPort } = require("node:worker_threads");
const pageIn = ${PAGE_IN};
parentPort.on("message", (d) => {
  const out = pageIn(d.sizes);
  parentPort.postMessage({ id: d.id, out }, out);
});`;

/**
 * How long the worker stays alive without requests. Starting one blocks the
 * caller's thread (measured in Deno 2.9.6: a web `Worker` 13–60 ms, a
 * node:worker_threads one 40–100 ms), so one worker serves consecutive solves. A web
 * worker keeps a Deno process alive (it has no `unref`), so it goes after
 * 1 s; a node:worker_threads worker is unref'd while idle, as is its timer,
 * so it holds no process and stays 10 s (a restart then costs at most ~1% of
 * the caller's time; an idle worker holds ~30 MB).
 */
const IDLE_MS = { web: 1000, node: 10_000 };

/** The part of node:worker_threads' `Worker` used here. */
interface NodeWorker {
  postMessage(value: unknown): void;
  on(event: string, listener: (value: unknown) => void): unknown;
  terminate(): unknown;
  ref(): void;
  unref(): void;
}

/** The part of node:timers' `Timeout` used here. */
interface NodeTimeout {
  unref(): unknown;
}

/** The node:worker_threads and node:timers modules, where the runtime has them (Deno, Node, Bun). */
interface NodeModules {
  readonly Worker: new (source: string, options: { eval: true }) => NodeWorker;
  readonly setTimeout: (f: () => void, ms: number) => NodeTimeout;
  readonly clearTimeout: (t: NodeTimeout) => void;
}

/** node:worker_threads and node:timers through `process.getBuiltinModule`, or null. */
function nodeModules(): NodeModules | null {
  const get = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } })
    .process?.getBuiltinModule;
  if (typeof get !== "function") return null;
  try {
    const threads = get("node:worker_threads") as { Worker?: NodeModules["Worker"] } | undefined;
    const timers = get("node:timers") as Partial<NodeModules> | undefined;
    if (
      typeof threads?.Worker !== "function" || typeof timers?.setTimeout !== "function" ||
      typeof timers.clearTimeout !== "function"
    ) return null;
    return {
      Worker: threads.Worker,
      setTimeout: timers.setTimeout,
      clearTimeout: timers.clearTimeout,
    };
  } catch {
    return null;
  }
}

/** A started worker of either kind, as the paging code drives it. */
interface WorkerHandle {
  /** Sends a request. */
  post(message: { id: number; sizes: readonly number[] }): void;
  /** Stops the thread. */
  terminate(): void;
  /** Lets the worker keep the process alive (requests pending) or not (idle), where it can. */
  hold(on: boolean): void;
  /** Calls `f` after the idle delay; returns the canceller. */
  afterIdle(f: () => void): () => void;
}

/** Callbacks of a started worker. */
interface WorkerEvents {
  /** A reply (not yet validated). */
  reply(data: unknown): unknown;
  /** The worker failed or exited. */
  fail(): unknown;
}

function startNodeWorker(node: NodeModules, events: WorkerEvents): WorkerHandle {
  const worker = new node.Worker(NODE_SOURCE, { eval: true });
  worker.on("message", events.reply);
  for (const event of ["error", "messageerror", "exit"]) worker.on(event, events.fail);
  // A new worker is ref'd. Only changes are passed on: ref() and unref() are
  // idempotent in Node and Deno 2.9.6, but counted in some Deno versions.
  let held = true;
  return {
    post: (message) => worker.postMessage(message),
    terminate: () => void worker.terminate(),
    hold(on) {
      if (on === held) return;
      held = on;
      if (on) worker.ref();
      else worker.unref();
    },
    afterIdle(f) {
      const t = node.setTimeout(f, IDLE_MS.node);
      t.unref();
      return () => node.clearTimeout(t);
    },
  };
}

function startWebWorker(W: typeof Worker, events: WorkerEvents): WorkerHandle {
  const url = URL.createObjectURL(new Blob([WEB_SOURCE], { type: "text/javascript" }));
  let worker: Worker;
  try {
    worker = new W(url, { type: "module" });
  } catch (e) {
    URL.revokeObjectURL(url);
    throw e;
  }
  worker.onmessage = (e: MessageEvent) => events.reply(e.data);
  const fail = (e: Event) => {
    e.preventDefault();
    events.fail();
  };
  worker.onerror = fail;
  worker.onmessageerror = fail;
  return {
    post: (message) => worker.postMessage(message),
    terminate() {
      worker.terminate();
      URL.revokeObjectURL(url);
    },
    hold() {},
    afterIdle(f) {
      const t = setTimeout(f, IDLE_MS.web);
      return () => clearTimeout(t);
    },
  };
}

interface PagingWorker {
  readonly kind: "node" | "web";
  readonly handle: WorkerHandle;
  /** Requests answered with the worker's arrays. */
  served: number;
  /** Requests awaiting their arrays: their sizes and how to resolve them. */
  readonly pending: Map<number, { sizes: readonly number[]; resolve: (a: Uint8Array[]) => void }>;
  nextId: number;
  /** Cancels the idle timer, when one runs. */
  cancelIdle: (() => void) | undefined;
  retired: boolean;
}

let shared: PagingWorker | null = null;

/** Terminates a worker; its pending requests are served on this thread. */
function retire(w: PagingWorker): void {
  if (w.retired) return;
  w.retired = true;
  if (shared === w) shared = null;
  w.cancelIdle?.();
  w.cancelIdle = undefined;
  w.handle.terminate();
  for (const { sizes, resolve } of w.pending.values()) resolve(onThisThread(sizes));
  w.pending.clear();
}

/** Resolves the request a worker's reply answers (with this thread's arrays if the reply is wrong). */
function answer(w: PagingWorker, data: unknown): void {
  if (w.retired) return;
  const { id, out: bufs } = (data ?? {}) as { id?: number; out?: unknown };
  const request = w.pending.get(id as number);
  if (request === undefined) return;
  w.pending.delete(id as number);
  const { sizes, resolve } = request;
  const ok = Array.isArray(bufs) && bufs.length === sizes.length &&
    bufs.every((b, i) => b instanceof ArrayBuffer && b.byteLength === sizes[i]);
  if (ok) w.served++;
  resolve(ok ? (bufs as ArrayBuffer[]).map((b) => new Uint8Array(b)) : onThisThread(sizes));
  if (w.pending.size === 0) idle(w);
}

/**
 * The shared worker, started on first use: the first kind of
 * `pagingOptions.kinds` that starts (node:worker_threads first, so that an
 * idle worker holds no process); null where none does.
 */
function pagingWorker(): PagingWorker | null {
  if (shared !== null) return shared;
  for (const kind of pagingOptions.kinds) {
    let w: PagingWorker | null = null; // set once started: events before are ignored
    const events: WorkerEvents = {
      reply: (data) => w !== null && answer(w, data),
      fail: () => w !== null && retire(w),
    };
    let handle: WorkerHandle | null = null;
    try {
      if (kind === "node") {
        const node = nodeModules();
        if (node !== null) handle = startNodeWorker(node, events);
      } else {
        const W = (globalThis as { Worker?: typeof Worker }).Worker;
        if (W !== undefined && typeof URL.createObjectURL === "function") {
          handle = startWebWorker(W, events);
        }
      }
    } catch {
      handle = null; // try the next kind
    }
    if (handle === null) continue;
    w = {
      kind,
      handle,
      served: 0,
      pending: new Map(),
      nextId: 0,
      cancelIdle: undefined,
      retired: false,
    };
    shared = w;
    return w;
  }
  return null;
}

/** No request pending: the worker stops holding the process and retires after its idle delay. */
function idle(w: PagingWorker): void {
  w.handle.hold(false);
  w.cancelIdle?.();
  w.cancelIdle = w.handle.afterIdle(() => retire(w));
}

/**
 * Internal (tests): the live paging worker's kind and how many requests it
 * has answered with its own arrays, or null when none is alive.
 *
 * @returns The worker's state, or null.
 */
export function pagingWorkerState(): { kind: "node" | "web"; served: number } | null {
  return shared === null ? null : { kind: shared.kind, served: shared.served };
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
 * Internal (benchmarks compare the two; tests pick the kind): whether large
 * arrays get their pages mapped on a worker thread (else on this thread, by
 * `whileGpuWorks`), and the kinds of worker to try, in order (a change applies
 * to the next worker started).
 */
export const pagingOptions: { worker: boolean; kinds: readonly ("node" | "web")[] } = {
  worker: true,
  kinds: ["node", "web"],
};

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
  w.cancelIdle?.();
  w.cancelIdle = undefined;
  const id = w.nextId++;
  const ready = new Promise<Uint8Array[]>((resolve) => w.pending.set(id, { sizes, resolve }));
  // Awaited by the caller: the worker holds the process until it answers.
  w.handle.hold(true);
  try {
    w.handle.post({ id, sizes });
  } catch {
    retire(w); // serves this request on this thread
  }
  return { ready, whileGpuWorks() {} };
}
