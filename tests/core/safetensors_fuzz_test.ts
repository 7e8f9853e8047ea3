/**
 * Seeded fuzzing of the safetensors reader: mutated files must give either a
 * `SafetensorsError` or a parse that agrees with an independent validator
 * and with the bytes of the file.
 */
import assert from "node:assert/strict";
import {
  parseSafetensors,
  SafetensorsError,
  serializeSafetensors,
} from "../../core/safetensors.ts";
import { openSafetensors } from "../../core/safetensors_file.ts";
import { allocate, type DType, DTYPES, type Tensor, tensor } from "../../core/tensor.ts";
import { type Prng, prng } from "../../core/prng.ts";

const ST: Record<string, [DType, number]> = {
  F64: ["f64", 8],
  F32: ["f32", 4],
  F16: ["f16", 2],
  BF16: ["bf16", 2],
  I64: ["i64", 8],
  I32: ["i32", 4],
  I16: ["i16", 2],
  I8: ["i8", 1],
  U8: ["u8", 1],
  U16: ["u16", 2],
  U32: ["u32", 4],
  BOOL: ["bool", 1],
  F8_E4M3: ["f8e4m3", 1],
  F8_E5M2: ["f8e5m2", 1],
};

interface Expected {
  metadata: Record<string, string>;
  tensors: { name: string; dtype: DType; shape: number[]; bytes: Uint8Array }[];
}

/**
 * Independent validator of the published format: returns what a correct
 * reader must return, or null when the file breaks a rule.
 */
function expected(file: Uint8Array): Expected | null {
  if (file.length < 8) return null;
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n === 0n || n > 100_000_000n || 8n + n > BigInt(file.length)) return null;
  const start = 8 + Number(n);
  let header: unknown;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(file.subarray(8, start)),
    );
  } catch {
    return null;
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) return null;
  const dataLength = file.length - start;
  const out: Expected = { metadata: {}, tensors: [] };
  const spans: [number, number, string][] = [];
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (v === null) continue;
      if (typeof v !== "object" || v === null || Array.isArray(v)) return null;
      if (!Object.values(v).every((s) => typeof s === "string")) return null;
      out.metadata = Object.fromEntries(Object.entries(v));
      continue;
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) return null;
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== "string" || !Object.hasOwn(ST, e.dtype)) return null;
    const [dtype, size] = ST[e.dtype]!;
    if (!Array.isArray(e.shape)) return null;
    if (!e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return null;
    const count = e.shape.reduce((a: bigint, d: number) => a * BigInt(d), 1n);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2) return null;
    if (!off.every((o) => Number.isSafeInteger(o) && o >= 0)) return null;
    const [b, en] = off as [number, number];
    if (b > en || en > dataLength || count * BigInt(size) !== BigInt(en - b)) return null;
    const bytes = file.slice(start + b, start + en);
    if (dtype === "bool" && bytes.some((x) => x > 1)) return null;
    spans.push([b, en, name]);
    out.tensors.push({ name, dtype, shape: e.shape as number[], bytes });
  }
  // the spans must tile [0, dataLength) exactly
  spans.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let at = 0;
  for (const [b, en] of spans) {
    if (b !== at) return null;
    at = en;
  }
  if (at !== dataLength) return null;
  const order = new Map(spans.map(([, , name], i) => [name, i]));
  out.tensors.sort((x, y) => order.get(x.name)! - order.get(y.name)!);
  return out;
}

function randomTensor(rng: Prng): Tensor {
  const dtype = DTYPES[rng.int(DTYPES.length)]!;
  const rank = rng.int(4);
  const shape = Array.from({ length: rank }, () => rng.int(4));
  const n = shape.reduce((a, b) => a * b, 1);
  const data = allocate(dtype, n);
  const bytes = new Uint8Array(data.buffer);
  for (let i = 0; i < bytes.length; i++) bytes[i] = rng.nextU32() & (dtype === "bool" ? 1 : 0xff);
  return tensor(dtype, shape, data);
}

function baseFile(rng: Prng): Uint8Array {
  const tensors = new Map<string, Tensor>();
  const count = 1 + rng.int(5);
  for (let i = 0; i < count; i++) tensors.set(`layer.${i}.w`, randomTensor(rng));
  return serializeSafetensors(tensors, rng.int(2) ? { format: "pt" } : undefined);
}

function withHeader(text: string, data: Uint8Array, declared?: bigint): Uint8Array {
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declared ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function split(file: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(file.buffer).getBigUint64(0, true));
  return {
    header: JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n))),
    data: file.slice(8 + n),
  };
}

const WEIRD: unknown[] = [
  -1,
  1.5,
  2 ** 53,
  2 ** 60,
  1e308,
  -0,
  "4",
  null,
  true,
  [],
  [1],
  {},
  Number.MAX_SAFE_INTEGER,
  4294967296,
  0,
  8,
];

function pick<T>(rng: Prng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)]!;
}

/** One mutation of a valid file, with a label for failure messages. */
function mutate(rng: Prng, file: Uint8Array): [string, Uint8Array] {
  const kind = rng.int(11);
  switch (kind) {
    case 0: { // truncation
      const at = rng.int(file.length + 1);
      return [`truncate at ${at}`, file.slice(0, at)];
    }
    case 1: { // bit flips anywhere
      const out = file.slice();
      const flips = 1 + rng.int(8);
      for (let i = 0; i < flips; i++) out[rng.int(out.length)]! ^= 1 << rng.int(8);
      return [`${flips} bit flips`, out];
    }
    case 2: { // bit flips in the header only
      const out = file.slice();
      const n = Number(new DataView(out.buffer).getBigUint64(0, true));
      const flips = 1 + rng.int(3);
      for (let i = 0; i < flips; i++) out[8 + rng.int(n)]! ^= 1 << rng.int(8);
      return [`${flips} header bit flips`, out];
    }
    case 3: { // lying header length
      const out = file.slice();
      const dv = new DataView(out.buffer);
      const n = dv.getBigUint64(0, true);
      const lies = [
        n + BigInt(1 + rng.int(16)),
        n - BigInt(1 + rng.int(Number(n))),
        BigInt(out.length),
        BigInt(out.length - 7),
        100_000_001n,
        2n ** 63n,
        2n ** 64n - 1n,
        BigInt(rng.nextU32()) << 32n | BigInt(rng.nextU32()),
        0n,
      ];
      const lie = pick(rng, lies);
      dv.setBigUint64(0, lie < 0n ? 0n : lie, true);
      return [`header length ${lie}`, out];
    }
    case 4:
    case 5:
    case 6: { // a well-framed header with a lying entry
      const { header, data } = split(file);
      const names = Object.keys(header).filter((k) => k !== "__metadata__");
      const name = pick(rng, names);
      const entry = { ...(header[name] as Record<string, unknown>) };
      const other = header[pick(rng, names)] as { data_offsets: number[] };
      const field = rng.int(7);
      let label = "";
      if (field === 0) {
        entry.dtype = pick(rng, [...Object.keys(ST), "F8_E8M0", "U64", "C64", "f32", "", 7, null]);
        label = `dtype ${JSON.stringify(entry.dtype)}`;
      } else if (field === 1) {
        const shape = [...(entry.shape as number[])];
        if (shape.length && rng.int(2)) shape[rng.int(shape.length)] = pick(rng, WEIRD) as number;
        else shape.push(pick(rng, WEIRD) as number);
        entry.shape = rng.int(8) ? shape : pick(rng, WEIRD);
        label = `shape ${JSON.stringify(entry.shape)}`;
      } else if (field === 2) {
        entry.shape = Array.from({ length: 1 + rng.int(6) }, () => 2 ** (10 + rng.int(30)));
        label = `huge shape ${JSON.stringify(entry.shape)}`;
      } else if (field === 3) {
        const off = [...(entry.data_offsets as number[])];
        off[rng.int(2)] = rng.int(2)
          ? pick(rng, WEIRD) as number
          : off[rng.int(2)]! + rng.int(9) - 4;
        entry.data_offsets = rng.int(10) ? off : pick(rng, WEIRD);
        label = `offsets ${JSON.stringify(entry.data_offsets)}`;
      } else if (field === 4) {
        entry.data_offsets = [...other.data_offsets]; // overlap with another (or itself)
        label = `offsets copied ${JSON.stringify(entry.data_offsets)}`;
      } else if (field === 5) {
        delete entry[pick(rng, ["dtype", "shape", "data_offsets"])];
        label = "missing key";
      } else {
        header.__metadata__ = pick(rng, [{ a: 1 }, [], null, "x", { a: "b", c: null }, { k: "v" }]);
        label = `metadata ${JSON.stringify(header.__metadata__)}`;
      }
      if (field !== 6) header[name] = entry;
      let text = JSON.stringify(header);
      const pad = rng.int(4);
      text += pad === 0 ? "" : pad === 1 ? " ".repeat(rng.int(9)) : pad === 2 ? "\0" : "\t\n";
      return [`${name}: ${label}`, withHeader(text, data)];
    }
    case 7: { // not JSON, or not an object
      const { data } = split(file);
      const texts = [
        "",
        "{",
        '{"a":',
        "[]",
        "[1,2,3]",
        "42",
        '"str"',
        "null",
        "true",
        "[".repeat(20000) + "]".repeat(20000),
        '{"a":'.repeat(5000) + "1" + "}".repeat(5000),
        "\uFEFF{}",
        String.fromCharCode(...Array.from({ length: 1 + rng.int(40) }, () => rng.int(256))),
      ];
      const text = pick(rng, texts);
      return [`header text ${JSON.stringify(text.slice(0, 20))}`, withHeader(text, data)];
    }
    case 8: { // splice the data section: insert or delete bytes
      const { header, data } = split(file);
      const at = rng.int(data.length + 1);
      const del = rng.int(2) ? rng.int(Math.max(1, data.length - at) + 1) : 0;
      const ins = new Uint8Array(rng.int(9));
      const spliced = new Uint8Array([...data.subarray(0, at), ...ins, ...data.subarray(at + del)]);
      return [
        `splice at ${at} -${del} +${ins.length}`,
        withHeader(JSON.stringify(header), spliced),
      ];
    }
    case 9: { // a gap: bytes inserted before one tensor, later offsets shifted to match
      const { header, data } = split(file);
      const entries = Object.entries(header).filter(([k]) => k !== "__metadata__") as [
        string,
        { data_offsets: number[] },
      ][];
      const at = pick(rng, entries)[1].data_offsets[0]!;
      const k = 1 + rng.int(8);
      for (const [, e] of entries) {
        if (e.data_offsets[0]! >= at) e.data_offsets = e.data_offsets.map((o) => o + k);
      }
      const gapped = new Uint8Array([
        ...data.subarray(0, at),
        ...new Uint8Array(k),
        ...data.subarray(at),
      ]);
      return [`gap of ${k} at ${at}`, withHeader(JSON.stringify(header), gapped)];
    }
    default: { // random bytes with a plausible length prefix
      const body = Uint8Array.from({ length: rng.int(64) }, () => rng.int(256));
      return [`random bytes (${body.length})`, withHeader("", body, BigInt(rng.int(80)))];
    }
  }
}

function checkOne(label: string, file: Uint8Array): "ok" | "error" {
  const want = expected(file);
  let got: ReturnType<typeof parseSafetensors>;
  try {
    got = parseSafetensors(file);
  } catch (e) {
    if (!(e instanceof SafetensorsError)) {
      throw new assert.AssertionError({
        message: `${label}: threw ${e} instead of SafetensorsError`,
      });
    }
    assert.equal(want, null, `${label}: rejected a valid file: ${e.message}`);
    return "error";
  }
  assert.notEqual(want, null, `${label}: accepted an invalid file`);
  assert.deepEqual(got.metadata, want!.metadata, label);
  assert.deepEqual([...got.tensors.keys()], want!.tensors.map((t) => t.name), label);
  for (const t of want!.tensors) {
    const g = got.tensors.get(t.name)!;
    assert.equal(g.dtype, t.dtype, label);
    assert.deepEqual(g.shape, t.shape, label);
    assert.deepEqual(
      new Uint8Array(g.data.buffer, g.data.byteOffset, g.data.byteLength),
      t.bytes,
      label,
    );
  }
  return "ok";
}

Deno.test("2,400 seeded mutations of safetensors files give only SafetensorsError or a correct parse", () => {
  const rng = prng(2024);
  const counts = { ok: 0, error: 0 };
  const started = performance.now();
  let slowest = 0;
  for (let i = 0; i < 2400; i++) {
    const base = baseFile(rng);
    if (i % 50 === 0) counts[checkOne(`base ${i}`, base)]++;
    const [label, file] = mutate(rng, base);
    const t0 = performance.now();
    counts[checkOne(`#${i} ${label}`, file)]++;
    slowest = Math.max(slowest, performance.now() - t0);
  }
  const elapsed = performance.now() - started;
  assert.ok(counts.error > 1500, `only ${counts.error} mutations were rejected`);
  assert.ok(counts.ok > 50, `only ${counts.ok} files parsed`);
  assert.ok(slowest < 1000, `one parse took ${slowest} ms`);
  assert.ok(elapsed < 10000, `fuzzing took ${elapsed} ms`);
});

Deno.test("openSafetensors on 150 seeded mutated files gives only SafetensorsError or the right tensors", async () => {
  const rng = prng(77);
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f.safetensors`;
    for (let i = 0; i < 150; i++) {
      const [label, file] = mutate(rng, baseFile(rng));
      await Deno.writeFile(path, file);
      const want = expected(file);
      let f;
      try {
        f = await openSafetensors(path);
      } catch (e) {
        assert.ok(e instanceof SafetensorsError, `${label}: threw ${e}`);
        assert.equal(want, null, `${label}: rejected a valid file: ${e.message}`);
        continue;
      }
      try {
        // a valid header may still hold a BOOL byte > 1, found when that tensor is read
        const read = new Map<string, Tensor | null>();
        for (const name of f.names) {
          try {
            read.set(name, await f.read(name));
          } catch (e) {
            assert.ok(e instanceof SafetensorsError, `${label}: read threw ${e}`);
            assert.match(e.message, /not 0 or 1/);
            read.set(name, null);
          }
        }
        if (want === null) {
          assert.ok([...read.values()].includes(null), `${label}: accepted an invalid file`);
          continue;
        }
        assert.deepEqual(f.names, want.tensors.map((t) => t.name), label);
        for (const t of want.tensors) {
          const g = read.get(t.name)!;
          assert.equal(g.dtype, t.dtype, label);
          assert.deepEqual(
            new Uint8Array(g.data.buffer, g.data.byteOffset, g.data.byteLength),
            t.bytes,
            label,
          );
        }
      } finally {
        f.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
