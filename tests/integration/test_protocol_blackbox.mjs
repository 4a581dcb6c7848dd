// A client written from docs/PROTOCOL.md alone, with its own msgpack writer and reader (no
// ipc/ code, no msgpack library): legal encodings the project's own encoder never produces,
// every kind of refused value, malformed frames, hello problems, a frame sent one byte at a
// time, and a flooding client that never reads. Each case checks the answer the document
// promises and that the connection (or the daemon) goes on serving.
//   DSD_SOCKET=/path/to.sock node test_protocol_blackbox.mjs
import net from 'node:net';

const SOCK = process.env.DSD_SOCKET;
if (!SOCK) {
    console.error('DSD_SOCKET is not set');
    process.exit(2);
}

// ---- msgpack, as the document describes it (§2, §3) ---------------------------------------
class Raw { constructor(b) { this.b = b; } }          // bytes written as they are
class Pairs { constructor(p) { this.p = p; } }        // a map that may repeat a key
const u8 = (...a) => Buffer.from(a);
function be(n, bytes) {
    const b = Buffer.alloc(bytes);
    if (bytes === 8) b.writeBigUInt64BE(BigInt(n)); else b.writeUIntBE(n, 0, bytes);
    return b;
}
function enc(o) {
    if (o instanceof Raw) return o.b;
    if (o === null) return u8(0xc0);
    if (o === true) return u8(0xc3);
    if (o === false) return u8(0xc2);
    if (typeof o === 'bigint') return Buffer.concat([u8(0xcf), be(o, 8)]);
    if (typeof o === 'number' && Number.isInteger(o)) {
        if (o >= 0 && o < 128) return u8(o);
        if (o >= -32 && o < 0) return u8(o & 0xff);
        if (o >= 0 && o < 2 ** 8) return u8(0xcc, o);
        if (o >= 0 && o < 2 ** 16) return Buffer.concat([u8(0xcd), be(o, 2)]);
        if (o >= 0 && o < 2 ** 32) return Buffer.concat([u8(0xce), be(o, 4)]);
        if (o >= 0) return Buffer.concat([u8(0xcf), be(o, 8)]);
        const b = Buffer.alloc(9); b[0] = 0xd3; b.writeBigInt64BE(BigInt(o), 1); return b;
    }
    if (typeof o === 'number') { const b = Buffer.alloc(9); b[0] = 0xcb; b.writeDoubleBE(o, 1); return b; }
    if (typeof o === 'string') {
        const s = Buffer.from(o, 'utf8');
        const h = s.length < 32 ? u8(0xa0 | s.length) : s.length < 256 ? u8(0xd9, s.length)
                                                                     : Buffer.concat([u8(0xda), be(s.length, 2)]);
        return Buffer.concat([h, s]);
    }
    if (Array.isArray(o)) {
        const h = o.length < 16 ? u8(0x90 | o.length) : o.length < 65536 ? Buffer.concat([u8(0xdc), be(o.length, 2)])
                                                                        : Buffer.concat([u8(0xdd), be(o.length, 4)]);
        return Buffer.concat([h, ...o.map(enc)]);
    }
    const pairs = o instanceof Pairs ? o.p : Object.entries(o);
    const h = pairs.length < 16 ? u8(0x80 | pairs.length) : Buffer.concat([u8(0xde), be(pairs.length, 2)]);
    return Buffer.concat([h, ...pairs.flatMap(([k, v]) => [enc(k), enc(v)])]);     // Pairs may have int keys
}
function dec(b, i = 0) {
    const c = b[i++];
    const str = (n) => [b.toString('utf8', i, i + n), i + n];
    const arr = (n) => { const a = []; for (let k = 0; k < n; k++) { let v; [v, i] = dec(b, i); a.push(v); } return [a, i]; };
    const map = (n) => { const m = {}; for (let k = 0; k < n; k++) { let key, v; [key, i] = dec(b, i); [v, i] = dec(b, i); m[key] = v; } return [m, i]; };
    if (c < 0x80) return [c, i];
    if (c >= 0xe0) return [c - 256, i];
    if (c <= 0x8f) return map(c & 15);
    if (c <= 0x9f) return arr(c & 15);
    if (c <= 0xbf) return str(c & 31);
    switch (c) {
    case 0xc0: return [null, i];
    case 0xc2: return [false, i];
    case 0xc3: return [true, i];
    case 0xca: return [b.readFloatBE(i), i + 4];
    case 0xcb: return [b.readDoubleBE(i), i + 8];
    case 0xcc: return [b[i], i + 1];
    case 0xcd: return [b.readUInt16BE(i), i + 2];
    case 0xce: return [b.readUInt32BE(i), i + 4];
    case 0xcf: return [Number(b.readBigUInt64BE(i)), i + 8];
    case 0xd0: return [b.readInt8(i), i + 1];
    case 0xd1: return [b.readInt16BE(i), i + 2];
    case 0xd2: return [b.readInt32BE(i), i + 4];
    case 0xd3: return [Number(b.readBigInt64BE(i)), i + 8];
    case 0xd9: { const n = b[i]; i += 1; return str(n); }
    case 0xda: { const n = b.readUInt16BE(i); i += 2; return str(n); }
    case 0xdb: { const n = b.readUInt32BE(i); i += 4; return str(n); }
    case 0xdc: { const n = b.readUInt16BE(i); i += 2; return arr(n); }
    case 0xdd: { const n = b.readUInt32BE(i); i += 4; return arr(n); }
    case 0xde: { const n = b.readUInt16BE(i); i += 2; return map(n); }
    case 0xdf: { const n = b.readUInt32BE(i); i += 4; return map(n); }
    }
    throw new Error('msgpack byte 0x' + c.toString(16) + ' in a daemon frame');
}

// ---- a connection: frames out, frames in ---------------------------------------------------
class Conn {
    static async open(hello = true) {
        const c = new Conn();
        await new Promise((ok, bad) => { c.s = net.createConnection(SOCK, ok); c.s.on('error', bad); });
        c.buf = Buffer.alloc(0); c.waiters = []; c.closed = false;
        c.s.on('data', (d) => { c.buf = Buffer.concat([c.buf, d]); c.pump(); });
        c.s.on('close', () => { c.closed = true; c.pump(); });
        if (hello) {
            c.send({ t: 'hello', id: 1, min_version: 1, max_version: 1 });
            c.hello = await c.recv();
            if (c.hello?.t !== 'hello_ok') throw new Error('hello: ' + JSON.stringify(c.hello));
        }
        return c;
    }
    pump() {
        while (this.waiters.length) {
            if (this.buf.length >= 4) {
                const n = this.buf.readUInt32LE(0);
                if (this.buf.length >= 4 + n) {
                    const body = this.buf.subarray(4, 4 + n);
                    this.buf = this.buf.subarray(4 + n);
                    const [o, j] = dec(body);
                    if (j !== n) throw new Error('trailing bytes in a daemon frame');
                    this.waiters.shift()(o);
                    continue;
                }
            }
            if (this.closed) { this.waiters.shift()(null); continue; }
            break;
        }
    }
    recv(ms = 60000) {
        return new Promise((ok) => {
            const t = setTimeout(() => ok('timeout'), ms);
            this.waiters.push((o) => { clearTimeout(t); ok(o); });
            this.pump();
        });
    }
    raw(b) { this.s.write(b); }
    frame(body) { const h = Buffer.alloc(4); h.writeUInt32LE(body.length); this.raw(Buffer.concat([h, body])); }
    send(o) { this.frame(enc(o)); }
    async untilDone(id) {
        const frames = [];
        for (;;) {
            const r = await this.recv();
            if (r === null || r === 'timeout') return [frames, r];
            frames.push(r);
            if (r.id === id && (r.t === 'done' || r.t === 'error')) return [frames, r];
        }
    }
    async ask(o, id) { this.send(o); return (await this.untilDone(id))[1]; }
    close() { this.s.destroy(); }
}

let fails = 0;
function check(name, cond, detail) {
    console.log((cond ? 'ok   ' : 'FAIL ') + name + (cond ? '' : '  ' + JSON.stringify(detail)));
    if (!cond) fails++;
}
const refused = (r, name, inMsg) => r && r.t === 'error' && !r.fatal && (!name || r.name === name) &&
                                    (!inMsg || (r.msg || '').includes(inMsg));

const c = await Conn.open();
const vocab = c.hello.model.vocab_size;
const s = (x) => enc(x);
const gen = (id, more) => ({ t: 'generate', id, tokens: [1, 2, 3], max_tokens: 2, ...more });

// legal encodings the project's own writer never uses (§2: any width; §3: negative-int forms)
let r = await c.ask(new Raw(Buffer.concat([u8(0x84), s('t'), s('generate'), s('id'), u8(0xd0, 5), s('tokens'), s([1, 2, 3]),
                                           s('max_tokens'), u8(0xd1, 0, 2)])), 5);
check('negative-int encodings of a positive id and max_tokens', r?.t === 'done', r);
r = await c.ask(new Raw(Buffer.concat([u8(0xdf, 0, 0, 0, 4), s('t'), s('generate'), s('id'), s(2n ** 64n - 1n),
                                       s('tokens'), u8(0xdd, 0, 0, 0, 2, 1, 2), s('max_tokens'), s(2)])), 2 ** 64 - 1);
check('map32 and array32 headers, id 2^64 - 1', r?.t === 'done', r);
r = await c.ask(new Pairs([['t', 'generate'], ['id', 6], ['tokens', [1, 2]], ['max_tokens', 2], [7, 'an int key'],
                           ['zzz', [1, { a: 2 }]]]), 6);
check('unknown keys and non-string keys are ignored', r?.t === 'done', r);
const f32zero = Buffer.alloc(5); f32zero[0] = 0xca;
r = await c.ask(new Pairs([['t', 'generate'], ['id', 7], ['tokens', [1, 2]], ['max_tokens', 2], ['temperature', new Raw(f32zero)]]), 7);
check('a float32 temperature of 0 (greedy)', r?.t === 'done', r);

// refused values (§3, §4.3): an error naming the key, the connection alive
const cases = [
    [gen(10, { max_tokens: 2.5 }), 'wrong_type', 'max_tokens'],
    [gen(11, { temperature: NaN }), 'bad_value', 'temperature'],
    [gen(12, { temperature: Infinity }), 'bad_value', 'temperature'],
    [{ t: 'generate', id: 13, tokens: [] }, 'bad_value', 'tokens'],
    [{ t: 'generate', id: 14, tokens: [vocab] }, 'bad_token', String(vocab)],
    [{ t: 'generate', id: 15, tokens: [2 ** 40] }, 'bad_value', 'tokens'],
    [{ t: 'generate', id: 16, tokens: [1], text: 'x' }, 'bad_value', null],
    [{ t: 'generate', id: 17 }, null, null],
    [gen(18, { top_logprobs: 3 }), 'bad_value', 'top_logprobs'],
    [gen(19, { stop: [''] }), 'bad_value', 'stop[0]'],
    [gen(20, { stop: Array(17).fill('a') }), 'bad_value', 'stop'],
    [gen(21, { stop: ['a\u0000b'] }), 'bad_value', 'stop[0]'],
    [gen(22, { stop: [5] }), 'wrong_type', 'stop[0]'],
    [gen(23, { top_p: 0 }), 'bad_value', 'top_p'],
    [gen(24, { min_p: 1.5 }), 'bad_value', 'min_p'],
    [gen(25, { priority: 1001 }), 'bad_value', 'priority'],
    [gen(26, { top_k: -3 }), 'bad_value', 'top_k'],
    [gen(27, { logprobs: 1 }), 'wrong_type', 'logprobs'],
    [gen(28, { add_special: true }), 'bad_value', 'add_special'],
    [gen(29, { stop_token_ids: Array.from({ length: 65 }, (_, i) => i) }), 'bad_value', 'stop_token_ids'],
    [gen(30, { ring: 0 }), 'ring_unavailable', 'shm_attach'],
    [{ t: 'generate', id: 31, prompt_span: { offset: 0, count: 4 } }, 'ring_unavailable', 'shm_attach'],
    [{ t: 'generate', id: 32, messages: [] }, 'bad_value', 'messages'],
    [{ t: 'generate', id: 33, messages: [{ role: 'user' }] }, 'bad_value', 'content'],
    [{ t: 'generate', id: 34, messages: [{ role: 'wizard', content: 'x' }] }, 'bad_value', 'role'],
    [{ t: 'generate', id: 35, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }] }, 'bad_value', null],
    [{ t: 'generate', id: 36, messages: [{ role: 'user', content: 'x' }], tools: '[{' }, 'bad_value', 'tools'],
    [{ t: 'generate', id: 37, text: 'x', tools: '[]' }, 'bad_value', 'tools'],
    [{ t: 'generate', id: 38, messages: [{ role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: 'not json' } }] },
                                         { role: 'user', content: 'x' }] }, 'bad_value', 'arguments'],
    [{ t: 'generate', id: 39, messages: [{ role: 'user', content: 'x', name: 'n'.repeat(300) }] }, 'bad_value', 'name'],
    [{ t: 'tokenize', id: 40, text: 'x', messages: [{ role: 'user', content: 'x' }] }, 'bad_value', null],
    [{ t: 'detokenize', id: 41, tokens: [vocab + 5] }, null, null],
    [{ t: 'frobnicate', id: 42 }, 'unknown_type', 'frobnicate'],
];
for (const [o, name, inMsg] of cases) {
    r = await c.ask(o, o.id);
    const show = Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'id')
        .map(([k, v]) => [k, Array.isArray(v) && v.length > 4 ? `[${v.length} entries]` : v]));
    check('refused: ' + JSON.stringify(show).slice(0, 150), refused(r, name, inMsg), r);
}
r = await c.ask(new Pairs([['t', 'generate'], ['id', 43], ['tokens', [1]], ['max_tokens', 1], ['max_tokens', 2]]), 43);
check('a key given twice is bad_value', refused(r, 'bad_value', 'max_tokens'), r);
c.send({ t: 'generate', id: 0, tokens: [1] });
r = await c.recv();
check('id 0 is refused with id 0', refused(r, 'bad_value', 'id') && r.id === 0, r);

// malformed frames (§2): answered with id 0, not fatal
for (const [body, what] of [[u8(0xc1), 'the byte 0xc1'], [s([1, 2]), 'a non-map'], [Buffer.concat([s({ t: 'health', id: 3 }), u8(0)]), 'a trailing byte'],
                            [Buffer.concat([u8(0x82, 0xa1), Buffer.from('t')]), 'a truncated map'],
                            [Buffer.concat([Buffer.alloc(20, 0x91), u8(1)]), 'nesting 20 deep']]) {
    c.frame(body);
    r = await c.recv();
    check(`malformed frame (${what}) answered with id 0, not fatal`, r?.t === 'error' && r.id === 0 && !r.fatal, r);
}
c.raw(Buffer.alloc(4));
r = await c.recv();
check('a frame of length 0 is answered', r?.t === 'error' && r.id === 0, r);

// the connection still serves: a request one byte at a time
const body = enc({ t: 'generate', id: 50, tokens: [1, 2, 3], max_tokens: 3 });
const whole = Buffer.concat([Buffer.from([body.length & 255, body.length >> 8, 0, 0]), body]);
for (const byte of whole) { c.raw(Buffer.from([byte])); await new Promise((ok) => setImmediate(ok)); }
let [frames, done] = await c.untilDone(50);
const ids = frames.filter((f) => f.t === 'tokens').flatMap((f) => f.ids || []);
check('a request sent one byte at a time completes with its tokens', done?.t === 'done' &&
      ids.length === done.usage.completion - (done.finish === 'stop' ? 1 : 0), [done, ids]);
c.send({ t: 'cancel', id: 50 });
r = await c.ask(gen(50, { max_tokens: 1 }), 50);
check('an id reused after its done; a cancel of a finished id is ignored', r?.t === 'done', r);

// seeded sampling repeats (§4.3 seed)
const seeded = async (id) => {
    const [fr, d] = await (c.send(gen(id, { max_tokens: 6, seed: 1234, temperature: 0.8 })), c.untilDone(id));
    return [fr.filter((f) => f.t === 'tokens').flatMap((f) => f.ids || []), d];
};
const [a1] = await seeded(60), [a2, d2] = await seeded(61);
check('the same seed gives the same tokens', d2?.t === 'done' && JSON.stringify(a1) === JSON.stringify(a2), [a1, a2]);

// hello problems, each on a fresh connection (§4.1, §2)
let d = await Conn.open(false);
d.send({ t: 'health', id: 1 });
r = await d.recv();
check('a frame before hello: hello_required, fatal', r?.name === 'hello_required' && r.fatal === true, r);
d.close();
d = await Conn.open(false);
d.send({ t: 'hello', id: 1, min_version: 2, max_version: 9 });
r = await d.recv();
check('no common version: version_unsupported, fatal', r?.name === 'version_unsupported' && r.fatal === true, r);
d.close();
d = await Conn.open(false);
d.send({ t: 'hello', id: 1, min_version: 1, max_version: 1, max_frame: 65535 });
r = await d.recv();
check('hello with max_frame 65535 is refused', r?.t === 'error' && (r.msg || '').includes('max_frame'), r);
d.close();
d = await Conn.open(false);
d.raw(Buffer.from([0x70, 0x11, 0x01, 0x00]));       // 70,000 bytes announced before hello
r = await d.recv();
check('a frame over 65536 before hello: frame_too_large, fatal', r?.name === 'frame_too_large' && r.fatal === true, r);
d.close();
d = await Conn.open();
d.send({ t: 'hello', id: 2, min_version: 1, max_version: 1 });
r = await d.recv();
check('a second hello is bad_value', refused(r, 'bad_value', null), r);
d.close();

// a client that floods requests with large frames and never reads starves no one
const e = await Conn.open();
e.s.pause();
for (let i = 0; i < 64; i++)
    e.send({ t: 'generate', id: 100 + i, tokens: [1, 2, 3], max_tokens: 200, ignore_eos: true, logprobs: true, top_logprobs: 20 });
const t0 = Date.now();
r = await c.ask(gen(70, { tokens: [9, 9] }), 70);
check(`another client is served while one floods and never reads (${Date.now() - t0} ms)`, r?.t === 'done', r);
c.send({ t: 'health', id: 71 });
r = await c.recv();
check('health answers', r?.t === 'health_ok', r);
e.close();
c.close();
console.log(`${fails} failures`);
process.exit(fails ? 1 : 0);
