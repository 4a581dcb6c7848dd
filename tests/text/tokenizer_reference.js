// tests/text/tokenizer_reference.js: the Hugging Face side of the tokenizer identity test.
//
//   node tokenizer_reference.js TOKENIZER_JSON OUT_DIR
//
// Generates the test corpus (deterministic: a fixed-seed PRNG, no clock, no locale) and
// writes, for tests/text/tokenizer_identity.c to compare against:
//   corpus.jsonl       one JSON string per line (the inputs)
//   ref_special.txt    HF ids of each input, encode(text, add_special_tokens=false):
//                      added tokens in the text are matched (our DSD_TOK_PARSE_SPECIAL)
//   ref_plain.txt      HF ids with "added_tokens" emptied: text is only text (our default)
//   ref_decode.jsonl   {"ids": [...], "text": HF decode, "skip": HF decode skipping
//                      special tokens}: every single id, then random id sequences
//   hf_bench.json      HF encode throughput on the corpus, one thread
// Hugging Face's Rust tokenizers come from the npm package @anush008/tokenizers (N-API).
// TOK_REF_TIMING=1 prints how long each stage took (to keep the test under a minute).
'use strict';

// One thread for HF: its batch encoder is rayon-parallel unless told otherwise.
process.env.TOKENIZERS_PARALLELISM = 'false';
process.env.RAYON_NUM_THREADS = '1';

const fs = require('fs');
const path = require('path');

const [tokPath, outDir] = process.argv.slice(2);
if (!tokPath || !outDir) {
  console.error('usage: node tokenizer_reference.js TOKENIZER_JSON OUT_DIR');
  process.exit(2);
}
const { Tokenizer } = require('@anush008/tokenizers');

// ------------------------------------------------------------------------------------
// Deterministic randomness (mulberry32)

function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)); // inclusive
  next.pick = (arr) => arr[Math.floor(next() * arr.length)];
  next.chance = (p) => next() < p;
  return next;
}

const cp = (c) => String.fromCodePoint(c);
const range = (lo, hi) => { const s = []; for (let c = lo; c <= hi; c++) s.push(cp(c)); return s; };
const repeat = (r, n, f) => { let s = ''; for (let i = 0; i < n; i++) s += f(r, i); return s; };

// ------------------------------------------------------------------------------------
// Material

const EN_WORDS = ('the of and to in is you that it he was for on are as with his they I at be this ' +
  'have from or one had by word but not what all were we when your can said there use an each ' +
  'which she do how their if will up other about out many then them these so some her would make ' +
  'like him into time has look two more write go see number no way could people my than first ' +
  'water been call who oil its now find long down day did get come made may part tokenizer ' +
  'inference daemon streaming throughput latency DeepSeek Transformer attention kernel GPU ' +
  'internationalization antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis ' +
  "don't won't it's I'm you're we've they'll she'd O'Neill rock'n'roll e-mail co-operate " +
  'HTTP URL JSON iPhone McDonald eBay YouTube naïve café résumé façade coöperate').split(' ');
const EN_PUNCT = ['.', ',', '!', '?', ';', ':', '...', ' -', ' —', ' (', ')', '"', "'", ' "', '" '];
const ZH = ('的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对' +
  '可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同' +
  '三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定' +
  '深度求索语言模型推理服务器龘齉鬱饕餮').split('');
const ZH_PUNCT = ['，', '。', '！', '？', '、', '；', '：', '「', '」', '『', '』', '（', '）', '《', '》', '——', '……', '“', '”'];
const HIRA = range(0x3041, 0x3096), KATA = range(0x30a1, 0x30fa);
const KANJI = '日本語漢字東京大阪時間天気食事会社学校先生電車駅新聞'.split('');
const HALF_KATA = range(0xff66, 0xff9d);
const HANGUL_JAMO = range(0x1100, 0x1112).concat(range(0x3131, 0x318e));
const AR_LETTERS = range(0x0621, 0x064a), AR_MARKS = range(0x064b, 0x0652);
const AR_DIGITS = range(0x0660, 0x0669), FA_DIGITS = range(0x06f0, 0x06f9);
const COMBINING = range(0x0300, 0x036f);
const DEVA = range(0x0915, 0x0939), DEVA_SIGNS = range(0x093e, 0x094d);
const THAI = range(0x0e01, 0x0e2e), THAI_MARKS = range(0x0e31, 0x0e3a).concat(range(0x0e47, 0x0e4e));
const HEBREW = range(0x05d0, 0x05ea), NIQQUD = range(0x05b0, 0x05bc);
const CYRILLIC = range(0x0410, 0x044f), GREEK = range(0x0391, 0x03c9).filter((c) => c !== '\u03a2');
const LATIN_EXT = range(0x00c0, 0x024f);
const DIGIT_SETS = [range(0x30, 0x39), AR_DIGITS, FA_DIGITS, range(0xff10, 0xff19), range(0x0966, 0x096f),
  range(0x09e6, 0x09ef), range(0x1d7ce, 0x1d7ff), ['²', '³', '¹', '¼', '½', '¾', 'Ⅳ', 'Ⅻ', '①', '⑳']];
const SPACES = [' ', ' ', ' ', '\t', '\n', '\r\n', '\r', '\v', '\f', '\u00a0', '\u3000', '\u2002', '\u2003',
  '\u2009', '\u200a', '\u2028', '\u2029', '\u0085', '\u1680', '\u180e', '\u202f', '\u205f', '\u200b',
  '\u200c', '\u200d', '\ufeff', '\u2060'];
const SYMBOLS = ('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~¡¢£¤¥¦§¨©ª«¬®¯°±´µ¶·¸º»¿×÷‐–—―‘’‚“”„†‡•…‰′″‹›' +
  '€₹₽₿™←↑→↓↔⇒∀∂∃∅∇∈∑−√∞∧∨∩∪∫≈≠≤≥⊂⊃⌘⌚■□▲△●○★☆♠♣♥♦♪♫✓✔✗✘❤➜⟨⟩、。〈〉【】〜').split('');
const EMOJI_BASE = range(0x1f600, 0x1f64f).concat(range(0x1f300, 0x1f3fa), range(0x1f680, 0x1f6c5),
  range(0x1f90c, 0x1f9ff), range(0x2600, 0x26ff).filter((_, i) => i % 3 === 0));
const PEOPLE = ['👨', '👩', '🧑', '👧', '👦', '👶', '👴', '👵', '🧔', '👱'];
const SKIN = range(0x1f3fb, 0x1f3ff);
const ZWJ = '\u200d', VS16 = '\ufe0f';
const ZWJ_SEQS = ['👨‍👩‍👧‍👦', '👩‍❤️‍💋‍👨', '🧑‍💻', '👩🏽‍🚀', '🏳️‍🌈', '🏴‍☠️', '👁️‍🗨️', '🧑🏿‍🤝‍🧑🏻',
  '❤️‍🔥', '🐻‍❄️', '👨‍👨‍👧', '🧜‍♀️', '🤷🏼‍♂️', '🙋🏾‍♀️', '👷‍♀️'];
const FLAGS = () => { const r = range(0x1f1e6, 0x1f1ff); return r; };
const KEYCAPS = '0123456789#*'.split('').map((c) => c + VS16 + '\u20e3');

// ------------------------------------------------------------------------------------
// Generators: each returns one string; r is the PRNG

function english(r) {
  let s = '';
  const n = r.int(1, 40);
  for (let i = 0; i < n; i++) {
    let w = r.pick(EN_WORDS);
    if (i === 0 || r.chance(0.08)) w = w[0].toUpperCase() + w.slice(1);
    if (r.chance(0.03)) w = w.toUpperCase();
    s += (i ? (r.chance(0.03) ? '  ' : ' ') : '') + w;
    if (r.chance(0.12)) s += r.pick(EN_PUNCT);
  }
  return s + (r.chance(0.7) ? r.pick(['.', '!', '?', '', '\n', '.\n\n']) : '');
}

function chinese(r) {
  let s = '';
  const n = r.int(1, 80);
  for (let i = 0; i < n; i++) {
    if (r.chance(0.1)) s += r.pick(ZH_PUNCT);
    else if (r.chance(0.05)) s += r.pick([' ', 'AI', 'GPU ', '2025年', '3.14', 'DeepSeek-V3', '\n']);
    else s += r.pick(ZH);
  }
  return s;
}

function japanese(r) {
  let s = '';
  const n = r.int(1, 60);
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.35) s += r.pick(HIRA);
    else if (k < 0.6) s += r.pick(KATA) + (r.chance(0.2) ? 'ー' : '');
    else if (k < 0.8) s += r.pick(KANJI);
    else if (k < 0.85) s += r.pick(HALF_KATA);
    else if (k < 0.93) s += r.pick(['、', '。', '「', '」', '！', '？', '・', '〜']);
    else s += r.pick([' ', 'Tokyo', '１２３', '123', 'ｶﾀｶﾅ', '\n']);
  }
  return s;
}

function korean(r) {
  let s = '';
  const n = r.int(1, 50);
  for (let i = 0; i < n; i++) {
    if (r.chance(0.2)) s += ' ';
    else if (r.chance(0.05)) s += r.pick(HANGUL_JAMO);
    else if (r.chance(0.04)) s += r.pick(['.', ',', '?', '!', '2024년', 'Seoul']);
    else s += cp(r.int(0xac00, 0xd7a3));
  }
  return s;
}

function arabic(r) {
  let s = '';
  const n = r.int(1, 60);
  for (let i = 0; i < n; i++) {
    if (r.chance(0.18)) s += ' ';
    else if (r.chance(0.05)) s += r.pick(['،', '؛', '؟', '.', '\u200f', '\u200e', 'ـ']);
    else if (r.chance(0.05)) s += repeat(r, r.int(1, 6), () => r.pick(r.chance(0.5) ? AR_DIGITS : FA_DIGITS));
    else s += r.pick(AR_LETTERS) + (r.chance(0.25) ? r.pick(AR_MARKS) : '');
  }
  return s;
}

const IDENTS = ['x', 'y', 'i', 'n', 'buf', 'len', 'count', 'self', 'ctx', 'tok_ids', 'HTTPServer',
  'parse_json', 'getValue', 'MAX_LEN', '_private', '__init__', 'fooBar2', 'π', 'données', '变量'];
function code(r) {
  const id = () => r.pick(IDENTS);
  const num = () => String(r.int(0, r.pick([9, 99, 65535, 2147483647])));
  const ind = () => r.pick(['', '    ', '\t', '        ', '\t\t', '  ']);
  const lines = [];
  const n = r.int(1, 12);
  const lang = r.int(0, 8);
  for (let i = 0; i < n; i++) {
    switch (lang) {
      case 0: lines.push(ind() + r.pick([`def ${id()}(${id()}, ${id()}=${num()}):`, `return ${id()} + ${num()}  # sum`,
        `for ${id()} in range(${num()}):`, `print(f"{${id()}:>8}")`, `if ${id()} != ${num()}: pass`,
        `class ${id()}(object):`, `"""Docstring with 'quotes'."""`, `${id()} = [${num()}, ${num()}]`])); break;
      case 1: lines.push(ind() + r.pick([`int ${id()}(const char *${id()}, size_t ${id()}) {`, `return -EINVAL;`,
        `for (int i = 0; i < ${num()}; i++) ${id()}[i] ^= 0x${r.int(0, 255).toString(16)};`, `}`,
        `#include <stdio.h>`, `/* comment */ ${id()}->${id()} = NULL;`, `printf("%d\\n", ${id()});`,
        `#define ${id().toUpperCase()} (${num()}u << 3)`])); break;
      case 2: lines.push(ind() + r.pick([`const ${id()} = async (${id()}) => { await ${id()}(); };`,
        `console.log(\`\${${id()}} items\`);`, `export default function ${id()}() {}`, `if (${id()} === null) return;`,
        `let re = /^[a-z]+\\d*$/gi;`, `${id()}?.${id()} ?? ${num()};`])); break;
      case 3: lines.push(ind() + r.pick([`fn ${id()}(&self, ${id()}: &str) -> Result<u32, Error> {`,
        `let mut ${id()}: Vec<u8> = Vec::with_capacity(${num()});`, `impl<'a> Iterator for Foo<'a> {`,
        `match ${id()} { Some(x) => x, None => return Ok(()) }`, `#[derive(Debug, Clone)]`])); break;
      case 4: lines.push(ind() + r.pick([`SELECT ${id()}, COUNT(*) FROM ${id()} WHERE ${id()} >= ${num()} GROUP BY 1;`,
        `INSERT INTO t VALUES ('${id()}', ${num()});`, `-- comment`])); break;
      case 5: lines.push(ind() + r.pick([`<div class="${id()}" id='${id()}'>${english(r)}</div>`, `<br/>`,
        `<a href="https://example.com/${id()}?q=${num()}&amp;x=1">link</a>`, `<!-- ${id()} -->`])); break;
      case 6: lines.push(r.pick([`$ ${id()} --flag=${num()} | grep -E '^[0-9]+' > /dev/null 2>&1`,
        `export PATH="$HOME/bin:$PATH"`, `for f in *.json; do jq . "$f"; done`, `echo "\${${id()}:-default}"`])); break;
      case 7: lines.push(ind() + r.pick([`{"${id()}": ${num()}, "list": [1, 2.5, -3e10, null, true]}`,
        `"key with spaces": "value\\twith\\u00e9scapes",`, `}`])); break;
      default: lines.push(ind() + r.pick([`func ${id()}(${id()} int) (string, error) {`, `${id()} := make(map[string]int)`,
        `if err != nil { return nil, err }`, `go func() { ch <- ${num()} }()`]));
    }
  }
  return lines.join(r.pick(['\n', '\n', '\r\n', '\n\n']));
}

function numbers(r) {
  const digits = (n, set) => repeat(r, n, () => r.pick(set));
  const ascii = DIGIT_SETS[0];
  const k = r.int(0, 9);
  const len = r.int(1, r.chance(0.1) ? 300 : 40);
  switch (k) {
    case 0: return digits(len, ascii);
    case 1: return digits(r.int(1, 20), ascii) + '.' + digits(r.int(1, 20), ascii);
    case 2: return '-' + digits(r.int(1, 12), ascii) + 'e' + r.pick(['-', '+', '']) + digits(r.int(1, 3), ascii);
    case 3: return digits(r.int(1, 3), ascii) + repeat(r, r.int(1, 6), () => r.pick([',', '.', ' ', '_', "'"]) + digits(3, ascii));
    case 4: return digits(len, r.pick(DIGIT_SETS));
    case 5: return repeat(r, r.int(1, 8), () => r.pick(['abc', 'x', 'v', 'ID', '版本', 'β', '']) + digits(r.int(1, 9), ascii));
    case 6: return `${digits(4, ascii)}-${digits(2, ascii)}-${digits(2, ascii)}T${digits(2, ascii)}:${digits(2, ascii)}:${digits(2, ascii)}Z`;
    case 7: return `+${digits(2, ascii)} (${digits(3, ascii)}) ${digits(3, ascii)}-${digits(4, ascii)}`;
    case 8: return repeat(r, r.int(1, 10), () => digits(r.int(1, 7), ascii) + r.pick([' ', '  ', '\n', '\t', '%', '$', '€', 'km', '']));
    default: return `0x${r.int(0, 0x7fffffff).toString(16)} 0b${r.int(0, 255).toString(2)} ${digits(len, ascii)}`;
  }
}

function emoji(r) {
  let s = '';
  const n = r.int(1, 20);
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.25) s += r.pick(EMOJI_BASE);
    else if (k < 0.4) s += r.pick(PEOPLE) + r.pick(SKIN);
    else if (k < 0.55) s += r.pick(ZWJ_SEQS);
    else if (k < 0.65) s += r.pick(PEOPLE) + (r.chance(0.5) ? r.pick(SKIN) : '') + ZWJ + r.pick(['💻', '🚀', '🎤', '🔬', '🍳', '⚕️']);
    else if (k < 0.75) s += r.pick(FLAGS()) + r.pick(FLAGS());
    else if (k < 0.8) s += r.pick(KEYCAPS);
    else if (k < 0.88) s += r.pick(['❤', '☺', '✌', '☝', '✍', '⭐']) + (r.chance(0.6) ? VS16 : '\ufe0e');
    else s += r.pick([' ', ' ', 'ok ', 'lol', '!', '\n', '好']);
  }
  return s;
}

function combining(r) {
  let s = '';
  const n = r.int(1, 30);
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.3) s += r.pick(LATIN_EXT.concat(range(0x61, 0x7a))) + repeat(r, r.int(1, r.chance(0.1) ? 12 : 3), () => r.pick(COMBINING));
    else if (k < 0.45) s += r.pick(DEVA) + (r.chance(0.6) ? r.pick(DEVA_SIGNS) : '');
    else if (k < 0.6) s += r.pick(THAI) + (r.chance(0.4) ? r.pick(THAI_MARKS) : '');
    else if (k < 0.72) s += r.pick(HEBREW) + (r.chance(0.5) ? r.pick(NIQQUD) : '');
    else if (k < 0.82) s += r.pick(CYRILLIC.concat(GREEK));
    else if (k < 0.88) s += r.pick(COMBINING); // a mark with no base
    else s += r.pick([' ', ' ', '\n', '-', '.']);
  }
  return s.normalize(r.pick(['NFC', 'NFD', 'NFKC', 'NFKD', 'NFC'])) + (r.chance(0.2) ? r.pick(COMBINING) : '');
}

function whitespace(r) {
  let s = '';
  const n = r.int(1, 25);
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.45) s += repeat(r, r.int(1, r.chance(0.1) ? 40 : 5), () => r.pick(SPACES));
    else if (k < 0.6) s += r.pick(['\r\n', '\n\r', '\r\r\n', '\n \n', ' \r\n ', '\t\n']);
    else if (k < 0.85) s += r.pick(EN_WORDS);
    else s += r.pick(['.', '!', '…', '中文', '123', '—', '"', '(x)']);
  }
  return s;
}

function punctuation(r) {
  let s = '';
  const n = r.int(1, 30);
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.4) s += repeat(r, r.int(1, 6), () => r.pick(SYMBOLS));
    else if (k < 0.7) s += r.pick(SYMBOLS) + r.pick(EN_WORDS);
    else if (k < 0.85) s += r.pick([' ', '\n', '\r\n', '  ']);
    else s += r.pick(['...', '---', '===', '!!!', '?!', '://', '&&', '||', '->', '=>', '::', "'s", "'ll", '.com', '.NET']);
  }
  return s;
}

let ADDED = [];
function special(r) {
  let s = '';
  const n = r.int(1, 10);
  for (let i = 0; i < n; i++) {
    const k = r();
    const t = r.pick(ADDED);
    if (k < 0.4) s += t;
    else if (k < 0.55) s += t.slice(0, r.int(1, t.length - 1)); // a proper prefix
    else if (k < 0.65) s += t.slice(r.int(1, t.length - 1)); // a proper suffix
    else if (k < 0.72) s += t.replace('｜', '|'); // an ASCII look-alike
    else if (k < 0.8) s += '<' + t + '>';
    else s += r.pick([' ', '\n', english(r), chinese(r), ' <', '｜', '▁', '<think>', '</think>', '<|EOT|>']);
  }
  return s;
}

function randomUnicode(r) {
  let s = '';
  const n = r.int(1, 40);
  for (let i = 0; i < n; i++) {
    let c;
    const k = r();
    if (k < 0.35) c = r.int(0, 0x7f);
    else if (k < 0.6) c = r.int(0x80, 0x7ff);
    else if (k < 0.85) c = r.int(0x800, 0xffff);
    else if (k < 0.95) c = r.int(0x10000, 0x3ffff);
    else c = r.int(0x40000, 0x10ffff);
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // lone surrogates cannot travel as UTF-8
    s += cp(c);
  }
  return s;
}

// Code points assigned in Unicode 15.0-16.0 (after PCRE2 10.42's tables): emoji, CJK
// extensions H and I, new scripts and letters. Hugging Face's regex engine knows them.
const RECENT = [[0x1fae8, 0x1fae9], [0x1fa77, 0x1fa7c], [0x1f6dc, 0x1f6dc], [0x1fa89, 0x1fa89],
  [0x1fa8f, 0x1fa8f], [0x1fabe, 0x1fabf], [0x1fac6, 0x1fac6], [0x1fadc, 0x1fadc], [0x1fadf, 0x1fadf],
  [0x31350, 0x313ff], [0x2ebf0, 0x2ec20], [0x11f00, 0x11f10], [0x11f50, 0x11f59], [0x1e4d0, 0x1e4f9],
  [0x16d40, 0x16d79], [0x1c89, 0x1c8a], [0x0897, 0x0897], [0x10d40, 0x10d65], [0x11bc0, 0x11be1],
  [0x1cc00, 0x1ccf9], [0x1e5d0, 0x1e5fa], [0x105c0, 0x105f3], [0x13460, 0x13470], [0x0cf3, 0x0cf3]];
function recentUnicode(r) {
  let s = '';
  const n = r.int(1, 12);
  for (let i = 0; i < n; i++) {
    const [lo, hi] = r.pick(RECENT);
    s += r.pick(['', '', ' ', 'a', '1', '.', '\n', '  ', '好']) + repeat(r, r.int(1, 3), () => cp(r.int(lo, hi)));
  }
  return s;
}

function long(r) {
  const k = r.int(0, 7);
  const n = r.int(1000, 8000);
  switch (k) {
    case 0: return repeat(r, n, () => r.pick(range(0x61, 0x7a)));       // a very long word
    case 1: return r.pick(['a', 'ab', 'the', '哈', 'ā', '😀']).repeat(Math.floor(n / 3));
    case 2: return repeat(r, n, () => r.pick(['0', '1', '7', '9']));      // a very long number
    case 3: return repeat(r, Math.floor(n / 8), () => english(r).slice(0, 60) + ' '); // a long line
    case 4: return repeat(r, n, () => r.pick([' ', ' ', ' ', '\t']));     // a long blank run
    case 5: return repeat(r, Math.floor(n / 2), () => r.pick(['\n', '\r\n', ' ']));
    case 6: return repeat(r, Math.floor(n / 4), () => r.pick(SYMBOLS));
    default: return repeat(r, Math.floor(n / 30), () => r.pick([chinese, japanese, code, emoji, arabic])(r));
  }
}

function mixed(r) {
  const gens = [english, chinese, japanese, korean, arabic, code, numbers, emoji, combining, whitespace,
    punctuation, special, randomUnicode, recentUnicode];
  return repeat(r, r.int(2, 6), () => r.pick(gens)(r).slice(0, 200) + r.pick(['', ' ', '\n', '']));
}

// ------------------------------------------------------------------------------------

function buildCorpus(addedContents) {
  ADDED = addedContents;
  const corpus = [];
  // Fixed edge cases first.
  corpus.push('', ' ', '  ', '\n', '\r\n', '\t', 'a', ' a', 'a ', '\u0000', 'a\u0000b', '\u00a0',
    '\u3000', '<', '<｜', '｜>', 'Hello, world!', '   multiple   spaces\n\n\nnewlines\r\n');
  for (let c = 0; c < 0x180; c++) corpus.push(cp(c), 'x' + cp(c) + 'y', ' ' + cp(c) + cp(c) + ' ');
  for (const t of addedContents) corpus.push(t, ' ' + t + ' ', t + t, 'a' + t + 'b');
  const plan = [[english, 2200], [chinese, 1500], [japanese, 1200], [korean, 900], [arabic, 900],
    [code, 2500], [numbers, 2000], [emoji, 1500], [combining, 1500], [whitespace, 1500],
    [punctuation, 1200], [special, 1500], [randomUnicode, 2000], [recentUnicode, 800], [long, 120],
    [mixed, 1500]];
  plan.forEach(([gen, count], gi) => {
    const r = rng(0x5eed0000 + gi);
    for (let i = 0; i < count; i++) corpus.push(gen(r));
  });
  return corpus;
}

function main() {
  const json = fs.readFileSync(tokPath, 'utf8');
  const spec = JSON.parse(json);
  const added = (spec.added_tokens || []).map((t) => t.content).filter((c) => c.length > 0);
  const corpus = buildCorpus(added);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'corpus.jsonl'), corpus.map((s) => JSON.stringify(s)).join('\n') + '\n');

  const hf = Tokenizer.fromFile(tokPath);
  const plainSpec = Object.assign({}, spec, { added_tokens: [] });
  const hfPlain = Tokenizer.fromString(JSON.stringify(plainSpec));
  return { corpus, hf, hfPlain };
}

async function encodeAll(tok, corpus) {
  const encs = await tok.encodeBatch(corpus, { addSpecialTokens: false });
  return encs.map((e) => e.getIds());
}

// ------------------------------------------------------------------------------------
// Synthetic tokenizers: what DeepSeek's file does not use, checked against HF all the same.
// A closed BPE made of the 256 byte tokens and the first merges of the real file (each
// merge's parts come from earlier merges), with other pre-tokenizers and added tokens.

const SYNTH_ADDED = [
  { content: '<|sw|>', single_word: true, lstrip: false, rstrip: false, normalized: false, special: true },
  { content: '[L]', single_word: false, lstrip: true, rstrip: false, normalized: true, special: false },
  { content: '[R]', single_word: false, lstrip: false, rstrip: true, normalized: false, special: true },
  { content: '[LR]', single_word: false, lstrip: true, rstrip: true, normalized: false, special: false },
  { content: 'hello', single_word: true, lstrip: false, rstrip: false, normalized: true, special: false },
  { content: '<a>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
  { content: '<a><b>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
  { content: 'ab', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
  { content: 'abc', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
  { content: ' sp', single_word: false, lstrip: false, rstrip: true, normalized: false, special: false },
  { content: '<｜User｜>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
];

function synthetic(spec) {
  const K = 4000;
  const merges = spec.model.merges.slice(0, K).map((m) => (Array.isArray(m) ? m : m.split(' ')));
  const alphabet = [];
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    alphabet.push(printable ? b : 0);
  }
  let next = 256;
  const chars = alphabet.map((c, b) => cp(c || (next++)));
  const vocab = {};
  let id = 0;
  for (const c of chars) vocab[c] = id++;
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = id++;
  // Ids as HF assigns them: a content already in the vocabulary keeps its id ("ab"), the
  // others count on from the vocabulary's end.
  const added = SYNTH_ADDED.map((t) => Object.assign({ id: t.content in vocab ? vocab[t.content] : id++ }, t));
  const model = (extra) => Object.assign({ type: 'BPE', dropout: null, unk_token: null,
    continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false,
    vocab, merges }, extra);
  const split = (pattern, behavior, invert = false) => ({ type: 'Split', pattern, behavior, invert });
  const bl = (use_regex) => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex });
  const seq = (...p) => ({ type: 'Sequence', pretokenizers: p });
  const configs = {
    // GPT-2 style: ByteLevel's own regex, ignore_merges, merges as "a b" strings.
    gpt2: { pre: bl(true), model: model({ ignore_merges: true, merges: merges.map((m) => m.join(' ')) }) },
    // Every split behavior, invert, a String pattern.
    behaviors: { pre: seq(split({ Regex: '\\s+' }, 'MergedWithNext'), split({ String: 'ab' }, 'MergedWithPrevious'),
      split({ Regex: '\\d' }, 'Contiguous'), split({ Regex: '[\\p{L}\\p{M}]+' }, 'Isolated', true),
      split({ Regex: '[.,;]' }, 'Removed'), bl(false)), model: model({}) },
    // Oniguruma escapes and anchors: \w \W \b \B \h \H \S in a class, ^ and $, '.', \u.
    escapes: { pre: seq(split({ Regex: '^\\s*\\w+|\\h+\\b|[^\\S\\n]+|\\W+$|\\B.|[\\w\\S]{1,4}|\\u00e9+' }, 'Isolated'),
      split({ Regex: '\\p{Lu}\\p{Ll}*|\\P{L}+' }, 'MergedWithPrevious'), bl(false)), model: model({}) },
    // Patterns that can match the empty string (the iterator's empty-match rule).
    empty: { pre: seq(split({ Regex: '\\b|x*' }, 'Isolated'), split({ Regex: 'a*?' }, 'MergedWithNext'), bl(false)),
      model: model({}) },
  };
  return Object.entries(configs).map(([name, c]) => [name, {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: c.pre, post_processor: null, decoder: { type: 'ByteLevel', add_prefix_space: true,
      trim_offsets: true, use_regex: true }, model: c.model }]);
}

function syntheticCorpus(corpus) {
  const r = rng(0x5717);
  const out = corpus.filter((s, i) => i % 5 === 0 && s.length < 1500);
  const words = ['', ' ', '  ', 'word', 'x', 'A', '_', '\t', '\n', 'é', '好', '1', '.', 'hello', 'ab', '<a>'];
  for (let i = 0; i < 2500; i++) {
    let s = '';
    const n = r.int(1, 8);
    for (let k = 0; k < n; k++) s += r.pick(words) + r.pick(SYNTH_ADDED).content + r.pick(words);
    out.push(s);
  }
  return out;
}

const T0 = Date.now(); const lap = (what) => { if (process.env.TOK_REF_TIMING) console.error(`${what}: ${((Date.now() - T0) / 1000).toFixed(1)} s`); };
async function run() {
  const { corpus, hf, hfPlain } = main();
  lap('corpus');
  // CPU time, not wall time: the build machine is shared, and with one worker thread the
  // process's CPU time is the encoder's (the C side measures its thread's CPU time too).
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
  let t = cpu();
  const special = await encodeAll(hf, corpus);
  let best = cpu() - t; // the reference run doubles as the first throughput sample
  const plain = await encodeAll(hfPlain, corpus);
  fs.writeFileSync(path.join(outDir, 'ref_special.txt'), special.map((ids) => ids.join(' ')).join('\n') + '\n');
  fs.writeFileSync(path.join(outDir, 'ref_plain.txt'), plain.map((ids) => ids.join(' ')).join('\n') + '\n');

  lap('encode');
  // Decode: every id alone, then random sequences (mixing pieces of characters, added
  // tokens and everything else), each with and without skipping special tokens.
  const nIds = hf.getVocabSize(true);
  const seqs = [];
  for (let id = 0; id < nIds; id++) seqs.push([id]);
  const r = rng(0xdec0de);
  for (let i = 0; i < 4000; i++) {
    const n = r.int(1, 24);
    const ids = [];
    for (let k = 0; k < n; k++) ids.push(r.chance(0.05) ? r.int(nIds - 820, nIds - 1) : r.chance(0.1) ? r.int(0, 300) : r.int(0, nIds - 1));
    seqs.push(ids);
  }
  for (const ids of special.slice(0, 3000)) seqs.push(ids);
  const texts = await hf.decodeBatch(seqs, false);
  const skips = await hf.decodeBatch(seqs, true);
  fs.writeFileSync(path.join(outDir, 'ref_decode.jsonl'),
    seqs.map((ids, i) => JSON.stringify({ ids, text: texts[i], skip: skips[i] })).join('\n') + '\n');

  lap('decode');
  // Throughput, one thread: the whole corpus through encodeBatch (no per-call N-API
  // overhead; TOKENIZERS_PARALLELISM=false keeps it on one core), best of several runs.
  const bytes = corpus.reduce((a, s) => a + Buffer.byteLength(s, 'utf8'), 0);
  for (let rep = 0; rep < 1; rep++) {
    t = cpu();
    await hf.encodeBatch(corpus, { addSpecialTokens: false });
    best = Math.min(best, cpu() - t);
  }
  lap('bench batch');
  // The per-string form a server would call, for reference (a quarter of the corpus).
  const quarter = corpus.filter((_, i) => i % 4 === 0);
  const qbytes = quarter.reduce((a, x) => a + Buffer.byteLength(x, 'utf8'), 0);
  const ts = cpu();
  for (const x of quarter) await hf.encode(x, null, { addSpecialTokens: false });
  const single = cpu() - ts;
  lap('bench single');
  // Synthetic tokenizers.
  const synth = syntheticCorpus(corpus);
  fs.writeFileSync(path.join(outDir, 'synth_corpus.jsonl'), synth.map((x) => JSON.stringify(x)).join('\n') + '\n');
  const names = [];
  for (const [name, json] of synthetic(JSON.parse(fs.readFileSync(tokPath, 'utf8')))) {
    const text = JSON.stringify(json);
    fs.writeFileSync(path.join(outDir, `synth_${name}.json`), text);
    const withAdded = await encodeAll(Tokenizer.fromString(text), synth);
    const without = await encodeAll(Tokenizer.fromString(JSON.stringify(Object.assign({}, json, { added_tokens: [] }))), synth);
    fs.writeFileSync(path.join(outDir, `synth_${name}_special.txt`), withAdded.map((ids) => ids.join(' ')).join('\n') + '\n');
    fs.writeFileSync(path.join(outDir, `synth_${name}_plain.txt`), without.map((ids) => ids.join(' ')).join('\n') + '\n');
    names.push(name);
  }
  lap('synthetic');
  fs.writeFileSync(path.join(outDir, 'synth_names.txt'), names.join('\n') + '\n');

  const bench = { bytes, strings: corpus.length, batch_s: best, batch_mbps: bytes / best / 1e6,
    single_s: single, single_mbps: qbytes / single / 1e6 };
  fs.writeFileSync(path.join(outDir, 'hf_bench.json'), JSON.stringify(bench) + '\n');
  console.log(`reference: ${corpus.length} strings, ${bytes} bytes; HF encodeBatch ${bench.batch_mbps.toFixed(2)} MB/s, ` +
    `HF encode per string ${bench.single_mbps.toFixed(2)} MB/s (one thread)`);
}

run().catch((e) => { console.error('tokenizer_reference.js: ' + (e && e.stack || e)); process.exit(1); });
