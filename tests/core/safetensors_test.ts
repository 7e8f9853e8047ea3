import assert from "node:assert/strict";
import {
  parseSafetensors,
  SafetensorsError,
  serializeSafetensors,
} from "../../core/safetensors.ts";
import { openSafetensors, readSafetensors, writeSafetensors } from "../../core/safetensors_file.ts";
import { allocate, type DType, DTYPES, type Tensor, tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";

const ST_NAME: Record<DType, string> = {
  f64: "F64",
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
  i64: "I64",
  i32: "I32",
  i16: "I16",
  i8: "I8",
  u8: "U8",
  u16: "U16",
  u32: "U32",
  bool: "BOOL",
  f8e4m3: "F8_E4M3",
  f8e5m2: "F8_E5M2",
};
const SIZE: Record<DType, number> = {
  f64: 8,
  f32: 4,
  f16: 2,
  bf16: 2,
  i64: 8,
  i32: 4,
  i16: 2,
  i8: 1,
  u8: 1,
  u16: 2,
  u32: 4,
  bool: 1,
  f8e4m3: 1,
  f8e5m2: 1,
};

/** Random raw bytes for a tensor of each dtype (bool: 0/1; floats: any bits but NaN-free f16/f32/f64). */
function randomTensor(dtype: DType, shape: number[], seed: number): Tensor {
  const rng = prng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = allocate(dtype, n);
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < bytes.length; i++) bytes[i] = rng.nextU32() & 0xff;
  if (dtype === "bool") { for (let i = 0; i < n; i++) bytes[i]! &= 1; }
  if (dtype === "f64" || dtype === "f32" || dtype === "f16") {
    const f = data as Float64Array;
    for (let i = 0; i < n; i++) f[i] = rng.normal() * 100;
  }
  return tensor(dtype, shape, data);
}

function rawBytes(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function le64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

/** Builds a file byte by byte after the published format: u64 LE length, JSON, data. */
function handBuilt(json: string, data: Uint8Array, pad = true): Uint8Array {
  let text = json;
  if (pad) { while ((new TextEncoder().encode(text).length) % 8 !== 0) text += " "; }
  const header = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + header.length + data.length);
  out.set(le64(header.length), 0);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

Deno.test("a file laid out as Hugging Face writes it (metadata, space padding, sorted by dtype size) reads back exactly", () => {
  // HF's writer puts __metadata__ first and orders tensors by decreasing alignment.
  const w = new Float32Array([1.5, -2, 3.25, 0]);
  const ids = new BigInt64Array([-1n, 2n ** 40n]);
  const h = new Uint16Array([0x3c00, 0xbc00, 0x7c00]); // f16: 1, -1, +inf
  const mask = new Uint8Array([1, 0, 1]);
  const data = new Uint8Array(16 + 16 + 6 + 3);
  data.set(new Uint8Array(ids.buffer), 0);
  data.set(new Uint8Array(w.buffer), 16);
  data.set(new Uint8Array(h.buffer), 32);
  data.set(mask, 38);
  const json = `{"__metadata__":{"format":"pt","note":"hé"},` +
    `"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},` +
    `"layer.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},` +
    `"half":{"dtype":"F16","shape":[3],"data_offsets":[32,38]},` +
    `"mask":{"dtype":"BOOL","shape":[1,3],"data_offsets":[38,41]}}`;
  const file = handBuilt(json, data);
  assert.equal((file.length - data.length) % 8, 0);
  const { tensors, metadata } = parseSafetensors(file);
  assert.deepEqual(metadata, { format: "pt", note: "hé" });
  assert.deepEqual([...tensors.keys()], ["ids", "layer.weight", "half", "mask"]);
  assert.deepEqual([...tensors.get("ids")!.data as BigInt64Array], [-1n, 2n ** 40n]);
  assert.deepEqual([...tensors.get("layer.weight")!.data], [1.5, -2, 3.25, 0]);
  assert.deepEqual(tensors.get("layer.weight")!.shape, [2, 2]);
  assert.deepEqual([...tensors.get("half")!.data], [1, -1, Infinity]);
  assert.equal(tensors.get("half")!.dtype, "f16");
  assert.deepEqual([...tensors.get("mask")!.data], [1, 0, 1]);
  assert.equal(tensors.get("mask")!.dtype, "bool");
});

Deno.test("every dtype round-trips through serializeSafetensors and parseSafetensors bit for bit", () => {
  const input = new Map<string, Tensor>();
  DTYPES.forEach((d, i) => input.set(`t_${d}`, randomTensor(d, [3, i + 1], i)));
  input.set("scalar", randomTensor("f32", [], 99));
  input.set("empty", randomTensor("f16", [0, 5], 98));
  const bytes = serializeSafetensors(input, { a: "1", b: "" });
  const { tensors, metadata } = parseSafetensors(bytes);
  assert.deepEqual(metadata, { a: "1", b: "" });
  assert.deepEqual([...tensors.keys()], [...input.keys()]);
  for (const [name, t] of input) {
    const got = tensors.get(name)!;
    assert.equal(got.dtype, t.dtype, name);
    assert.deepEqual(got.shape, t.shape, name);
    assert.equal(got.data.constructor, t.data.constructor, name);
    assert.deepEqual(rawBytes(got), rawBytes(t), name);
  }
});

Deno.test("serializeSafetensors follows the format rules: 8-byte padded JSON header, contiguous data in the given order", () => {
  const a = randomTensor("i8", [3], 1);
  const b = randomTensor("f64", [2], 2);
  const c = randomTensor("bf16", [2, 2], 3);
  const bytes = serializeSafetensors({ zeta: a, alpha: b, mid: c }, { format: "pt" });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.ok(text.startsWith("{"));
  assert.match(text, /^\{[^]*\} *$/);
  const header = JSON.parse(text);
  assert.deepEqual(Object.keys(header), ["__metadata__", "zeta", "alpha", "mid"]);
  assert.deepEqual(header.__metadata__, { format: "pt" });
  assert.deepEqual(header.zeta, { dtype: "I8", shape: [3], data_offsets: [0, 3] });
  assert.deepEqual(header.alpha, { dtype: "F64", shape: [2], data_offsets: [3, 19] });
  assert.deepEqual(header.mid, { dtype: "BF16", shape: [2, 2], data_offsets: [19, 27] });
  assert.equal(bytes.length, 8 + n + 27);
  assert.deepEqual(bytes.subarray(8 + n, 8 + n + 3), rawBytes(a));
  assert.deepEqual(bytes.subarray(8 + n + 3, 8 + n + 19), rawBytes(b));
  assert.deepEqual(bytes.subarray(8 + n + 19), rawBytes(c));
  // the unaligned f64 (offset 3) is copied into aligned storage
  const back = parseSafetensors(bytes);
  assert.deepEqual([...back.tensors.get("alpha")!.data], [...b.data]);
});

Deno.test("serializeSafetensors without metadata writes no __metadata__ key, and Map or record inputs give the same bytes", () => {
  const t = randomTensor("u16", [4], 5);
  const fromRecord = serializeSafetensors({ x: t });
  const fromMap = serializeSafetensors(new Map([["x", t]]));
  assert.deepEqual(fromRecord, fromMap);
  const n = Number(new DataView(fromRecord.buffer).getBigUint64(0, true));
  assert.ok(!new TextDecoder().decode(fromRecord.subarray(8, 8 + n)).includes("__metadata__"));
});

Deno.test("parseSafetensors views aligned data by default and copies everything with copy: true", () => {
  const bytes = serializeSafetensors({ x: randomTensor("f32", [4], 7) });
  const view = parseSafetensors(bytes).tensors.get("x")!;
  const copy = parseSafetensors(bytes, { copy: true }).tensors.get("x")!;
  assert.equal(view.data.buffer, bytes.buffer);
  assert.notEqual(copy.data.buffer, bytes.buffer);
  assert.deepEqual(rawBytes(view), rawBytes(copy));
});

Deno.test("parseSafetensors reads tensors at unaligned absolute offsets (a subarray of a larger buffer)", () => {
  const t = randomTensor("f64", [5], 11);
  const bytes = serializeSafetensors({ x: t });
  const big = new Uint8Array(bytes.length + 3);
  big.set(bytes, 3);
  const got = parseSafetensors(big.subarray(3)).tensors.get("x")!;
  assert.deepEqual([...got.data], [...t.data]);
});

Deno.test("serializeSafetensors rejects mismatched storage, shapes, names and metadata", () => {
  const t = tensor("f32", [2]);
  assert.throws(
    () => serializeSafetensors({ x: { dtype: "f32", shape: [2], data: new Float64Array(2) } }),
    TypeError,
  );
  assert.throws(
    () => serializeSafetensors({ x: { dtype: "f32", shape: [3], data: new Float32Array(2) } }),
    RangeError,
  );
  assert.throws(() => serializeSafetensors({ __metadata__: t }), TypeError);
  assert.throws(
    () => serializeSafetensors({ x: t }, { a: 1 } as unknown as Record<string, string>),
    TypeError,
  );
});

function expectError(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(() => parseSafetensors(bytes), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

const f32x2 = new Uint8Array(new Float32Array([1, 2]).buffer);

Deno.test("parseSafetensors names the tensor and the rule for each kind of invalid header", () => {
  const e = (entry: string, data = f32x2) => handBuilt(`{"w":${entry}}`, data);
  expectError(new Uint8Array(5), /fewer than the 8-byte/);
  expectError(handBuilt("{}", new Uint8Array()).subarray(0, 12), /runs past the end/);
  expectError(new Uint8Array([0, 0, 0, 0, 1, 0, 0, 0, 0x7b]), /exceeds the limit/);
  expectError(new Uint8Array([0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0]), /exceeds the limit/); // 100,000,001
  expectError(le64(0), /length is 0/);
  expectError(handBuilt("{not json", new Uint8Array()), /not JSON/);
  expectError(handBuilt("[1,2]", new Uint8Array()), /must be a JSON object/);
  expectError(handBuilt("null", new Uint8Array()), /must be a JSON object/);
  expectError(handBuilt(`"text"`, new Uint8Array()), /must be a JSON object/);
  const badUtf8 = handBuilt("{}      ", new Uint8Array());
  badUtf8[9] = 0xff;
  expectError(badUtf8, /UTF-8/);
  expectError(
    handBuilt(`{"__metadata__":{"a":1}}`, new Uint8Array()),
    /'__metadata__' value of "a"/,
  );
  expectError(
    handBuilt(`{"__metadata__":[]}`, new Uint8Array()),
    /'__metadata__' must be an object/,
  );
  expectError(e(`[]`), /"w".*must be an object/);
  expectError(
    e(`{"dtype":"F33","shape":[2],"data_offsets":[0,8]}`),
    /"w".*unsupported dtype "F33"/,
  );
  expectError(e(`{"dtype":"constructor","shape":[2],"data_offsets":[0,8]}`), /unsupported dtype/);
  expectError(e(`{"shape":[2],"data_offsets":[0,8]}`), /"w".*unsupported dtype/);
  expectError(e(`{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}`), /"w".*non-negative integers/);
  expectError(
    e(`{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}`),
    /"w".*non-negative integers/,
  );
  expectError(
    e(`{"dtype":"F32","shape":"2","data_offsets":[0,8]}`),
    /"w".*'shape' must be an array/,
  );
  expectError(e(`{"dtype":"F32","shape":[2],"data_offsets":[0]}`), /"w".*'data_offsets'/);
  expectError(e(`{"dtype":"F32","shape":[2],"data_offsets":[8,0]}`), /"w".*reversed/);
  expectError(e(`{"dtype":"F32","shape":[2],"data_offsets":[0,16]}`), /"w".*run past/);
  expectError(e(`{"dtype":"F32","shape":[3],"data_offsets":[0,8]}`), /"w".*needs 12 bytes/);
  expectError(
    e(`{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}`),
    /"w".*more than 2\^53 bytes/,
  );
  expectError(
    handBuilt(
      `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},` +
        `"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}`,
      new Uint8Array(8),
    ),
    /"b".*overlap.*"a"/,
  );
  expectError(
    handBuilt(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, new Uint8Array(8)),
    /"a".*gap/,
  );
  expectError(
    handBuilt(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, new Uint8Array(8)),
    /cover 4 bytes of the 8-byte data section/,
  );
  expectError(
    handBuilt(`{"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}`, new Uint8Array([1, 2])),
    /"m".*not 0 or 1/,
  );
});

Deno.test("parseSafetensors accepts unpadded headers, zero-length tensors sharing an offset, and ignores unknown entry keys", () => {
  const file = handBuilt(
    `{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},` +
      `"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":true}}`,
    f32x2,
    false,
  );
  const { tensors } = parseSafetensors(file);
  assert.deepEqual(tensors.get("e")!.shape, [0, 3]);
  assert.deepEqual([...tensors.get("w")!.data], [1, 2]);
  assert.equal(SIZE.f32, 4);
  assert.equal(ST_NAME.f8e4m3, "F8_E4M3");
});

Deno.test("writeSafetensors then readSafetensors and openSafetensors give back the tensors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/model.safetensors`;
    const input = new Map<string, Tensor>();
    DTYPES.forEach((d, i) => input.set(`t.${d}`, randomTensor(d, [2, i + 2], 100 + i)));
    await writeSafetensors(path, input, { format: "pt" });
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["model.safetensors"]);
    assert.deepEqual(await Deno.readFile(path), serializeSafetensors(input, { format: "pt" }));
    const whole = await readSafetensors(path);
    assert.deepEqual(whole.metadata, { format: "pt" });
    const file = await openSafetensors(path);
    try {
      assert.deepEqual(file.names, [...input.keys()]);
      assert.deepEqual(file.metadata, { format: "pt" });
      const reads = await Promise.all(file.names.map((n) => file.read(n)));
      for (const [i, [name, t]] of [...input].entries()) {
        const info = file.info(name);
        assert.equal(info.dtype, t.dtype);
        assert.deepEqual(info.shape, t.shape);
        assert.equal(info.byteLength, t.data.byteLength);
        const bytes = await Deno.readFile(path);
        assert.deepEqual(
          bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength),
          rawBytes(t),
        );
        assert.deepEqual(rawBytes(reads[i]!), rawBytes(t), name);
        assert.deepEqual(rawBytes(whole.tensors.get(name)!), rawBytes(t), name);
      }
      assert.throws(() => file.info("missing"), RangeError);
    } finally {
      file.close();
    }
    await assert.rejects(file.read(file.names[0]!), TypeError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeSafetensors replaces an existing file atomically and leaves nothing behind on failure", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/w.safetensors`;
    await writeSafetensors(path, { a: randomTensor("f32", [3], 1) });
    const before = await Deno.readFile(path);
    // invalid input: rejected before anything is written
    await assert.rejects(
      writeSafetensors(path, { a: { dtype: "f32", shape: [9], data: new Float32Array(3) } }),
      RangeError,
    );
    // failure while writing: the destination folder is read-only
    await Deno.chmod(dir, 0o500);
    let failed = false;
    try {
      await writeSafetensors(path, { b: randomTensor("f32", [3], 2) });
    } catch {
      failed = true;
    } finally {
      await Deno.chmod(dir, 0o700);
    }
    if (failed || Deno.uid?.() !== 0) {
      assert.ok(failed, "writing into a read-only folder should fail (not root)");
      assert.deepEqual(await Deno.readFile(path), before);
    }
    // failure at the rename: the destination is a non-empty folder
    await Deno.mkdir(`${dir}/blocked`);
    await Deno.writeTextFile(`${dir}/blocked/keep`, "x");
    await assert.rejects(writeSafetensors(`${dir}/blocked`, { a: randomTensor("u8", [2], 3) }));
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["blocked", "w.safetensors"]);
    // success replaces the old contents
    await writeSafetensors(path, { b: randomTensor("i32", [2], 4) });
    assert.deepEqual([...(await readSafetensors(path)).tensors.keys()], ["b"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openSafetensors rejects a bad header with SafetensorsError and reports a file truncated after opening", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bad.safetensors`;
    await Deno.writeFile(path, handBuilt("[]", new Uint8Array()));
    await assert.rejects(openSafetensors(path), SafetensorsError);
    await writeSafetensors(path, { a: randomTensor("f64", [64], 5) });
    const file = await openSafetensors(path);
    try {
      await Deno.truncate(path, 100);
      await assert.rejects(file.read("a"), SafetensorsError);
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Cross-checks with Hugging Face's own safetensors library.

/** Our dtypes with Hugging Face's Python dtype names. */
const HF_PY_DTYPE: [DType, string][] = [
  ["f64", "float64"],
  ["f32", "float32"],
  ["f16", "float16"],
  ["bf16", "bfloat16"],
  ["i64", "int64"],
  ["i32", "int32"],
  ["i16", "int16"],
  ["i8", "int8"],
  ["u8", "uint8"],
  ["u16", "uint16"],
  ["u32", "uint32"],
  ["bool", "bool"],
  ["f8e4m3", "float8_e4m3fn"],
  ["f8e5m2", "float8_e5m2"],
];

/** The deterministic bytes of fixture tensor k (bool: 0/1). */
function pattern(k: number, n: number, dtype: DType): Uint8Array {
  return Uint8Array.from(
    { length: n },
    (_, i) => dtype === "bool" ? (i + k) & 1 : (i * 37 + k * 11) & 0xff,
  );
}

function fixtureShape(k: number): number[] {
  return k === 0 ? [] : k % 3 === 0 ? [2, 3] : [k % 4 + 1];
}

const FIXTURE = new URL("./testdata/hf_all_dtypes.safetensors", import.meta.url);

Deno.test("a file written by Hugging Face's safetensors 0.8.0 (all 14 dtypes, metadata) reads here", async () => {
  // Made once by tests/core/testdata/hf_cross_check.py ("write" mode) with
  // Hugging Face's library; its bytes are that library's, not ours.
  const file = await Deno.readFile(FIXTURE);
  const { tensors, metadata } = parseSafetensors(file);
  assert.deepEqual(metadata, { format: "pt", origin: "hf" });
  assert.equal(tensors.size, HF_PY_DTYPE.length);
  HF_PY_DTYPE.forEach(([dtype], k) => {
    const t = tensors.get(`t.${dtype}`);
    assert.ok(t, `t.${dtype}`);
    assert.equal(t.dtype, dtype);
    assert.deepEqual(t.shape, fixtureShape(k));
    assert.deepEqual(rawBytes(t), pattern(k, t.data.byteLength, dtype), dtype);
  });
});

async function findPython(): Promise<string | null> {
  const python = Deno.env.get("LLMC_PYTHON") ?? "python3";
  try {
    const probe = await new Deno.Command(python, {
      args: ["-c", "import safetensors, numpy"],
      stdout: "null",
      stderr: "null",
    }).output();
    return probe.success ? python : null;
  } catch {
    return null;
  }
}

Deno.test("Hugging Face's safetensors reads our files and writes files we read (when Python has it)", async () => {
  const python = await findPython();
  if (python === null) {
    console.log(
      "skipped: no Python with safetensors and numpy (set LLMC_PYTHON to one to run this cross-check)",
    );
    return;
  }
  const script = new URL("./testdata/hf_cross_check.py", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  try {
    // ours → theirs
    const input = new Map<string, Tensor>();
    HF_PY_DTYPE.forEach(([d], i) => input.set(`w.${d}`, randomTensor(d, fixtureShape(i), 300 + i)));
    const ours = `${dir}/ours.safetensors`;
    await writeSafetensors(ours, input, { format: "pt", note: "written by llmcompress" });
    const read = await new Deno.Command(python, { args: [script, "read", ours] }).output();
    assert.ok(read.success, new TextDecoder().decode(read.stderr));
    const seen = JSON.parse(new TextDecoder().decode(read.stdout)) as {
      tensors: { name: string; dtype: string; shape: number[]; hex: string }[];
      metadata: Record<string, string>;
    };
    assert.deepEqual(seen.metadata, { format: "pt", note: "written by llmcompress" });
    assert.equal(seen.tensors.length, input.size);
    for (const s of seen.tensors) {
      const t = input.get(s.name)!;
      assert.equal(s.dtype, ST_NAME[t.dtype]);
      assert.deepEqual(s.shape, t.shape);
      const hex = [...rawBytes(t)].map((b) => b.toString(16).padStart(2, "0")).join("");
      assert.equal(s.hex, hex, s.name);
    }
    // theirs → ours
    const theirs = `${dir}/theirs.safetensors`;
    const spec = HF_PY_DTYPE.map(([d, py], k) => {
      const shape = fixtureShape(k);
      const n = shape.reduce((a, b) => a * b, 1) * SIZE[d];
      const hex = [...pattern(k, n, d)].map((b) => b.toString(16).padStart(2, "0")).join("");
      return { name: `t.${d}`, dtype: py, shape, hex };
    });
    const write = await new Deno.Command(python, {
      args: [script, "write", theirs, JSON.stringify(spec)],
    }).output();
    assert.ok(write.success, new TextDecoder().decode(write.stderr));
    const back = await readSafetensors(theirs);
    assert.deepEqual(back.metadata, { format: "pt", origin: "hf" });
    HF_PY_DTYPE.forEach(([d], k) => {
      const t = back.tensors.get(`t.${d}`)!;
      assert.equal(t.dtype, d);
      assert.deepEqual(t.shape, fixtureShape(k));
      assert.deepEqual(rawBytes(t), pattern(k, t.data.byteLength, d));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openSafetensors reads one tensor of a sparse 8 GiB file without reading the rest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/big.safetensors`;
    const big = 2 ** 31; // f32 elements: 8 GiB of data
    const small = new Float32Array([1, 2, 3, 4]);
    const json = `{"small":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},` +
      `"big":{"dtype":"F32","shape":[2,${big / 2}],"data_offsets":[16,${16 + big * 4}]}}`;
    const head = handBuilt(json, new Uint8Array(small.buffer));
    await Deno.writeFile(path, head);
    await Deno.truncate(path, head.length + big * 4); // a hole: no disk space used
    using file = await openSafetensors(path);
    assert.deepEqual(file.names, ["small", "big"]);
    assert.deepEqual(file.info("big"), {
      dtype: "f32",
      shape: [2, big / 2],
      byteOffset: head.length,
      byteLength: big * 4,
    });
    assert.deepEqual([...(await file.read("small")).data], [1, 2, 3, 4]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
