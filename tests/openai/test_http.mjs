// test_http.mjs: deepseekd-openai under bad and demanding clients, over raw sockets and
// fetch (run by run_with_gateway.sh with --max-requests 64 --stream-buffer-kb 4):
//   malformed JSON, a non-object body, wrong types, unknown paths and methods; oversized
//   bodies (declared and chunked); a client that stops reading its stream while others are
//   served; 64 concurrent streams, a 65th request getting 429 meanwhile; a client that
//   disconnects mid-stream, whose request the daemon must stop.
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync } from 'node:child_process';

const base = new URL(process.env.OPENAI_BASE_URL);
const model = process.env.DSD_MODEL;
// The sanitizer build's CPU engine is several times slower: fewer tokens there
// (OPENAI_TEST_LIGHT, set by tests/openai/CMakeLists.txt); the checks are the same.
const light = process.env.OPENAI_TEST_LIGHT === '1';
const SLOW_TOKENS = light ? 40 : 200, WAVE_TOKENS = light ? 6 : 48;
let passed = 0, failed = 0;
async function check(name, fn) {
    try {
        await fn();
        console.log(`ok   ${name}`);
        passed++;
    } catch (e) {
        console.log(`FAIL ${name}: ${e.stack || e}`);
        failed++;
    }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const url = (p) => `${base.toString().replace(/\/$/, '')}/${p}`;
function stat(name) {
    const out = execFileSync(process.env.DSD_PROBE, ['--socket', process.env.DSD_SOCKET, 'stats'], { encoding: 'utf8' });
    const m = out.match(new RegExp(`^${name}\\s+(\\S+)`, 'm'));
    assert.ok(m, `no ${name} in stats`);
    return Number(m[1]);
}
async function post(path, body, headers = {}) {
    const r = await fetch(url(path), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    return { status: r.status, type: r.headers.get('content-type'), body: await r.text() };
}
function isError(res, status, param) {
    assert.equal(res.status, status, res.body);
    assert.match(res.type, /application\/json/);
    const e = JSON.parse(res.body).error;
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0);
    assert.equal(typeof e.type, 'string');
    if (param !== undefined) assert.equal(e.param, param);
    return e;
}
const chat = (extra = {}) => JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello' }], ...extra });

// A raw HTTP/1.1 request on its own socket; the response is collected as it arrives.
function raw(payload) {
    const s = net.connect(Number(base.port), base.hostname);
    const st = { sock: s, data: '', closed: false };
    s.setEncoding('utf8');
    s.on('data', (d) => { st.data += d; });
    s.on('close', () => { st.closed = true; });
    s.on('error', () => {});
    s.write(payload);
    return st;
}
function streamRequest(body) {
    return `POST ${base.pathname.replace(/\/$/, '')}/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
           `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}
function withDeadline(promise, ms, what) {
    let timer;
    const deadline = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer for ${what} in ${ms} ms`)), ms); });
    return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
async function until(pred, ms, what) {
    const t0 = Date.now();
    while (!pred()) {
        if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
        await sleep(20);
    }
}

await check('malformed JSON is 400 invalid_request_error', async () => {
    const e = isError(await post('chat/completions', '{"model": "x", "messages": ['), 400, null);
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, /parse/);
    isError(await post('chat/completions', '[1, 2]'), 400);
    // U+0000 in a string (a stop string or a message): refused by name, not by the JSON library's flag
    const nul = isError(await post('chat/completions', chat({ max_tokens: 2, stop: ['a\u0000b'] })), 400, null);
    assert.match(nul.message, /may not contain U\+0000/);
    isError(await post('chat/completions', ''), 400);
    isError(await post('completions', '{"model": "' + model + '", "prompt": "x", "max_tokens": "ten"}'), 400, 'max_tokens');
    isError(await post('chat/completions', chat({ messages: 'hi' })), 400, 'messages');
    isError(await post('chat/completions', chat({ stream: 'yes' })), 400, 'stream');
    isError(await post('chat/completions', chat({ n: 2 })), 400, 'n');
    isError(await post('chat/completions', chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] })), 400, 'messages');
});

await check('unknown fields are ignored; unknown paths 404, wrong methods 405', async () => {
    const r = await post('chat/completions', chat({ max_tokens: 2, user: 'me', metadata: { a: 1 }, frobnicate: true, store: false }));
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).usage.completion_tokens, 2);
    const nf = await fetch(url('nothing/here'));
    isError({ status: nf.status, type: nf.headers.get('content-type'), body: await nf.text() }, 404);
    const wm = await fetch(url('chat/completions'));
    isError({ status: wm.status, type: wm.headers.get('content-type'), body: await wm.text() }, 405);
});

await check('oversized bodies are 413, declared or chunked, and the gateway serves on', async () => {
    // declared: answered from the headers alone, before any of the body is read
    const dec = raw(`POST ${base.pathname}/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
                    `Content-Length: ${5 * 1024 * 1024}\r\n\r\n`);
    await until(() => /\r\n\r\n[^]*\}\}/.test(dec.data), 10000, 'the 413 answer');
    assert.match(dec.data, /^HTTP\/1\.1 413/);
    assert.match(dec.data, /"request_too_large"/);
    dec.sock.destroy();
    // chunked: no Content-Length, the limit is found while reading
    const st = raw(`POST ${base.pathname}/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const piece = 'y'.repeat(1 << 20);
    for (let i = 0; i < 6 && !st.closed; i++)
        st.sock.write(`${piece.length.toString(16)}\r\n${piece}\r\n`);
    st.sock.write('0\r\n\r\n');
    await until(() => /\r\n\r\n/.test(st.data), 20000, 'the 413 answer');
    assert.match(st.data, /^HTTP\/1\.1 413/);
    st.sock.destroy();
    const ok = await post('chat/completions', chat({ max_tokens: 1 }));
    assert.equal(ok.status, 200);
});

await check('a client that stops reading its stream holds up no one, and its stream resumes intact', async () => {
    // A long stream whose reader pauses: its buffer (4 KiB here) fills and its worker stops
    // reading from the daemon; other requests must still complete (a gateway that waited on
    // the slow socket would never answer them: the deadline only bounds the test, the
    // sanitizer build on a loaded machine is slow).
    const slow = raw(streamRequest(chat({ stream: true, max_tokens: SLOW_TOKENS, temperature: 0, ignore_eos: true })));
    try {
        await until(() => slow.data.includes('data: '), 120000, 'the first chunk');
        slow.sock.pause();
        const t0 = Date.now();
        for (let i = 0; i < 3; i++) {
            const r = await withDeadline(post('chat/completions', chat({ max_tokens: 4 })), 120000, 'a request beside the slow one');
            assert.equal(r.status, 200);
        }
        console.log(`     (3 requests beside the paused stream took ${Date.now() - t0} ms)`);
        await sleep(500);
        assert.ok(!slow.data.includes('[DONE]'), 'the paused stream should not be finished yet');
        slow.sock.resume();
        await until(() => slow.data.includes('data: [DONE]'), 250000, 'the slow stream to finish');
        const last = JSON.parse(slow.data.split('\n').filter((l) => l.startsWith('data: {')).pop().slice(6));
        assert.equal(last.choices[0].finish_reason, 'length');
    } finally {
        slow.sock.destroy();
    }
});

await check('64 concurrent streams all complete; a 65th request meanwhile gets 429', async () => {
    await until(() => stat('requests_in_flight') === 0, 120000, 'earlier requests to end');
    await sleep(500);     // their workers' last steps after the daemon's done
    const one = async () => {
        const r = await fetch(url('chat/completions'), { method: 'POST', headers: { 'content-type': 'application/json' },
            body: chat({ stream: true, max_tokens: WAVE_TOKENS, ignore_eos: true, stream_options: { include_usage: true } }) });
        assert.equal(r.status, 200);
        assert.match(r.headers.get('content-type'), /text\/event-stream/);
        const text = await r.text();
        const events = text.split('\n\n').filter((e) => e.length);
        assert.equal(events.at(-1), 'data: [DONE]');
        const usage = JSON.parse(events.at(-2).slice(6)).usage;
        assert.equal(usage.completion_tokens, WAVE_TOKENS);
        return events.length;
    };
    const all = Promise.allSettled(Array.from({ length: 64 }, one));
    // all 64 admitted by the gateway (and so by the daemon) before the 65th
    await until(() => stat('requests_in_flight') === 64, 120000, '64 requests in flight');
    const extra = await post('chat/completions', chat({ max_tokens: 1 }));
    const results = await all;
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    const e = isError(extra, 429);
    assert.equal(e.type, 'rate_limit_error');
    const counts = results.map((r) => r.value);
    assert.equal(counts.length, 64);
    const after = await post('chat/completions', chat({ max_tokens: 1 }));
    assert.equal(after.status, 200, 'served again once the streams ended');
});

await check('a client that disconnects mid-stream cancels its request in the daemon', async () => {
    const before = stat('tokens_generated_total');
    const st = raw(streamRequest(chat({ stream: true, max_tokens: 3000, temperature: 0 })));
    await until(() => (st.data.match(/data: /g) || []).length >= 4, 120000, 'a few chunks');
    st.sock.destroy();
    await until(() => stat('requests_in_flight') === 0, 60000, 'the daemon to drop the request');
    const generated = stat('tokens_generated_total') - before;
    assert.ok(generated < 1000, `${generated} tokens generated after the client left`);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
