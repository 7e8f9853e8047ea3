/**
 * The demo's output: the results table, an SVG plot of perplexity against
 * bits per weight, and a progress bar with ETA on stderr. Uses the `Deno`
 * namespace for the terminal.
 *
 * @module
 */

/** One result row. */
export interface DemoRow {
  /** Method id. */
  method: string;
  /** Mean bits per weight of the compressed linears (32 uncompressed). */
  bitsPerWeight: number;
  /** Model size in bytes: compressed linears at their bits, the rest float32. */
  sizeBytes: number;
  /** Perplexity per evaluation text (or, in the layer-level demo, mean relative layer error). */
  perplexity: Record<string, number>;
  /** Tokens scored per evaluation text. */
  tokens: Record<string, number>;
  /** Seconds spent compressing. */
  seconds: number;
  /** Seconds spent evaluating (in worker threads, overlapping compression). */
  evalSeconds: number;
  /** Weight-count-weighted mean relative layer error on the calibration inputs. */
  layerError: number | null;
  /** Fraction of weights kept in the compressed linears. */
  density: number;
  /** Mean bits per activation at the block linears' inputs (absent or 32: float). */
  bitsPerActivation?: number;
  /** Mean bits per cached key or value element (absent or 32: a float KV cache). */
  bitsPerKv?: number;
}

function fmtBytes(n: number): string {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(2)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && Math.abs(x) < 0.01) return x.toExponential(2);
  if (x >= 1000) return x.toFixed(0);
  if (x >= 100) return x.toFixed(1);
  return x.toFixed(3);
}

/**
 * The results as a Markdown table.
 *
 * @param rows The rows.
 * @param texts Evaluation text names, in column order.
 * @param metric Column title of the per-text values.
 * @returns The table (lines joined by \n).
 */
export function formatTable(
  rows: readonly DemoRow[],
  texts: readonly string[],
  metric = "ppl",
): string {
  // A bits-per-activation column only where some method quantizes activations.
  const acts = rows.some((r) => (r.bitsPerActivation ?? 32) < 32);
  // Likewise a bits-per-KV-element column where some method quantizes the KV cache.
  const kv = rows.some((r) => (r.bitsPerKv ?? 32) < 32);
  const head = [
    "method",
    "bits/weight",
    ...(acts ? ["bits/act"] : []),
    ...(kv ? ["bits/kv"] : []),
    "size",
    ...texts.map((t) =>
      `${metric} ${t} (${(rows[0]?.tokens[t] ?? 0).toLocaleString("en-US")} tok)`
    ),
    "seconds",
  ];
  const body = rows.map((r) => [
    r.method,
    r.bitsPerWeight.toFixed(2),
    ...(acts ? [(r.bitsPerActivation ?? 32).toFixed(2)] : []),
    ...(kv ? [(r.bitsPerKv ?? 32).toFixed(2)] : []),
    fmtBytes(r.sizeBytes),
    ...texts.map((t) => fmtNum(r.perplexity[t] ?? NaN)),
    r.seconds.toFixed(1),
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    "| " +
    cells.map((c, i) => (i === 0 ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join(" | ") +
    " |";
  const rule = "|" + width.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":"))
    .join("|") +
    "|";
  return [line(head), rule, ...body.map(line)].join("\n");
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/**
 * An SVG scatter plot of perplexity (log scale) against bits per weight, one
 * series per evaluation text, each point labelled with its method.
 *
 * @param rows The rows.
 * @param texts Evaluation text names.
 * @param title Plot title.
 * @returns The SVG document.
 */
export function perplexitySvg(
  rows: readonly DemoRow[],
  texts: readonly string[],
  title: string,
): string {
  const W = 800, H = 520, L = 70, R = 150, T = 40, B = 50;
  const pts = rows.flatMap((r) =>
    texts.map((t, s) => ({ x: r.bitsPerWeight, y: r.perplexity[t]!, s, label: r.method }))
  ).filter((p) => Number.isFinite(p.y) && p.y > 0 && p.x > 0);
  const lx = pts.map((p) => Math.log2(p.x)), ly = pts.map((p) => Math.log10(p.y));
  const x0 = Math.floor(Math.min(...lx, 1)), x1 = Math.ceil(Math.max(...lx, 3));
  const y0 = Math.floor(Math.min(...ly) * 10) / 10;
  const y1 = Math.ceil(Math.max(...ly) * 10) / 10 + 0.05;
  const px = (x: number) => L + ((Math.log2(x) - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => H - B - ((Math.log10(y) - y0) / (y1 - y0)) * (H - T - B);
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${(L + W - R) / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${
      H - 12
    }" text-anchor="middle">bits per weight (log scale)</text>`,
    `<text x="16" y="${(T + H - B) / 2}" transform="rotate(-90 16 ${
      (T + H - B) / 2
    })" text-anchor="middle">perplexity (log scale)</text>`,
  ];
  for (const x of [2, 3, 4, 6, 8, 12, 16, 24, 32]) {
    if (Math.log2(x) < x0 || Math.log2(x) > x1) continue;
    out.push(
      `<line x1="${px(x)}" y1="${T}" x2="${px(x)}" y2="${H - B + 5}" stroke="#eee"/>`,
      `<text x="${px(x)}" y="${H - B + 18}" text-anchor="middle">${x}</text>`,
    );
  }
  for (let e = Math.floor(y0); e <= Math.ceil(y1); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e, lv = Math.log10(v);
      if (lv < y0 || lv > y1) continue;
      out.push(
        `<line x1="${L - 5}" y1="${py(v)}" x2="${W - R}" y2="${py(v)}" stroke="#ddd"/>`,
        `<text x="${L - 8}" y="${py(v) + 4}" text-anchor="end">${v}</text>`,
      );
    }
  }
  // Labels of the first text's points, moved up or down until they do not overlap.
  const placed: [number, number, number][] = [];
  const place = (x: number, y: number, w: number): number => {
    const free = (yy: number) =>
      !placed.some(([a, b, c]) => Math.abs(b - yy) < 10 && x < a + c && a < x + w);
    let yy = y;
    for (let k = 1; !free(yy) && k < 40; k++) {
      yy = y + (k % 2 === 1 ? -1 : 1) * 10 * Math.ceil(k / 2);
    }
    placed.push([x, yy, w]);
    return yy;
  };
  for (const p of [...pts].sort((a, b) => a.s - b.s || a.y - b.y)) {
    const c = COLORS[p.s % COLORS.length];
    const cx = px(p.x), cy = py(p.y);
    out.push(`<circle cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="4" fill="${c}"/>`);
    if (p.s === 0) {
      const w = 5.5 * p.label.length, ty = place(cx + 6, cy - 4, w);
      out.push(
        `<text x="${(cx + 6).toFixed(1)}" y="${ty.toFixed(1)}" fill="${c}" font-size="9">${
          esc(p.label)
        }</text>`,
      );
    }
  }
  texts.forEach((t, s) => {
    out.push(
      `<circle cx="${W - R + 20}" cy="${T + 10 + 16 * s}" r="4" fill="${
        COLORS[s % COLORS.length]
      }"/>`,
      `<text x="${W - R + 30}" y="${T + 14 + 16 * s}">${esc(t)}${
        s === 0 ? " (labelled)" : ""
      }</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** A progress bar with ETA on stderr (redrawn in place on a terminal, else one line per step). */
export interface ProgressBar {
  /**
   * Shows progress.
   *
   * @param fraction Overall fraction done, in [0, 1].
   * @param label What is running.
   */
  update(fraction: number, label: string): void;
  /** Clears the bar. */
  done(): void;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const t = Math.round(s), m = Math.floor(t / 60);
  return m > 0 ? `${m}m${String(t % 60).padStart(2, "0")}s` : `${t}s`;
}

/**
 * Starts a progress bar.
 *
 * @param enabled False for a silent bar.
 * @returns The bar.
 */
export function progressBar(enabled = true): ProgressBar {
  const tty = enabled && Deno.stderr.isTerminal();
  const t0 = performance.now();
  const enc = new TextEncoder();
  let lastLine = "", lastPrint = 0, finished = false;
  return {
    update(fraction, label) {
      if (!enabled) return;
      const f = Math.max(0, Math.min(1, fraction));
      const elapsed = (performance.now() - t0) / 1000;
      const eta = f > 0.01 ? (elapsed * (1 - f)) / f : NaN;
      const n = 24, full = Math.round(f * n);
      const line =
        `[${"#".repeat(full)}${"-".repeat(n - full)}] ${(100 * f).toFixed(0).padStart(3)}% ` +
        `${fmtTime(elapsed)} elapsed, ETA ${fmtTime(eta)}  ${label}`;
      if (tty) {
        Deno.stderr.writeSync(enc.encode(`\r${line.slice(0, 110).padEnd(lastLine.length)}`));
        lastLine = line.slice(0, 110);
      } else if (performance.now() - lastPrint > 10_000 || (f === 1 && !finished)) {
        Deno.stderr.writeSync(enc.encode(line + "\n"));
        lastPrint = performance.now();
        finished = f === 1;
      }
    },
    done() {
      if (tty && lastLine) Deno.stderr.writeSync(enc.encode(`\r${" ".repeat(lastLine.length)}\r`));
    },
  };
}
