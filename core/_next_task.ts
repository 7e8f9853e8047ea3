/**
 * Library-internal: yields to the event loop for one macrotask turn, so that
 * long host work done in pieces lets what is waiting run between them (a
 * GPU submission's continuation, I/O). Web-standard (`setTimeout`).
 *
 * @module
 */

/**
 * Resolves after the event loop ran what was waiting.
 *
 * @returns A promise of the next turn.
 */
export function nextTask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
