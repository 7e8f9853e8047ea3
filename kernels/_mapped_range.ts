/**
 * Private: taking the bytes of a buffer mapped for reading out of the
 * mapping, without a second copy where the engine allows it
 * (`GpuBatch.submit`'s read-backs).
 *
 * Web-standard only.
 *
 * @module
 */

/** Whether mapped read ranges are engine-owned copies that may be moved out (Deno). */
const MOVABLE_MAPPED_RANGES = typeof (globalThis as { Deno?: unknown }).Deno === "object";

/**
 * The first `size` bytes of a buffer mapped for reading, as an ArrayBuffer
 * that outlives the mapping. Deno's `getMappedRange` already returns a fresh
 * copy owned by V8 (it copies the mapped memory and detaches the copy on
 * unmap), so moving it out with `transfer()` (no copy) spares a second copy
 * of every read-back; elsewhere (where a range may alias the mapping, and
 * `transfer` is refused) it is copied.
 */
export function takeMappedRange(buffer: GPUBuffer, size: number): ArrayBuffer {
  const padded = Math.ceil(size / 4) * 4;
  const range = buffer.getMappedRange(0, padded);
  if (MOVABLE_MAPPED_RANGES && padded === size) {
    try {
      return range.transfer();
    } catch {
      // fall through to the copy
    }
  }
  return range.slice(0, size);
}

/** Bytes per `getMappedRange` of {@linkcode copyMappedRange}. */
const READ_CHUNK = 8 << 20;

/**
 * Copies a buffer mapped for reading into `into` chunk by
 * chunk. In Deno each range is a fresh engine-owned copy that lives until the
 * buffer is unmapped; moving it out and releasing it after its copy
 * (`transfer()`, then `transfer(0)`) lets the allocator reuse the same memory
 * for the next chunk instead of faulting in fresh pages for all of them.
 */
export function copyMappedRange(buffer: GPUBuffer, into: Uint8Array): ArrayBuffer {
  const size = into.byteLength, padded = Math.ceil(size / 4) * 4;
  if (size === 0) return into.buffer as ArrayBuffer;
  for (let off = 0; off < padded; off += READ_CHUNK) {
    const len = Math.min(READ_CHUNK, padded - off);
    let range = buffer.getMappedRange(off, len);
    let owned = false;
    if (MOVABLE_MAPPED_RANGES) {
      try {
        range = range.transfer();
        owned = true;
      } catch {
        // copy from the range as it is
      }
    }
    into.set(new Uint8Array(range, 0, Math.min(len, size - off)), off);
    if (owned) range.transfer(0);
  }
  return into.buffer as ArrayBuffer;
}
