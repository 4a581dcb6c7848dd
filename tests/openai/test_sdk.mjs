// test_sdk.mjs: the official `openai` npm client (pinned in tests/openai/npm) against
// deepseekd-openai in front of the real deepseekd on the tiny chat model. Run by
// run_with_gateway.sh (environment: OPENAI_BASE_URL, DSD_MODEL, OPENAI_NPM).
//   a chat; the same chat streamed (same seed: the same text); a tool call round trip with
//   the daemon's forced tool-call output, whole and streamed; logprobs; thinking mode;
//   /v1/completions; and errors (unknown model 404, bad temperature 400) as SDK exceptions.
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const require = createRequire(process.env.OPENAI_NPM + '/node_modules/');
const { OpenAI } = require('openai');
const client = new OpenAI({ maxRetries: 0, timeout: 120000 });
const model = process.env.DSD_MODEL;
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

const TOOLS = [{
    type: 'function',
    function: {
        name: 'get_weather', description: 'Weather of a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
}];
const ask = { role: 'user', content: 'What is the weather in Paris? [[force-tool-call]]' };

await check('models.list names the daemon\'s model', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids, [model]);
    const one = await client.models.retrieve(model);
    assert.equal(one.id, model);
});

let whole;
await check('chat: a completion with usage', async () => {
    whole = await client.chat.completions.create({
        model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }],
        max_tokens: 8, temperature: 0.8, top_p: 0.95, seed: 1234,
    });
    assert.equal(whole.object, 'chat.completion');
    assert.match(whole.id, /^chatcmpl-/);
    assert.equal(whole.choices.length, 1);
    const c = whole.choices[0];
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(c.message.content.length > 0);
    assert.equal(c.finish_reason, 'length');
    assert.equal(whole.usage.completion_tokens, 8);
    assert.ok(whole.usage.prompt_tokens > 5);
    assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + 8);
    assert.equal(typeof whole.usage.prompt_tokens_details.cached_tokens, 'number');
});

await check('chat: the same seed gives the same text again', async () => {
    const again = await client.chat.completions.create({
        model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Hello!' }] }],
        max_completion_tokens: 8, temperature: 0.8, top_p: 0.95, seed: 1234,
    });
    assert.equal(again.choices[0].message.content, whole.choices[0].message.content);
});

await check('chat streamed: deltas add up to the same text, usage chunk, [DONE]', async () => {
    const stream = await client.chat.completions.create({
        model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }],
        max_tokens: 8, temperature: 0.8, top_p: 0.95, seed: 1234, stream: true,
        stream_options: { include_usage: true },
    });
    let text = '', finish = null, usage = null, chunks = 0, role = null;
    for await (const ch of stream) {
        chunks++;
        assert.equal(ch.object, 'chat.completion.chunk');
        if (ch.usage) usage = ch.usage;
        for (const c of ch.choices) {
            if (c.delta.role) role = c.delta.role;
            if (c.delta.content) text += c.delta.content;
            if (c.finish_reason) finish = c.finish_reason;
        }
    }
    assert.equal(role, 'assistant');
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, 'length');
    assert.ok(chunks >= 3, `only ${chunks} chunks`);
    assert.equal(usage.completion_tokens, 8);
    assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
});

let call, first;
await check('tool call: the forced DSML output becomes tool_calls with JSON arguments', async () => {
    first = await client.chat.completions.create({ model, messages: [ask], tools: TOOLS, max_tokens: 200 });
    const c = first.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.content, null);
    assert.equal(c.message.tool_calls.length, 1);
    call = c.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
    assert.match(call.id, /^call_/);
});

await check('tool call round trip: the result goes back and the model answers', async () => {
    const second = await client.chat.completions.create({
        model, max_tokens: 6, seed: 7, tools: TOOLS,
        messages: [ask, first.choices[0].message,
                   { role: 'tool', tool_call_id: call.id, content: '{"temperature_c": 21}' }],
    });
    const c = second.choices[0];
    assert.ok(['length', 'stop'].includes(c.finish_reason), c.finish_reason);
    assert.equal(typeof c.message.content, 'string');
    assert.equal(c.message.tool_calls, undefined);
    // the call and its result are in the prompt now
    assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens + 20,
              `${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
});

await check('tool call streamed: tool_calls deltas assemble to the same call', async () => {
    const stream = await client.chat.completions.create({ model, messages: [ask], tools: TOOLS, max_tokens: 200, stream: true });
    const calls = {};
    let finish = null;
    for await (const ch of stream) {
        const c = ch.choices[0];
        if (!c) continue;
        for (const d of c.delta.tool_calls || []) {
            calls[d.index] ??= { id: '', name: '', args: '' };
            if (d.id) calls[d.index].id = d.id;
            if (d.function?.name) calls[d.index].name += d.function.name;
            if (d.function?.arguments) calls[d.index].args += d.function.arguments;
        }
        if (c.finish_reason) finish = c.finish_reason;
    }
    assert.equal(finish, 'tool_calls');
    assert.deepEqual(Object.keys(calls), ['0']);
    assert.equal(calls[0].name, 'get_weather');
    assert.deepEqual(JSON.parse(calls[0].args), { city: 'Paris' });
});

await check('tool_choice "required" is refused (400), not silently ignored', async () => {
    await assert.rejects(
        client.chat.completions.create({ model, messages: [ask], tools: TOOLS, tool_choice: 'required' }),
        (e) => e instanceof OpenAI.BadRequestError && e.param === 'tool_choice');
});

await check('logprobs: one entry per token, top_logprobs sorted, the best first', async () => {
    const r = await client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Count to three.' }], max_tokens: 5, seed: 3,
        logprobs: true, top_logprobs: 3,
    });
    const lp = r.choices[0].logprobs.content;
    assert.equal(lp.length, 5);
    for (const e of lp) {
        assert.equal(typeof e.token, 'string');
        assert.ok(e.logprob <= 0);
        assert.deepEqual(e.bytes, [...Buffer.from(e.token, 'utf8')]);
        assert.equal(e.top_logprobs.length, 3);
        for (let i = 1; i < 3; i++) assert.ok(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob);
        assert.ok(e.logprob <= e.top_logprobs[0].logprob + 1e-6);
    }
});

await check('logprobs streamed: the same entries chunk by chunk', async () => {
    const stream = await client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Count to three.' }], max_tokens: 5, seed: 3,
        logprobs: true, top_logprobs: 3, stream: true,
    });
    let n = 0;
    for await (const ch of stream)
        for (const c of ch.choices) n += c.logprobs?.content?.length ?? 0;
    assert.equal(n, 5);
});

await check('thinking mode: reasoning_content beside content', async () => {
    const r = await client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Think first.' }], max_tokens: 6, seed: 5,
        chat_template_kwargs: { thinking: true },
    });
    const m = r.choices[0].message;
    assert.equal(typeof m.reasoning_content, 'string');
    assert.ok(m.reasoning_content.length > 0);
    const off = await client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Think first.' }], max_tokens: 6, seed: 5,
        thinking: { type: 'disabled' },
    });
    assert.equal(off.choices[0].message.reasoning_content, undefined);
    assert.ok(off.usage.prompt_tokens === r.usage.prompt_tokens,
              'the thinking prompt ends in <think>, the other in </think>: same length');
});

await check('completions: a raw prompt, whole and streamed', async () => {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, seed: 9, logprobs: 2 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 6);
    assert.equal(r.choices[0].logprobs.tokens.length, 6);
    assert.equal(r.choices[0].logprobs.tokens.join(''), r.choices[0].text);
    const s = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, seed: 9, stream: true });
    let text = '';
    for await (const ch of s) text += ch.choices[0]?.text ?? '';
    assert.equal(text, r.choices[0].text);
});

await check('errors: unknown model is NotFoundError (404, model_not_found)', async () => {
    await assert.rejects(
        client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
        (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found');
});

await check('errors: temperature out of range is BadRequestError (400, param temperature)', async () => {
    await assert.rejects(
        client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], temperature: 5 }),
        (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature' &&
               /temperature/.test(e.message));
});

await check('errors: a tool result without a call is a 400 naming the message', async () => {
    await assert.rejects(
        client.chat.completions.create({ model, messages: [{ role: 'tool', tool_call_id: 'x', content: '1' }] }),
        (e) => e instanceof OpenAI.BadRequestError && /tool/.test(e.message));
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
